# spec: docs/spec/arakoon-client-protocol.md
"""``parakoon member list|add|promote|remove --config FILE``: online membership change.

Every request goes over a node's client port as the ``parakoon.member`` user hook (protocol
§8.5: the hook's name carries a JSON request, the answer is rc 0 and a JSON text, or an error
with its message). ``list`` asks any node (the first of the file that answers) for the
membership in force; the changes go to the master, found with ``who_master`` and followed
when a node answers NOT_MASTER. One change at a time, one node per change (docs/operations.md,
"Membership changes"): add a node as a learner, start it, promote it once it has caught up;
remove any node, the master included.

Exit codes: 0 done; 1 the cluster refused the change (the message says why); 2 usage or
configuration; 5 no node (or no master) could be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from parakoon_client import codec
from parakoon_node.commands.direct import DirectConnection
from parakoon_node.commands.tls_options import add_tls_options, load_client_config
from parakoon_node.runtime.config import ClusterConfig, NodeConfig
from parakoon_node.runtime.members import decode_address, encode_address

__all__ = ["MemberError", "add_join_parser", "add_parser", "ask", "nodes_of"]

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 5
#: Refusals that go away by themselves: another change in flight, a learner still catching up.
_RETRY_MARKERS = ("another membership change is in flight", "has not caught up")


class MemberError(Exception):
    """A node answered with an error: ``code`` (protocol rc) and its message."""

    def __init__(self, node: str, code: int, message: str) -> None:
        super().__init__(f"{node}: {message} (rc 0x{code:02x})")
        self.node = node
        self.code = code
        self.message = message


def add_parser(commands: Any) -> None:
    member = commands.add_parser(
        "member",
        help="list, add, promote or remove cluster members online",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    sub = member.add_subparsers(dest="member_command", metavar="list|add|promote|remove")
    sub.required = True
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default="cluster.toml", metavar="FILE")
    add_tls_options(common)
    common.add_argument("--json", action="store_true", help="one JSON object on stdout")
    common.add_argument("--timeout", type=float, default=2.0, metavar="SECS", help="per node")
    lst = sub.add_parser("list", parents=[common], help="the membership in force")
    lst.add_argument("--node", metavar="NAME", help="ask this node (default: the first up)")
    add = sub.add_parser(
        "add", parents=[common], help="add a node as a learner; prints its cluster.toml lines"
    )
    add.add_argument("name")
    add.add_argument("--address", required=True, metavar="HOST:PORT", help="messaging address")
    add.add_argument("--client-port", required=True, type=int, metavar="PORT")
    add.add_argument("--home-dir", metavar="DIR", help="for the printed lines (default data/NAME)")
    for verb, what in (
        ("promote", "make a caught-up learner a voter"),
        ("remove", "remove a node"),
    ):
        p = sub.add_parser(verb, parents=[common], help=what)
        p.add_argument("name")
    for p in (add, *(sub.choices[v] for v in ("promote", "remove"))):
        p.add_argument(
            "--wait",
            type=float,
            default=30.0,
            metavar="SECS",
            help="retry while another change is in flight or the learner catches up (30)",
        )
    member.set_defaults(run=run)


def _node_config(
    cluster: ClusterConfig, name: str, host: str, mport: int, cport: int
) -> NodeConfig:
    for node in cluster.nodes:
        if node.name == name:
            return node
    return NodeConfig(name=name, addresses=((host, mport),), client_port=cport, home_dir=Path("."))


def _hook(conn: DirectConnection, request: dict[str, Any], *, consistent: bool) -> dict[str, Any]:
    consistency = codec.CONSISTENT if consistent else codec.NO_GUARANTEES
    answer = conn.call(codec.MemberHook(request=json.dumps(request), consistency=consistency))
    if isinstance(answer, codec.ErrorResponse):
        raise MemberError(conn.node.name, answer.code, answer.message.decode("utf-8", "replace"))
    result: dict[str, Any] = json.loads(answer)
    return result


def member_list(conn: DirectConnection) -> dict[str, Any]:
    """The membership as the node at the other end of ``conn`` knows it (``voters``,
    ``learners``, ``addresses``, ...); raises MemberError when it refuses."""
    return _hook(conn, {"op": "list"}, consistent=False)


def nodes_of(cluster: ClusterConfig, known: dict[str, Any] | None) -> list[NodeConfig]:
    """The file's nodes, then the members the cluster added that the file does not list."""
    out = list(cluster.nodes)
    if known:
        for name, text in known.get("addresses", {}).items():
            if all(n.name != name for n in out):
                try:
                    a = decode_address(name, text)
                except ValueError:
                    continue
                out.append(_node_config(cluster, name, a.host, a.messaging_port, a.client_port))
    return out


