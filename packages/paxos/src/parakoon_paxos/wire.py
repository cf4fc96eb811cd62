"""Wire helpers: messages and values to and from plain primitives (stdlib only).

The node driver and the simulator serialize with msgpack; the core must not depend on it, so
these helpers map every message to a list of ints, strings, bytes, booleans, ``None`` and nested
lists, and back. The first element is a small integer tag. Decoding validates every field and
raises :class:`WireError` (a ``ValueError``) naming the message kind and the bad field, so a
driver can close the offending peer's connection with a useful log line.

Layouts (all lists)::

    value     MasterSet  [0, node]            Batch  [1, [payload, ...], sync]
              Membership [2, [voter, ...], [learner, ...], [[name, address], ...]]
    entry     [i, n, value]
    Prepare   [1, n, i]        Promise   [2, n, i, entry | None]
    Nak       [3, n, their_n, their_i, rebuilding]
    Accept    [4, n, i, value] Accepted  [5, n, i]
    Commit    [6, n, i]        PreVote   [7, n, i]       PreVoteOk [8, n, i]
"""

from __future__ import annotations

from .types import (
    Accept,
    Accepted,
    Batch,
    Commit,
    LogEntry,
    MasterSet,
    Membership,
    Message,
    Nak,
    Prepare,
    PreVote,
    PreVoteOk,
    Promise,
    Value,
)

Wire = list[object]

TAG_PREPARE = 1
TAG_PROMISE = 2
TAG_NAK = 3
TAG_ACCEPT = 4
TAG_ACCEPTED = 5
TAG_COMMIT = 6
TAG_PREVOTE = 7
TAG_PREVOTE_OK = 8


class WireError(ValueError):
    """A peer sent a malformed message (a remote error: close that connection, not the node)."""


def value_to_wire(value: Value) -> Wire:
    if isinstance(value, MasterSet):
        return [0, value.node]
    if isinstance(value, Membership):
        return [
            2,
            list(value.voters),
            list(value.learners),
            [[k, v] for k, v in value.addresses],
        ]
    return [1, list(value.payloads), value.sync]


def _names(obj: object, what: str) -> tuple[str, ...]:
    items = _list(obj, what)
    for k, x in enumerate(items):
        if not isinstance(x, str):
            raise WireError(f"{what}[{k}]: expected a str, got {type(x).__name__}")
    return tuple(items)  # type: ignore[arg-type]


def _int(obj: object, what: str) -> int:
    # bool is an int subclass; refuse it so that a confused encoder is caught.
    if type(obj) is not int:
        raise WireError(f"{what}: expected an int, got {type(obj).__name__}")
    return obj


def _list(obj: object, what: str, length: int | None = None) -> list[object] | tuple[object, ...]:
    if not isinstance(obj, (list, tuple)):
        raise WireError(f"{what}: expected a list, got {type(obj).__name__}")
    if length is not None and len(obj) != length:
        raise WireError(f"{what}: expected {length} fields, got {len(obj)}")
    return obj


def value_from_wire(obj: object) -> Value:
    fields = _list(obj, "value")
    if not fields:
        raise WireError("value: empty list")
    tag = _int(fields[0], "value tag")
    if tag == 0:
        _list(obj, "MasterSet", 2)
        node = fields[1]
        if not isinstance(node, str):
            raise WireError(f"MasterSet.node: expected a str, got {type(node).__name__}")
        return MasterSet(node=node)
    if tag == 1:
        _list(obj, "Batch", 3)
        payloads = _list(fields[1], "Batch.payloads")
        for k, p in enumerate(payloads):
            if not isinstance(p, bytes):
                raise WireError(f"Batch.payloads[{k}]: expected bytes, got {type(p).__name__}")
        sync = fields[2]
        if not isinstance(sync, bool):
            raise WireError(f"Batch.sync: expected a bool, got {type(sync).__name__}")
        return Batch(payloads=tuple(payloads), sync=sync)  # type: ignore[arg-type]
    if tag == 2:
        _list(obj, "Membership", 4)
        voters = _names(fields[1], "Membership.voters")
        learners = _names(fields[2], "Membership.learners")
        pairs = tuple(
            _names(p, f"Membership.addresses[{k}]")
            for k, p in enumerate(_list(fields[3], "Membership.addresses"))
        )
        if any(len(p) != 2 for p in pairs):
            raise WireError("Membership.addresses: expected [name, address] pairs")
        try:
            return Membership(
                voters=voters,
                learners=learners,
                addresses=tuple((p[0], p[1]) for p in pairs),
            )
        except ValueError as exc:
            raise WireError(str(exc)) from None
    raise WireError(f"value: unknown tag {tag}")


