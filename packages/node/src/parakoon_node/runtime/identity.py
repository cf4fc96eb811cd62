"""Cluster identity, bootstrap and lost state (R9 of the consensus notes).

Why. A voter that lost its disk also lost the promises and accepts other nodes counted on; if it
voted as if it had always been empty, a stale peer and this node could choose a second value
for a slot that was already chosen. So every node keeps, in ``home_dir/identity.json``:

* ``cluster_uuid``: the identity of the *history* this node belongs to, made at bootstrap. The
  configured ``[cluster] id`` is only a name; two clusters of the same name (or one cluster and
  a copy restored elsewhere) have different uuids, and peers of different uuids refuse each
  other on both sides, so two histories never merge and no snapshot crosses between them.
* ``incarnation``: random, made whenever the node starts without this file. A node that lost
  its disk comes back with a new incarnation, which is how its peers (and the bootstrap rule)
  tell "lost state" from "never joined".
* ``status``: ``founding`` (no history yet: waiting to form a cluster), ``voter``, or
  ``rebuilding`` (joined a history it has no state for; the Paxos core keeps it a non-voter
  until the rebuild rule is met, then the node records ``voter``).
* ``founders``: for each founding voter, the incarnation it had when the history was made.

Bootstrap. A node without identity starts ``founding``. It forms a new history only when every
configured voter is reachable and founding too; the uuid is then a hash of the cluster name and
every founder's incarnation, so every founder computes the same one without another round. A
founding node that meets a peer already in a history joins it: as a voter if the peer's founders
list names this node with its current incarnation (it was a founder that had not finished), else
as ``rebuilding``. ``parakoon force-new-cluster`` makes one node the seed of a new history
(with or without data), for an operator recovering from more losses than the cluster tolerates.

Everything here except :class:`IdentityStore` is pure, so the decision table is tested alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

FILE_NAME = "identity.json"
FORMAT = 1


class Status(Enum):
    FOUNDING = "founding"
    VOTER = "voter"
    REBUILDING = "rebuilding"


class IdentityError(Exception):
    """``identity.json`` is unreadable or malformed; the message names the file."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """What one node knows of its place in a history (see the module docstring)."""

    cluster_name: str
    cluster_uuid: str | None
    incarnation: str
    status: Status
    founders: Mapping[str, str] = field(default_factory=dict)
    # A founding node that holds data (a seed made by force-new-cluster).
    seed: bool = False

    def to_wire(self, *, has_state: bool) -> dict[str, Any]:
        return {
            "uuid": self.cluster_uuid,
            "inc": self.incarnation,
            "status": self.status.value,
            "founders": dict(self.founders),
            "has_state": has_state,
        }

    def describe(self) -> str:
        uuid = self.cluster_uuid or "none yet"
        return f"history {uuid} (incarnation {self.incarnation[:8]}, {self.status.value})"


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerIdentity:
    """A peer's identity as its handshake reported it."""

    cluster_uuid: str | None
    incarnation: str
    status: Status
    founders: Mapping[str, str]
    has_state: bool

    @staticmethod
    def from_wire(obj: object) -> PeerIdentity:
        """Decode a handshake's identity field; ``ValueError`` names what is wrong."""
        if not isinstance(obj, dict):
            raise ValueError(f"identity: expected a map, got {type(obj).__name__}")
        uuid, inc, status = obj.get("uuid"), obj.get("inc"), obj.get("status")
        founders, has_state = obj.get("founders"), obj.get("has_state")
        if uuid is not None and not isinstance(uuid, str):
            raise ValueError("identity.uuid: expected a string or nil")
        if not isinstance(inc, str) or not inc:
            raise ValueError("identity.inc: expected a non-empty string")
        try:
            st = Status(status)
        except ValueError:
            raise ValueError(f"identity.status: unknown {status!r}") from None
        if not isinstance(founders, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in founders.items()
        ):
            raise ValueError("identity.founders: expected a map of strings")
        if not isinstance(has_state, bool):
            raise ValueError("identity.has_state: expected a bool")
        return PeerIdentity(
            cluster_uuid=uuid, incarnation=inc, status=st, founders=founders, has_state=has_state
        )

    def describe(self) -> str:
        uuid = self.cluster_uuid or "none yet"
        return f"history {uuid} (incarnation {self.incarnation[:8]}, {self.status.value})"


def new_incarnation() -> str:
    return secrets.token_hex(16)


