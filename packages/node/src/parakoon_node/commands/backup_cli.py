# spec: docs/spec/arakoon-client-protocol.md
"""``parakoon backup`` and ``parakoon restore``: a running node's store to one file, and back.

``backup --config FILE [--node NAME] OUT``
    Asks a node for GET_DB (the client protocol's §8.7 command): the node freezes its store at
    its applied slot (every applied slot is chosen, so this is a consistent state of the cluster)
    and streams a backup file (``parakoon_node.runtime.backup``). Without ``--node`` a follower
    is asked, so the master keeps serving; a master refuses GET_DB unless it is the only node.
    The file is checked (every checksum) before it is renamed to ``OUT``; exit 0, 1 on failure.
``restore --config FILE --node NAME [--new-cluster] BACKUP``
    Seeds the stopped node NAME, whose ``home_dir`` must be empty, from BACKUP (a backup file,
    or a node's head snapshot ``wal/head-<slot>.snap``, which only ``--new-cluster`` takes: it
    does not say which history it belongs to):

    * without ``--new-cluster``: the node rejoins the history the backup came from as a
      *rebuilding* node (it holds the backup's state but votes only once it has caught up with
      every other voter: a backup is an old state, and an old state must not vote as if it were
      current);
    * with ``--new-cluster``: the node becomes the seed of a new history; start it with the
      other nodes' ``home_dir`` empty and they copy its data before they vote (what
      ``force-new-cluster`` does for a surviving node). Nodes without the backup never form a
      cluster of their own: a new history forms only when every voter is up.

    A restore writes ``restore.incomplete`` first and removes it last; a node refuses to start
    while it is there, so an interrupted restore is never served.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

from parakoon_client import codec
from parakoon_kv import Store
from parakoon_node.commands.direct import DirectConnection
from parakoon_node.commands.tls_options import add_tls_options, load_client_config
from parakoon_node.runtime.backup import BackupError, BackupInfo, read_backup
from parakoon_node.runtime.config import RESTORE_MARKER, ClusterConfig, NodeConfig

__all__ = ["add_parser"]

EXIT_OK = 0
EXIT_FAILURE = 1
CHUNK = 1 << 20


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_FAILURE


def add_parser(commands: Any) -> None:
    """Add ``backup`` and ``restore`` to the ``parakoon`` parser's subparsers."""
    backup = commands.add_parser(
        "backup",
        help="copy a running node's store into one self-checking file",
        description=(
            "Take a consistent backup from a running node (a follower unless --node names one)"
            " over the client port (GET_DB) and write it, verified, to OUT."
        ),
    )
    backup.add_argument("--config", default="cluster.toml", metavar="FILE")
    add_tls_options(backup)
    backup.add_argument("--node", metavar="NAME", help="the node to copy (default: a follower)")
    backup.add_argument(
        "--timeout", type=float, default=30.0, metavar="SECS", help="per network step"
    )
    backup.add_argument("out", metavar="OUT", help="the backup file to write")
    backup.set_defaults(run=run_backup)

    restore = commands.add_parser(
        "restore",
        help="seed a stopped node (or a new cluster) from a backup file",
        description=(
            "Seed the stopped node NAME, whose home_dir must be empty, from BACKUP: it rejoins"
            " its cluster as a rebuilding node, or with --new-cluster it seeds a new cluster"
            " history (start the other nodes empty). See docs/operations.md."
        ),
    )
    restore.add_argument("--config", default="cluster.toml", metavar="FILE")
    add_tls_options(restore)
    restore.add_argument("--node", required=True, metavar="NAME", help="the node to seed")
    restore.add_argument(
        "--new-cluster",
        action="store_true",
        help="seed a new cluster history instead of rejoining the backup's",
    )
    restore.add_argument("backup", metavar="BACKUP", help="a file written by 'parakoon backup'")
    restore.set_defaults(run=run_restore)


# ---------------------------------------------------------------------------------------------
# backup