def entry_to_wire(entry: LogEntry) -> Wire:
    return [entry.i, entry.n, value_to_wire(entry.value)]


def entry_from_wire(obj: object) -> LogEntry:
    f = _list(obj, "LogEntry", 3)
    return LogEntry(
        i=_int(f[0], "LogEntry.i"), n=_int(f[1], "LogEntry.n"), value=value_from_wire(f[2])
    )


def message_to_wire(msg: Message) -> Wire:
    match msg:
        case Prepare(n=n, i=i):
            return [TAG_PREPARE, n, i]
        case Promise(n=n, i=i, accepted=acc):
            return [TAG_PROMISE, n, i, None if acc is None else entry_to_wire(acc)]
        case Nak(n=n, their_n=tn, their_i=ti, rebuilding=rb):
            return [TAG_NAK, n, tn, ti, rb]
        case Accept(n=n, i=i, value=v):
            return [TAG_ACCEPT, n, i, value_to_wire(v)]
        case Accepted(n=n, i=i):
            return [TAG_ACCEPTED, n, i]
        case Commit(n=n, i=i):
            return [TAG_COMMIT, n, i]
        case PreVote(n=n, i=i):
            return [TAG_PREVOTE, n, i]
        case PreVoteOk(n=n, i=i):
            return [TAG_PREVOTE_OK, n, i]
    raise TypeError(f"message_to_wire: not a message: {msg!r}")  # pragma: no cover


def message_from_wire(obj: object) -> Message:
    f = _list(obj, "message")
    if not f:
        raise WireError("message: empty list")
    tag = _int(f[0], "message tag")
    if tag == TAG_PREPARE:
        _list(obj, "Prepare", 3)
        return Prepare(n=_int(f[1], "Prepare.n"), i=_int(f[2], "Prepare.i"))
    if tag == TAG_PROMISE:
        _list(obj, "Promise", 4)
        acc = None if f[3] is None else entry_from_wire(f[3])
        return Promise(n=_int(f[1], "Promise.n"), i=_int(f[2], "Promise.i"), accepted=acc)
    if tag == TAG_NAK:
        _list(obj, "Nak", 5)
        rebuilding = f[4]
        if type(rebuilding) is not bool:
            raise WireError(f"Nak.rebuilding: expected a bool, got {type(rebuilding).__name__}")
        return Nak(
            n=_int(f[1], "Nak.n"),
            their_n=_int(f[2], "Nak.their_n"),
            their_i=_int(f[3], "Nak.i"),
            rebuilding=rebuilding,
        )
    if tag == TAG_ACCEPT:
        _list(obj, "Accept", 4)
        return Accept(
            n=_int(f[1], "Accept.n"), i=_int(f[2], "Accept.i"), value=value_from_wire(f[3])
        )
    if tag == TAG_ACCEPTED:
        _list(obj, "Accepted", 3)
        return Accepted(n=_int(f[1], "Accepted.n"), i=_int(f[2], "Accepted.i"))
    if tag == TAG_COMMIT:
        _list(obj, "Commit", 3)
        return Commit(n=_int(f[1], "Commit.n"), i=_int(f[2], "Commit.i"))
    if tag == TAG_PREVOTE:
        _list(obj, "PreVote", 3)
        return PreVote(n=_int(f[1], "PreVote.n"), i=_int(f[2], "PreVote.i"))
    if tag == TAG_PREVOTE_OK:
        _list(obj, "PreVoteOk", 3)
        return PreVoteOk(n=_int(f[1], "PreVoteOk.n"), i=_int(f[2], "PreVoteOk.i"))
    raise WireError(f"message: unknown tag {tag}")