def history_uuid(cluster_name: str, founders: Mapping[str, str]) -> str:
    """The uuid every founder computes alike from the founders' incarnations."""
    h = hashlib.sha256(cluster_name.encode())
    for name in sorted(founders):
        h.update(f"\0{name}={founders[name]}".encode())
    return h.hexdigest()[:32]


def legacy_uuid(cluster_name: str) -> str:
    """The uuid given to a node whose data predates identity files (an upgrade)."""
    return "legacy-" + hashlib.sha256(cluster_name.encode()).hexdigest()[:25]


def mismatch(mine: Identity, peer: PeerIdentity) -> str | None:
    """Why a peer from another history must be refused, or ``None`` if it may talk to us."""
    if mine.cluster_uuid is None or peer.cluster_uuid is None:
        return None
    if mine.cluster_uuid == peer.cluster_uuid:
        return None
    return (
        f"different cluster history: this node is in {mine.describe()}, the peer is in "
        f"{peer.describe()}; histories never merge. If the peer should rejoin this cluster, "
        "stop it, empty its home_dir and start it again (it rebuilds from this cluster); "
        "see docs/operations.md"
    )


@dataclass(frozen=True, slots=True)
class Decision:
    """What a founding node does now: wait (``identity`` is ``None``) or become ``identity``."""

    identity: Identity | None
    reason: str
    joined: bool = False  # True: joined a history others had formed (it may have a master)
    # A new history formed from a seed that is not this node: copy the seed's data before the
    # core starts (the seed's applied slots are the history's chosen prefix).
    copy_from: str | None = None


def decide(
    mine: Identity,
    me: str,
    voters: Sequence[str],
    peers: Mapping[str, PeerIdentity],
    *,
    has_state: bool,
) -> Decision:
    """The bootstrap rule for a node whose identity is ``founding`` (pure).

    ``peers`` maps every peer currently connected (either direction) to its identity.
    """
    assert mine.status is Status.FOUNDING
    # 1. A peer already in a history: join it.
    histories = {p.cluster_uuid for p in peers.values() if p.cluster_uuid is not None}
    if len(histories) > 1:
        return Decision(None, f"peers are in different histories {sorted(histories)}; waiting")
    if histories:
        (uuid,) = histories
        founders: Mapping[str, str] = {}
        for p in peers.values():
            if p.cluster_uuid == uuid and p.founders:
                founders = p.founders
                break
        if founders.get(me) == mine.incarnation:
            status = Status.VOTER
            why = f"joined history {uuid} as a founder"
        else:
            # A learner too: the replicated membership may have made it a voter since its
            # cluster.toml was written (a promoted node whose disk was replaced), so it must
            # not acknowledge anything before it has rebuilt (R9). A new learner rebuilds in
            # one probe round.
            status = Status.REBUILDING
            why = (
                f"history {uuid} exists and this node has no state in it: rebuilding "
                "before it votes or acknowledges"
            )
        joined = replace(mine, cluster_uuid=uuid, status=status, founders=founders, seed=False)
        return Decision(joined, why, joined=True)
    # 2. No history anywhere: form one when every voter is here, founding, and at most one of
    #    them holds data (a seed).
    if me not in voters:
        return Decision(None, "a learner waits for the voters to form the cluster")
    missing = [v for v in voters if v != me and v not in peers]
    if missing:
        return Decision(None, f"waiting for every voter to form a new cluster; missing {missing}")
    others = {v: peers[v] for v in voters if v != me}
    not_founding = [v for v, p in others.items() if p.status is not Status.FOUNDING]
    if not_founding:
        return Decision(None, f"voters {not_founding} are neither founding nor in a history")
    seeds = [v for v, p in others.items() if p.has_state] + ([me] if has_state else [])
    if len(seeds) > 1:
        return Decision(
            None,
            f"refusing to form a cluster: {sorted(seeds)} all hold data; run "
            "'parakoon force-new-cluster' on the one to keep and empty the others' home_dir",
        )
    founders = {v: p.incarnation for v, p in others.items()}
    founders[me] = mine.incarnation
    uuid = history_uuid(mine.cluster_name, founders)
    formed = replace(mine, cluster_uuid=uuid, status=Status.VOTER, founders=founders, seed=False)
    if seeds:
        why = f"every voter is here: formed history {uuid} from the data of seed {seeds[0]}"
        return Decision(formed, why, copy_from=None if seeds[0] == me else seeds[0])
    return Decision(formed, f"every voter is here and empty: formed history {uuid}")