def _pick_node(cluster: ClusterConfig, timeout: float) -> NodeConfig:
    """The first node, in file order, that answers, is a member and is not the master (or the
    only one). A node removed at run time still answers, with the store it had when it left."""
    if len(cluster.nodes) == 1:
        return cluster.nodes[0]
    from parakoon_node.commands.member_cli import MemberError, member_list

    problems: list[str] = []
    for node in cluster.nodes:
        try:
            with DirectConnection(cluster, node, timeout=timeout) as conn:
                master = conn.call(codec.WhoMaster())
                listing = member_list(conn)
        except (OSError, MemberError) as exc:
            problems.append(f"{node.name}: {exc}")
            continue
        if node.name not in listing["voters"] + listing["learners"]:
            problems.append(f"{node.name}: not a member any more")
        elif master != node.name:
            return node
        else:
            problems.append(f"{node.name}: is the master")
    raise OSError("no follower answered (" + "; ".join(problems) + ")")


def run_backup(args: argparse.Namespace) -> int:
    cluster = load_client_config(args)
    out = Path(args.out)
    if out.is_dir():
        return _fail(f"{out} is a folder; give the backup file's name")
    try:
        node = cluster.node(args.node) if args.node else _pick_node(cluster, args.timeout)
    except OSError as exc:
        return _fail(f"cannot choose a node to back up: {exc}")
    tmp = out.with_name(out.name + ".part")
    started = time.monotonic()
    try:
        with DirectConnection(cluster, node, timeout=args.timeout) as conn:
            conn.send(codec.GetDb())
            rc = struct.unpack("<I", conn.recv_exact(4))[0]
            if rc != 0:
                (length,) = struct.unpack("<I", conn.recv_exact(4))
                message = conn.recv_exact(min(length, 4096)).decode(errors="replace")
                return _fail(f"{node.name} refused GET_DB (rc 0x{rc:02x}): {message}")
            (size,) = struct.unpack("<q", conn.recv_exact(8))
            with open(tmp, "wb") as f:
                left = size
                while left > 0:
                    chunk = conn.recv_some(min(left, CHUNK))
                    f.write(chunk)
                    left -= len(chunk)
                f.flush()
                os.fsync(f.fileno())
        info, _store = read_backup(tmp)
        os.replace(tmp, out)
    except BackupError as exc:
        tmp.unlink(missing_ok=True)
        return _fail(f"the backup received from {node.name} does not verify: {exc}")
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        where = f"{node.name} ({node.client_host}:{node.client_port})"
        return _fail(f"backup from {where} failed: {exc}")
    took = time.monotonic() - started
    print(
        f"{out}: backup of {info.describe()}; {size} bytes in {took:.2f} s (verified)",
        flush=True,
    )
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# restore