def ask(
    cluster: ClusterConfig, request: dict[str, Any], *, timeout: float, node: str | None = None
) -> dict[str, Any]:
    """Send one membership request: ``list`` to one node, a change to the master."""
    problems: list[str] = []
    listing: dict[str, Any] | None = None
    candidates = [cluster.node(node)] if node else list(cluster.nodes)
    for n in candidates:
        try:
            with DirectConnection(cluster, n, timeout=timeout) as conn:
                listing = _hook(conn, {"op": "list"}, consistent=False)
            break
        except OSError as exc:
            problems.append(f"{n.name}: {exc}")
        except MemberError as exc:
            if request["op"] == "list":
                raise
            problems.append(str(exc))
    if listing is None:
        raise ConnectionError("no node answered (" + "; ".join(problems) + ")")
    if request["op"] == "list":
        return listing
    nodes = {n.name: n for n in nodes_of(cluster, listing)}
    target = listing.get("master") or None
    if request["op"] == "remove" and target is not None and target == request.get("node"):
        # Removing the master: hand mastership over first (drop-master), then remove it as a
        # follower under its successor.
        target = _hand_over(cluster, nodes, target, timeout=timeout) or target
    tried: set[str] = set()
    order = ([target] if target in nodes else []) + [n for n in nodes if n != target]
    for name in order:
        if name in tried:
            continue
        tried.add(name)
        try:
            with DirectConnection(cluster, nodes[name], timeout=timeout) as conn:
                return _hook(conn, request, consistent=True)
        except OSError as exc:
            problems.append(f"{name}: {exc}")
        except MemberError as exc:
            if exc.code == codec.ErrorCode.NOT_MASTER:
                problems.append(f"{name}: not master")
                continue
            raise
    raise ConnectionError("no master answered (" + "; ".join(problems) + ")")


#: How long a hand-over may take, in lease periods (the old lease must run out first).
HAND_OVER_LEASES = 6.0


def _hand_over(
    cluster: ClusterConfig, nodes: dict[str, NodeConfig], master: str, *, timeout: float
) -> str | None:
    """Ask ``master`` to stop leading and wait until another node leads; its name, or None
    (a single voter, a forced master, or no successor in time: the removal goes on anyway)."""
    # The master answers once it has stepped down: after its lease ran out and a successor
    # took over (about one lease period).
    wait = max(timeout, 3.0 * cluster.lease_period_secs)
    try:
        with DirectConnection(cluster, nodes[master], timeout=wait) as conn:
            answer = conn.call(codec.DropMaster())
    except OSError:
        return None
    if isinstance(answer, codec.ErrorResponse):
        return None
    deadline = time.monotonic() + HAND_OVER_LEASES * cluster.lease_period_secs
    others = [n for n in nodes.values() if n.name != master]
    while time.monotonic() < deadline:
        for node in others:
            try:
                with DirectConnection(cluster, node, timeout=timeout) as conn:
                    named = conn.call(codec.WhoMaster())
            except OSError:
                continue
            if isinstance(named, str) and named != master and named in nodes:
                return named
        time.sleep(0.1)
    return None


def _toml_lines(args: argparse.Namespace, host: str, port: int) -> str:
    home = args.home_dir or f"data/{args.name}"
    return (
        "[[nodes]]\n"
        f'name = "{args.name}"\n'
        f'addresses = ["{host}:{port}"]\n'
        f"client_port = {args.client_port}\n"
        f'home_dir = "{home}"\n'
        "learner = true\n"
    )