# ---------------------------------------------------------------------------------------------
# The file.


class IdentityStore:
    """Reads and durably writes ``home_dir/identity.json`` (atomic replace, fsync)."""

    def __init__(self, home_dir: Path, cluster_name: str) -> None:
        self.path = home_dir / FILE_NAME
        self.home_dir = home_dir
        self.cluster_name = cluster_name

    def load(self) -> Identity | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise IdentityError(f"{self.path}: cannot read: {exc.strerror}") from exc
        try:
            obj = json.loads(text)
            if obj.get("format") != FORMAT:
                raise ValueError(f"unknown format {obj.get('format')!r}")
            identity = Identity(
                cluster_name=str(obj["cluster_name"]),
                cluster_uuid=obj["cluster_uuid"],
                incarnation=str(obj["incarnation"]),
                status=Status(obj["status"]),
                founders={str(k): str(v) for k, v in obj.get("founders", {}).items()},
                seed=bool(obj.get("seed", False)),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IdentityError(
                f"{self.path}: not a valid identity file ({exc}); it records which cluster "
                "history this node belongs to, see docs/operations.md before editing it"
            ) from exc
        if identity.cluster_name != self.cluster_name:
            raise IdentityError(
                f"{self.path}: this home_dir belongs to cluster {identity.cluster_name!r}, "
                f"but the configuration names the cluster {self.cluster_name!r}"
            )
        return identity

    def save(self, identity: Identity) -> None:
        obj = {
            "format": FORMAT,
            "cluster_name": identity.cluster_name,
            "cluster_uuid": identity.cluster_uuid,
            "incarnation": identity.incarnation,
            "status": identity.status.value,
            "founders": dict(identity.founders),
            "seed": identity.seed,
        }
        data = (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
        self.home_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.home_dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def open_at_start(self, *, wal_existed: bool, has_state: bool) -> tuple[Identity, str]:
        """The identity to start with, made or fixed up as needed, durable; and why."""
        current = self.load()
        if current is None:
            if has_state:
                # Data from before identity files existed: keep serving it as a voter of a
                # history named after the cluster (it cannot have been in any other).
                identity = Identity(
                    cluster_name=self.cluster_name,
                    cluster_uuid=legacy_uuid(self.cluster_name),
                    incarnation=new_incarnation(),
                    status=Status.VOTER,
                )
                why = "data without an identity file (older version): adopted as a voter"
            else:
                identity = Identity(
                    cluster_name=self.cluster_name,
                    cluster_uuid=None,
                    incarnation=new_incarnation(),
                    status=Status.FOUNDING,
                )
                why = "empty home_dir: founding (joins a history, or forms one with every voter)"
            self.save(identity)
            return identity, why
        if current.status is Status.VOTER and not wal_existed:
            # The log is gone but the identity survived: state was lost all the same.
            identity = replace(current, status=Status.REBUILDING, incarnation=new_incarnation())
            self.save(identity)
            return identity, "identity present but the WAL is gone: rebuilding before voting"
        return current, f"resuming {current.describe()}"

    def force_new_cluster(self, *, has_state: bool) -> Identity:
        """Make this node the seed of a brand-new history (an operator's explicit act)."""
        identity = Identity(
            cluster_name=self.cluster_name,
            cluster_uuid=None,
            incarnation=new_incarnation(),
            status=Status.FOUNDING,
            seed=has_state,
        )
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.save(identity)
        return identity


class PeerIdentities:
    """The identity gate of the peer handshake: ours to send, theirs to check and remember.

    Shared by every incoming and outgoing peer connection (and catch-up dials). ``admit``
    records a peer's identity and says why it must be refused, if it must.
    """

    def __init__(self, mine: Callable[[], Identity], *, has_state: Callable[[], bool]) -> None:
        self._mine = mine
        self._has_state = has_state
        self.peers: dict[str, PeerIdentity] = {}

    @property
    def mine(self) -> Identity:
        return self._mine()

    def local(self) -> dict[str, Any]:
        return self.mine.to_wire(has_state=self._has_state())

    def admit(self, peer: str, remote: object) -> str | None:
        try:
            theirs = PeerIdentity.from_wire(remote)
        except ValueError as exc:
            return f"malformed identity from {peer}: {exc}"
        why = mismatch(self.mine, theirs)
        if why is not None:
            return why
        self.peers[peer] = theirs
        return None
