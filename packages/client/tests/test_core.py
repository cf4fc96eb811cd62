"""The clients' shared routing and retry bookkeeping (``parakoon_client._core``), without I/O."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parakoon_client import errors
from parakoon_client._core import (
    AnswerReader,
    ClientCore,
    Op,
    Route,
    op_delete,
    op_for_request,
    op_get,
    op_set,
    op_test_and_set,
    op_who_master,
)
from parakoon_client.codec import (
    CONSISTENT,
    NEED_DATA,
    NO_GUARANTEES,
    AtLeast,
    Delete,
    DeletePrefix,
    Get,
    GetTxid,
    Sequence,
    Set,
    Statistics,
    TestAndSet,
    UDelete,
    USet,
    UTestAndSet,
    WhoMaster,
    encode_response,
)
from parakoon_client.errors import (
    ArakoonNotConnected,
    ArakoonProtocolError,
    ArakoonTimeout,
    NotMaster,
    OutcomeUnknown,
)
from parakoon_client.policy import Backoff, Retry

NODES = {"a": ("127.0.0.1", 1), "b": ("127.0.0.1", 2), "c": ("127.0.0.1", 3)}
SENT = ArakoonNotConnected("reset", node="a", request_sent=True)
NOT_SENT = ArakoonNotConnected("refused", node="a", request_sent=False)


def core(**kwargs: object) -> ClientCore:
    return ClientCore(
        "test",
        NODES,
        timeout_secs=1.0,
        retry_secs=10.0,
        backoff=Backoff(backoff_secs_min=0.1, backoff_secs_max=1.0, jitter=0.0),
        rng=random.Random(7),
        **kwargs,  # type: ignore[arg-type]
    )


def test_routes_follow_the_consistency() -> None:
    assert op_get(b"k", CONSISTENT).route is Route.MASTER
    assert op_get(b"k", NO_GUARANTEES).route is Route.ANY
    assert op_get(b"k", AtLeast(stamp=3)).route is Route.ANY
    assert op_set(b"k", b"v").route is Route.MASTER
    assert op_who_master().route is Route.ANY


def test_master_route_needs_discovery_until_a_master_is_accepted() -> None:
    c = core()
    assert c.target(Route.MASTER) is None
    c.accept_master("b")
    assert c.target(Route.MASTER) == "b"
    with pytest.raises(ValueError, match="unknown node 'z'"):
        c.accept_master("z")


def test_a_single_node_is_its_own_master() -> None:
    c = ClientCore("test", {"solo": ("127.0.0.1", 1)})
    assert c.target(Route.MASTER) == "solo"


def test_relaxed_reads_prefer_the_preferred_node_then_the_master() -> None:
    assert core(preferred_node="c").target(Route.ANY) == "c"
    c = core()
    c.accept_master("b")
    assert c.target(Route.ANY) == "b"
    assert core().target(Route.ANY) in NODES


def test_discovery_order_is_a_seeded_permutation() -> None:
    assert sorted(core().discovery_order()) == sorted(NODES)
    assert core().discovery_order() == core().discovery_order()


def test_not_master_with_a_name_is_followed_at_once_then_with_pauses() -> None:
    c = core()
    c.accept_master("a")
    call = c.start_call(op_set(b"k", b"v"), pinned=None, now=0.0)
    first = c.after_failure(call, "a", NotMaster("b"), now=0.0)
    assert (first.drop, first.error, first.delay_secs) == (True, None, 0.0)
    assert c.master == "b"
    second = c.after_failure(call, "b", NotMaster("a"), now=0.0)
    assert second.delay_secs == 0.0
    assert c.master == "a"
    # Two nodes pointing at each other: from the third redirect on, the back-off applies.
    third = c.after_failure(call, "a", NotMaster("b"), now=0.0)
    assert third.delay_secs == pytest.approx(0.1)
    fourth = c.after_failure(call, "b", NotMaster("a"), now=0.0)
    assert fourth.delay_secs == 0.0  # a pause resets the count


def test_not_master_without_a_name_forgets_the_master() -> None:
    c = core()
    c.accept_master("a")
    call = c.start_call(op_get(b"k", CONSISTENT), pinned=None, now=0.0)
    action = c.after_failure(call, "a", NotMaster("None"), now=0.0)
    assert action.error is None
    assert action.delay_secs == pytest.approx(0.1)
    assert c.master is None


def test_a_failed_master_is_forgotten_and_the_backoff_grows() -> None:
    c = core()
    c.accept_master("a")
    call = c.start_call(op_get(b"k", CONSISTENT), pinned=None, now=0.0)
    delays = []
    for _ in range(5):
        c.accept_master("a")
        action = c.after_failure(call, "a", NOT_SENT, now=0.0)
        assert action.drop
        assert c.master is None
        delays.append(action.delay_secs)
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0])


def test_a_failed_read_node_is_replaced_by_the_next_one() -> None:
    c = core(preferred_node="a")
    call = c.start_call(op_get(b"k", NO_GUARANTEES), pinned=None, now=0.0)
    assert c.target(Route.ANY) == "a"
    c.after_failure(call, "a", NOT_SENT, now=0.0)
    assert c.target(Route.ANY) == "b"
    c.after_failure(call, "b", NOT_SENT, now=0.0)
    assert c.target(Route.ANY) == "c"
    c.after_failure(call, "c", NOT_SENT, now=0.0)
    assert c.target(Route.ANY) == "a"
    # A failure of a node that is not the read node (the master, say) changes nothing here.
    c.after_failure(call, "b", NOT_SENT, now=0.0)
    assert c.target(Route.ANY) == "a"


def test_no_attempt_starts_after_the_retry_bound() -> None:
    c = core()
    call = c.start_call(op_get(b"k", CONSISTENT), pinned=None, now=100.0)
    assert call.attempt_budget_secs(100.0) == 1.0
    assert call.attempt_budget_secs(110.5) == pytest.approx(0.5)  # cut at retry + timeout
    late = c.after_failure(call, "a", NOT_SENT, now=109.95)
    assert late.error is NOT_SENT


def test_an_exchange_with_no_time_left_is_a_timeout_before_sending() -> None:
    call = core().start_call(op_get(b"k", CONSISTENT), pinned=None, now=100.0)
    assert call.require_budget_secs(110.5, "a") == pytest.approx(0.5)
    with pytest.raises(ArakoonTimeout, match="no time left to ask b after connecting") as info:
        call.require_budget_secs(111.0, "b", connected=True)
    assert info.value.node == "b"
    assert not info.value.request_sent


def test_giving_up_on_a_write_after_an_unknown_outcome_says_so() -> None:
    c = core()
    call = c.start_call(op_set(b"k", b"v"), pinned=None, now=0.0)
    assert c.after_failure(call, "a", SENT, now=0.0).error is None
    final = c.after_failure(call, "a", NOT_SENT, now=10.0)
    assert isinstance(final.error, OutcomeUnknown)
    assert final.error.cause is SENT


def test_reads_never_report_an_unknown_outcome() -> None:
    c = core()
    call = c.start_call(op_get(b"k", CONSISTENT), pinned=None, now=0.0)
    assert c.after_failure(call, "a", SENT, now=0.0).error is None
    assert c.after_failure(call, "a", NOT_SENT, now=10.0).error is NOT_SENT


def test_unsafe_write_is_outcome_unknown_at_once() -> None:
    c = core()
    call = c.start_call(op_test_and_set(b"k", None, b"v"), pinned=None, now=0.0)
    action = c.after_failure(call, "a", SENT, now=0.0)
    assert isinstance(action.error, OutcomeUnknown)
    assert action.error.cause is SENT
    assert action.drop


def test_delete_not_found_after_doubt_keeps_the_first_cause() -> None:
    c = core()
    call = c.start_call(op_delete(b"k"), pinned=None, now=0.0)
    c.after_failure(call, "a", SENT, now=0.0)
    action = c.after_failure(call, "a", errors.NotFound("k"), now=0.0)
    assert isinstance(action.error, OutcomeUnknown)
    assert action.error.cause is SENT
    assert not action.drop  # NotFound keeps the connection (protocol §4.2)


def test_pinned_calls_raise_not_master_and_keep_the_routing_state() -> None:
    c = core()
    c.accept_master("a")
    call = c.start_call(op_set(b"k", b"v"), pinned="b", now=0.0)
    action = c.after_failure(call, "b", NotMaster("a"), now=0.0)
    assert isinstance(action.error, NotMaster)
    retry = c.after_failure(call, "b", NOT_SENT, now=0.0)
    assert retry.error is None
    assert c.master == "a"
    with pytest.raises(ValueError, match="unknown node"):
        c.start_call(op_set(b"k", b"v"), pinned="zz", now=0.0)


def test_generic_requests_are_classified_like_the_methods() -> None:
    assert op_for_request(Get(key=b"k")).route is Route.MASTER
    assert op_for_request(Get(key=b"k", consistency=NO_GUARANTEES)).route is Route.ANY
    assert op_for_request(WhoMaster()).route is Route.ANY
    assert op_for_request(Statistics()).route is Route.MASTER
    assert op_for_request(GetTxid()).retry is Retry.ALWAYS
    assert op_for_request(Set(key=b"k", value=b"v")).retry is Retry.ALWAYS
    assert op_for_request(Set(key=b"k", value=b"v")).is_write
    assert op_for_request(Delete(key=b"k")).retry is Retry.IDEMPOTENT_EXCEPT_NOT_FOUND
    tas = TestAndSet(key=b"k", expected=None, wanted=b"v")
    assert op_for_request(tas).retry is Retry.UNTIL_SENT
    assert op_for_request(DeletePrefix(prefix=b"p")).retry is Retry.UNTIL_SENT
    safe = Sequence(updates=(USet(key=b"k", value=b"v"), UDelete(key=b"j")))
    assert op_for_request(safe).retry is Retry.IDEMPOTENT_EXCEPT_NOT_FOUND
    unsafe = Sequence(updates=(UTestAndSet(key=b"k", expected=None, wanted=None),))
    assert op_for_request(unsafe).retry is Retry.UNTIL_SENT
    assert op_for_request(unsafe).name == "sequence"


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"timeout_secs": 0.0}, "timeout_secs"),
        ({"timeout_secs": float("nan")}, "timeout_secs"),
        ({"retry_secs": -0.1}, "retry_secs"),
        ({"preferred_node": "x"}, "preferred_node"),
    ],
)
def test_settings_are_checked(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        ClientCore("test", NODES, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cluster_id"):
        ClientCore("", NODES)


# --- The retry loop as a whole, on a simulated clock. -------------------------------------------

FAILURES = [
    NOT_SENT,
    SENT,
    errors.ArakoonTimeout("slow", node="a", request_sent=True),
    NotMaster("b"),
    NotMaster("None"),
    errors.GoingDown("closing socket"),
    errors.NoLongerMaster("lost"),
    errors.InconsistentRead("store not fresh enough"),
    errors.NotFound("k"),
]


@given(
    outcomes=st.lists(st.sampled_from(range(len(FAILURES) + 1)), min_size=1, max_size=60),
    which=st.sampled_from(["get", "set", "delete", "test_and_set"]),
    retry_secs=st.floats(min_value=0.0, max_value=5.0),
)
def test_the_loop_keeps_its_promises(outcomes: list[int], which: str, retry_secs: float) -> None:
    """Drive after_failure like the clients do, each attempt taking a full timeout.

    Promises: the call ends within retry_secs + timeout_secs; an operation that is not safe to
    repeat is never sent again once it may have been executed; a write whose outcome may be
    unknown never ends in a plain error that hides it.
    """
    c = ClientCore(
        "test",
        NODES,
        timeout_secs=1.0,
        retry_secs=retry_secs,
        backoff=Backoff(backoff_secs_min=0.1, backoff_secs_max=1.0),
        rng=random.Random(0),
    )
    ops: dict[str, Op[Any]] = {
        "get": op_get(b"k", CONSISTENT),
        "set": op_set(b"k", b"v"),
        "delete": op_delete(b"k"),
        "test_and_set": op_test_and_set(b"k", None, b"v"),
    }
    op = ops[which]
    now = 0.0
    call = c.start_call(op, pinned=None, now=now)
    maybe_executed = 0
    for index in outcomes:
        now += min(call.timeout_secs, call.deadline - now)  # the attempt used its whole budget
        if index == len(FAILURES):
            break  # success
        error = FAILURES[index]
        if errors_executed(error):
            maybe_executed += 1
        action = c.after_failure(call, "a", error, now=now)
        if action.error is not None:
            if op.is_write and maybe_executed and not isinstance(error, errors.NotFound):
                assert isinstance(action.error, OutcomeUnknown) or not _is_transient(error)
            break
        assert 0 <= action.delay_secs <= 1.0
        now += action.delay_secs
        assert now <= call.retry_deadline
    assert now <= retry_secs + 1.0 + 1e-9
    if op.retry is Retry.UNTIL_SENT:
        assert maybe_executed <= 1


def errors_executed(error: errors.ArakoonError) -> bool:
    return isinstance(error, errors.NoLongerMaster) or (
        isinstance(error, ArakoonNotConnected) and error.request_sent
    )


def _is_transient(error: errors.ArakoonError) -> bool:
    return isinstance(
        error,
        ArakoonNotConnected | NotMaster | errors.GoingDown | errors.NoLongerMaster,
    )


def test_answer_reader_whole_split_and_trailing() -> None:
    request = Get(key=b"k")
    answer = encode_response(request, b"value")
    assert AnswerReader(request, "a at h:1", "a").feed(answer) == b"value"
    split = AnswerReader(request, "a at h:1", "a")
    assert split.feed(answer[:3]) is NEED_DATA
    assert split.feed(answer[3:]) == b"value"
    for chunks in ([answer + b"x"], [answer[:3], answer[3:] + b"xy"]):
        reader = AnswerReader(request, "a at h:1", "a")
        with pytest.raises(ArakoonProtocolError, match=r"sent [12] bytes after the end") as info:
            for chunk in chunks:
                reader.feed(chunk)
        assert info.value.node == "a"


def test_answer_reader_closed_error_hints_at_the_cluster_id_only_before_any_answer() -> None:
    request = Get(key=b"k")
    reader = AnswerReader(request, "a at h:1", "a")
    assert "cluster id" in str(reader.closed_error(fresh_connection=True))
    assert "cluster id" not in str(reader.closed_error(fresh_connection=False))
    reader.feed(encode_response(request, b"value")[:3])
    error = reader.closed_error(fresh_connection=True)
    assert "cluster id" not in str(error)
    assert error.request_sent and error.node == "a"