def run_restore(args: argparse.Namespace) -> int:
    cluster = load_client_config(args)
    node = cluster.node(args.node)
    from parakoon_node.runtime.identity import Identity, IdentityStore, Status, new_incarnation
    from parakoon_node.runtime.storage import snapshot_crc
    from parakoon_wal import WalError
    from parakoon_wal.log import Wal

    try:
        info, store = _read_any(Path(args.backup), cluster.cluster_id)
    except BackupError as exc:
        return _fail(str(exc))
    if info.cluster_id != cluster.cluster_id:
        return _fail(
            f"{args.backup} is a backup of cluster {info.cluster_id!r}, but {args.config} "
            f"configures the cluster {cluster.cluster_id!r}"
        )
    if info.slot < 0:
        return _fail(f"{args.backup} holds no chosen slot: there is nothing to restore")
    if not args.new_cluster and info.cluster_uuid is None:
        return _fail(
            f"{args.backup} belongs to no cluster history; only --new-cluster can restore it"
        )
    home = node.home_dir
    marker = home / RESTORE_MARKER
    if home.exists():
        left = sorted(p.name for p in home.iterdir() if p.name != RESTORE_MARKER)
        if left and not marker.exists():
            return _fail(
                f"{home} (home_dir of {node.name}) is not empty ({', '.join(left[:5])}): stop "
                "the node and move the folder aside first"
            )
    home.mkdir(parents=True, exist_ok=True)
    marker.write_bytes(b"")
    _fsync_dir(home)
    # A rerun after an interruption starts from an empty folder again.
    for leftover in home.iterdir():
        if leftover.name != RESTORE_MARKER:
            _remove(leftover)
    try:
        wal = Wal.open(home / "wal", fsync=True)
    except WalError as exc:
        return _fail(f"cannot create the log of {node.name}: {exc}")
    dropped = None
    if args.new_cluster and store.meta:
        # A new history's members are the nodes of the file it is started with: the backup's
        # replicated membership names the old cluster's nodes and addresses, which may be
        # gone (restoring onto new machines is what --new-cluster is for).
        from parakoon_node.runtime.storage import StorageError, decode_membership

        try:
            dropped = decode_membership(store.meta, args.backup)
        except StorageError as exc:
            return _fail(str(exc))
        store.meta = b""
    try:

        def write(f: BinaryIO) -> None:
            store.dump(f, crc=snapshot_crc)

        wal.install_snapshot(info.slot, write)
    finally:
        wal.close()
    identities = IdentityStore(home, cluster.cluster_id)
    if args.new_cluster:
        identities.force_new_cluster(has_state=True)
        what = (
            f"{node.name} is the seed of a new cluster history with the backup's data (slot "
            f"{info.slot}, {info.keys} keys). Empty the home_dir of every other node and start "
            "them all: the history forms once every voter is up, and the others copy the seed."
        )
        if dropped is not None:
            what += (
                f" The backup's replicated membership (voters {', '.join(dropped.voters)}) is"
                f" not carried over: the new history's members are the nodes of {args.config}."
            )
    else:
        assert info.cluster_uuid is not None
        identities.save(
            Identity(
                cluster_name=cluster.cluster_id,
                cluster_uuid=info.cluster_uuid,
                incarnation=new_incarnation(),
                status=Status.REBUILDING,
            )
        )
        what = (
            f"{node.name} holds the backup's state (slot {info.slot}, {info.keys} keys) in "
            f"history {info.cluster_uuid}. Start it: it catches up from its peers and votes "
            "again once it has heard from every other voter (rebuild.done in its log)."
        )
    marker.unlink()
    _fsync_dir(home)
    print(what, flush=True)
    return EXIT_OK


def _read_any(path: Path, cluster_id: str) -> tuple[BackupInfo, Store]:
    """A backup file, or a node's head snapshot (``head-<slot>.snap``: the store without the
    history it belongs to, so it can only seed a new cluster)."""
    from parakoon_kv import SnapshotError
    from parakoon_kv.snapshot import MAGIC as SNAPSHOT_MAGIC
    from parakoon_node.runtime.storage import snapshot_crc

    try:
        with open(path, "rb") as f:
            magic = f.read(len(SNAPSHOT_MAGIC))
            if magic != SNAPSHOT_MAGIC:
                return read_backup(path)
            f.seek(0)
            store = Store.load(f, crc=snapshot_crc)
            if f.read(1):
                raise BackupError(path, f.tell() - 1, "bytes after the snapshot's end block")
    except SnapshotError as exc:
        raise BackupError(path, exc.offset, str(exc)) from exc
    except OSError as exc:
        raise BackupError(path, 0, f"cannot read: {exc.strerror}") from exc
    applied = -1 if store.applied_i is None else store.applied_i
    info = BackupInfo(
        cluster_id=cluster_id,
        cluster_uuid=None,
        slot=applied,
        node="?",
        created="?",
        keys=store.key_count(),
    )
    return info, store


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        for child in path.iterdir():
            _remove(child)
        path.rmdir()
    else:
        path.unlink()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