def _print(args: argparse.Namespace, answer: dict[str, Any], extra: str = "") -> None:
    if args.json:
        print(json.dumps(answer, sort_keys=True))
        return
    print(f"voters:   {' '.join(answer['voters'])}")
    print(f"learners: {' '.join(answer['learners']) or '-'}")
    if answer.get("master"):
        print(f"master:   {answer['master']}")
    if extra:
        print(extra, end="")


def run(args: argparse.Namespace) -> int:
    cluster = load_client_config(args)
    verb = args.member_command
    request: dict[str, Any] = {"op": verb}
    extra = ""
    if verb == "add":
        host, sep, port_text = args.address.rpartition(":")
        if not sep or not port_text.isdigit():
            print(
                f"parakoon member add: --address {args.address!r}: expected HOST:PORT",
                file=sys.stderr,
            )
            return EXIT_USAGE
        request.update(
            node=args.name, address=encode_address(host, int(port_text), args.client_port)
        )
        extra = (
            "\nAdd these lines to cluster.toml (on every machine), start the node with\n"
            f"  parakoon node --config cluster.toml --node {args.name}\n"
            f"and once it has caught up: parakoon member promote {args.name}\n\n"
            + _toml_lines(args, host, int(port_text))
        )
    elif verb in ("promote", "remove"):
        request["node"] = args.name
    deadline = time.monotonic() + getattr(args, "wait", 0.0)
    while True:
        try:
            answer = ask(cluster, request, timeout=args.timeout, node=getattr(args, "node", None))
            break
        except MemberError as exc:
            if any(m in exc.message for m in _RETRY_MARKERS) and time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            print(f"parakoon member {verb}: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        except (OSError, KeyError, LookupError) as exc:
            if time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            print(f"parakoon member {verb}: {exc}", file=sys.stderr)
            return EXIT_UNAVAILABLE
    _print(args, answer, extra)
    return EXIT_OK


# join


def add_join_parser(commands: Any) -> None:
    join = commands.add_parser(
        "join",
        help="join a running cluster: one known member, this node's name and addresses",
        description=(
            "Ask a running member for the cluster's settings and membership, have the cluster "
            "add this node as a learner, write this node's cluster.toml, and run the node. "
            "Promote it afterwards with 'parakoon member promote NAME' once it has caught up."
        ),
    )
    join.add_argument("name", help="this node's name")
    join.add_argument("--member", required=True, metavar="HOST:PORT", help="a member's client port")
    join.add_argument("--cluster-id", required=True, metavar="ID")
    join.add_argument("--address", required=True, metavar="HOST:PORT", help="messaging address")
    join.add_argument("--client-port", required=True, type=int, metavar="PORT")
    join.add_argument("--home-dir", metavar="DIR", help="default data/NAME next to --config")
    join.add_argument(
        "--config",
        default="cluster.toml",
        metavar="FILE",
        help="the file to write (refused if it exists)",
    )
    join.add_argument("--no-start", action="store_true", help="write the file, do not run the node")
    join.add_argument("--timeout", type=float, default=2.0, metavar="SECS")
    # For a TLS cluster: the CA, and this node's certificate and key (written into the new
    # file as its tls_cert/tls_key, and presented to the member while joining).
    add_tls_options(join)
    join.set_defaults(run=run_join)


def _toml_value(value: object) -> str:
    # JSON's strings, numbers and true/false are TOML's too (the settings are scalars).
    return json.dumps(value)


def _join_tls(args: argparse.Namespace) -> dict[str, Any] | str:
    """The TLS fields of the configurations ``join`` builds ({} without TLS), or what is
    wrong with the options."""
    given = [args.tls_ca_cert, args.tls_cert, args.tls_key]
    if not any(given):
        return {}
    if not all(given):
        return "with TLS, give all of --tls-ca-cert, --tls-cert and --tls-key (this node's)"
    return {
        "tls_ca_cert": Path(args.tls_ca_cert).absolute(),
        "tls_service": True,
        "client_tls_cert": Path(args.tls_cert).absolute(),
        "client_tls_key": Path(args.tls_key).absolute(),
    }


def run_join(args: argparse.Namespace) -> int:
    out = Path(args.config)
    if out.exists():
        print(f"parakoon join: {out} exists; give another --config", file=sys.stderr)
        return EXIT_USAGE
    host, sep, port_text = args.member.rpartition(":")
    mhost, msep, mport_text = args.address.rpartition(":")
    if not (sep and port_text.isdigit() and msep and mport_text.isdigit()):
        print("parakoon join: --member and --address take HOST:PORT", file=sys.stderr)
        return EXIT_USAGE
    tls = _join_tls(args)
    if isinstance(tls, str):
        print(f"parakoon join: {tls}", file=sys.stderr)
        return EXIT_USAGE
    seed = NodeConfig(
        name="(member)", addresses=((host, 0),), client_port=int(port_text), home_dir=Path(".")
    )
    # With TLS options the member's client port is tried with TLS first, then plain: a cluster
    # may run TLS on its peer links only (tls_service = false), and the answer says which.
    tries = [True, False] if tls else [False]
    listing: dict[str, Any] | None = None
    problems: list[str] = []
    for service in tries:
        cluster = ClusterConfig(
            cluster_id=args.cluster_id, nodes=(seed,), **{**tls, "tls_service": service}
        ) if tls else ClusterConfig(cluster_id=args.cluster_id, nodes=(seed,))  # fmt: skip
        try:
            with DirectConnection(cluster, seed, timeout=args.timeout, check_name=False) as conn:
                listing = _hook(conn, {"op": "list"}, consistent=False)
            break
        except (OSError, MemberError) as exc:
            problems.append(f"{'TLS' if service else 'plain TCP'}: {exc}")
    if listing is None:
        print(f"parakoon join: {args.member}: {'; '.join(problems)}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    settings = dict(listing.get("cluster") or {})
    if "tls_ca_cert" in settings and not tls:
        print(
            "parakoon join: the cluster uses TLS (tls_ca_cert): give --tls-ca-cert, and this"
            " node's --tls-cert and --tls-key",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if tls:
        tls["tls_service"] = settings.get("tls_service") is True
    members = nodes_of(cluster, listing)
    known = ClusterConfig(cluster_id=args.cluster_id, nodes=tuple(members[1:]), **tls)
    if args.name not in listing["voters"] and args.name not in listing["learners"]:
        request = {
            "op": "add",
            "node": args.name,
            "address": encode_address(mhost, int(mport_text), args.client_port),
        }
        try:
            listing = ask(known, request, timeout=args.timeout)
        except MemberError as exc:
            print(f"parakoon join: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        except OSError as exc:
            print(f"parakoon join: {exc}", file=sys.stderr)
            return EXIT_UNAVAILABLE
    lines = ["[cluster]"]
    settings["id"] = args.cluster_id
    if tls:
        settings["tls_ca_cert"] = str(tls["tls_ca_cert"])
    lines += [f"{k} = {_toml_value(v)}" for k, v in settings.items()]
    addresses = listing["addresses"]
    for name in sorted(set(listing["voters"]) | set(listing["learners"])):
        if name == args.name or name not in addresses:
            continue
        a = decode_address(name, addresses[name])
        lines += [
            "",
            "[[nodes]]",
            f"name = {_toml_value(name)}",
            f'addresses = ["{a.host}:{a.messaging_port}"]',
            f"client_port = {a.client_port}",
            f'home_dir = "data/{name}"',
            f"learner = {_toml_value(name in listing['learners'])}",
        ]
    home = args.home_dir or f"data/{args.name}"
    lines += [
        "",
        "[[nodes]]",
        f"name = {_toml_value(args.name)}",
        f'addresses = ["{mhost}:{mport_text}"]',
        f"client_port = {args.client_port}",
        f"home_dir = {_toml_value(home)}",
        "learner = true",
    ]
    if tls:
        lines += [
            f"tls_cert = {_toml_value(str(tls['client_tls_cert']))}",
            f"tls_key = {_toml_value(str(tls['client_tls_key']))}",
        ]
    lines.append("")
    out.write_text("\n".join(lines))
    print(f"parakoon join: {args.name} is a learner of {args.cluster_id}; wrote {out}")
    if args.no_start:
        return EXIT_OK
    sys.stdout.flush()
    return os.execv(
        sys.executable,
        [sys.executable, "-m", "parakoon_node", "node", "--config", str(out), "--node", args.name],
    )
