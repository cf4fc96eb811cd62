"""Wire helpers: round trips (hypothesis) and clear errors on malformed input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parakoon_paxos import (
    Accept,
    Accepted,
    Batch,
    LogEntry,
    MasterSet,
    Message,
    Nak,
    Prepare,
    Promise,
    WireError,
    message_from_wire,
    message_to_wire,
    value_from_wire,
    value_to_wire,
)

ints = st.integers(min_value=-(2**62), max_value=2**62)
values = st.one_of(
    st.builds(MasterSet, node=st.text(max_size=20)),
    st.builds(
        Batch, payloads=st.lists(st.binary(max_size=50), max_size=5).map(tuple), sync=st.booleans()
    ),
)
entries = st.builds(LogEntry, i=ints, n=ints, value=values)
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Prepare, n=ints, i=ints),
    st.builds(Promise, n=ints, i=ints, accepted=st.none() | entries),
    st.builds(Nak, n=ints, their_n=ints, their_i=ints),
    st.builds(Accept, n=ints, i=ints, value=values),
    st.builds(Accepted, n=ints, i=ints),
)


@given(messages)
def test_message_round_trip(msg: Message) -> None:
    wire = message_to_wire(msg)
    assert message_from_wire(wire) == msg
    # msgpack turns lists into tuples or lists; both must decode.
    assert message_from_wire(_tuples(wire)) == msg


def _tuples(obj: object) -> object:
    return tuple(_tuples(x) for x in obj) if isinstance(obj, list) else obj


@given(values)
def test_value_round_trip(value: MasterSet | Batch) -> None:
    assert value_from_wire(value_to_wire(value)) == value


@pytest.mark.parametrize(
    ("wire", "needle"),
    [
        ([], "empty"),
        ("x", "expected a list"),
        ([9, 1, 2], "unknown tag"),
        ([1, 1], "Prepare"),
        ([1, "1", 2], "Prepare.n"),
        ([1, True, 2], "Prepare.n"),
        ([2, 1, 2, [0, 1]], "LogEntry"),
        ([4, 1, 2, [1, ["s"], False]], r"Batch.payloads\[0\]"),
        ([4, 1, 2, [1, [], 1]], "Batch.sync"),
        ([4, 1, 2, [0, 5]], "MasterSet.node"),
        ([4, 1, 2, [7]], "value"),
    ],
)
def test_malformed_messages_raise_wire_error(wire: object, needle: str) -> None:
    with pytest.raises(WireError, match=needle):
        message_from_wire(wire)
