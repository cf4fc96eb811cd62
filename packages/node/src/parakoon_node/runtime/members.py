"""Run-time membership on the node's side: addresses of added members, and the merge with
``cluster.toml``.

The core's ``Membership`` value holds, for each member added at run time, an opaque address
string; the node writes it as JSON ``{"host": H, "messaging_port": P, "client_port": C}`` (the
client port on the same host, as in ``cluster.toml``). Members listed in ``cluster.toml`` keep
the addresses of the file. After bootstrap the replicated membership decides who the members
are; ``cluster.toml`` only gives the addresses it knows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from parakoon_client import member_address
from parakoon_paxos import Membership

from .config import ClusterConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberAddress:
    name: str
    host: str
    messaging_port: int
    client_port: int


# The client library writes the same strings (``AsyncClient.member_add``): one format, the
# client's, since the node depends on the client and not the other way round.
encode_address = member_address


def decode_address(name: str, text: str) -> MemberAddress:
    """Raises ValueError naming the member when ``text`` is not an address we wrote."""
    try:
        obj = json.loads(text)
        host, mport, cport = obj["host"], obj["messaging_port"], obj["client_port"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"member {name!r}: address {text!r} is not valid: {exc}") from None
    if not isinstance(host, str) or type(mport) is not int or type(cport) is not int:
        raise ValueError(f"member {name!r}: address {text!r} is not valid")
    return MemberAddress(name=name, host=host, messaging_port=mport, client_port=cport)


def addresses(cluster: ClusterConfig, members: Membership | None) -> dict[str, MemberAddress]:
    """Every node we may need to talk to: the file's nodes, then the added members' (an added
    member's replicated address wins over a stale line of the file)."""
    out = {
        n.name: MemberAddress(
            name=n.name,
            host=n.addresses[0][0],
            messaging_port=n.addresses[0][1],
            client_port=n.client_port,
        )
        for n in cluster.nodes
    }
    if members is not None:
        for name, text in members.addresses:
            try:
                out[name] = decode_address(name, text)
            except ValueError:
                continue  # not ours to dial; the member's own node knows where it is
    return out


def differs_from_file(cluster: ClusterConfig, members: Membership) -> bool:
    voters = {n.name for n in cluster.voters}
    learners = {n.name for n in cluster.learners}
    return voters != set(members.voters) or learners != set(members.learners)
