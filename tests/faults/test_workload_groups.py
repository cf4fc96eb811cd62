"""The multi-key workload's atomicity check bites: a read that sees a group's members
disagree is counted as a partial sequence and makes the history non-linearizable."""

from __future__ import annotations

import threading

from parakoon_client import codec

from .lincheck import Operation, OpKind, Outcome, Verdict, check_history
from .workload import Client, WorkloadConfig


def group_client() -> Client:
    return Client(
        client_id=0,
        seed=1,
        ports={"node_0": 1},
        cluster_id="test",
        config=WorkloadConfig(group_size=3),
        read_target="master",
        t0=0.0,
        stop=threading.Event(),
        deadline=0.0,
    )


def test_whole_groups_read_as_their_value_and_partial_ones_are_caught() -> None:
    client = group_client()
    whole = [(b"g/0", b"v1"), (b"g/1", b"v1"), (b"g/2", b"v1")]
    assert client.group_value(b"g", whole, "node_0") == b"v1"
    missing = client.group_value(b"g", [], "node_0")
    assert isinstance(missing, codec.ErrorResponse)
    assert missing.code == codec.ErrorCode.NOT_FOUND
    assert client.stats.partial_reads == []

    # A sequence half applied: two members new, one old; or a member missing.
    torn = [(b"g/0", b"v2"), (b"g/1", b"v2"), (b"g/2", b"v1")]
    seen = client.group_value(b"g", torn, "node_0")
    short = client.group_value(b"g", whole[:2], "node_0")
    assert len(client.stats.partial_reads) == 2
    assert "g/2=v1" in client.stats.partial_reads[0]

    # The value a torn read returns was never written, so the checker rejects the history.
    ops = [
        Operation(op_id=1, client=0, kind=OpKind.SET, key=b"g", value=b"v1", t_call=0.0,
                  t_return=1.0, outcome=Outcome.OK),
        Operation(op_id=2, client=0, kind=OpKind.SET, key=b"g", value=b"v2", t_call=2.0,
                  t_return=3.0, outcome=Outcome.OK),
        Operation(op_id=3, client=1, kind=OpKind.GET, key=b"g", t_call=4.0, t_return=5.0,
                  outcome=Outcome.OK, result=seen),
    ]  # fmt: skip
    assert check_history(ops).verdict is Verdict.VIOLATION
    assert isinstance(short, bytes) and short.startswith(b"<partial")


def test_group_requests_write_every_member_in_one_sequence() -> None:
    client = group_client()
    put = client.as_group(OpKind.SET, b"g", codec.Set(key=b"g", value=b"v"))
    assert put == codec.Sequence(
        updates=tuple(codec.USet(key=b"g/%d" % m, value=b"v") for m in range(3))
    )
    cas = client.as_group(
        OpKind.CAS,
        b"g",
        codec.Sequence(updates=(codec.UAssert(key=b"g", expected=b"a"),
                                codec.USet(key=b"g", value=b"b"))),
    )  # fmt: skip
    assert cas.updates[0] == codec.UAssert(key=b"g/0", expected=b"a")
    assert len(cas.updates) == 4
    read = client.as_group(OpKind.GET, b"g", codec.Get(key=b"g"))
    assert isinstance(read, codec.RangeEntries)
    assert (read.first, read.last) == (b"g/", b"g/\xff")
