# spec: docs/spec/multipaxos-design-notes.md
# mypy: disable-error-code="unreachable,redundant-expr"
# (the tests assert on state that method calls change; mypy keeps the first narrowing)
"""One test per rule of multipaxos-design-notes.md, each citing the section it checks."""

from __future__ import annotations

from typing import Any

import pytest

from parakoon_paxos import (
    NOP,
    Accept,
    Accepted,
    Applied,
    Apply,
    Batch,
    Broadcast,
    Candidate,
    CatchingUp,
    ClientBatch,
    ClientRequest,
    Commit,
    ConfigError,
    DropMaster,
    Fail,
    FailCode,
    Follower,
    Leader,
    LogEntry,
    MasterMode,
    MasterSet,
    Nak,
    Persist,
    Persisted,
    PersistPromise,
    Prepare,
    PreVote,
    PreVoteOk,
    Promise,
    Receive,
    Recovered,
    RecoveryError,
    Reply,
    Role,
    RoleChanged,
    Send,
    StartCatchup,
    Tick,
    initial_state,
    lease_valid,
    master,
    next_ballot,
    next_deadline,
    owner,
    role,
    step,
)


def prevoted(n: Any) -> None:
    """The pre-vote a node just started succeeds: enough voters say yes, the real election runs."""
    pre = n.state
    assert isinstance(pre, Candidate) and pre.pre
    for peer in n.config.other_voters:
        n.on(Receive(src=peer, msg=PreVoteOk(n=pre.pre_n, i=pre.i)))
        if not n.state.pre:
            return


def reqs(*pairs: tuple[int, bytes]) -> ClientBatch:
    return ClientBatch(requests=tuple(ClientRequest(rid=r, payload=p) for r, p in pairs))


# --- §1 model -------------------------------------------------------------------------------


def test_ballots_are_owned_by_rank(config: Any) -> None:
    """§1: rank r uses only n with n mod N = r (rank 0 uses N, 2N, ...); next(n) is mine > n."""
    for me, rank in (("n0", 0), ("n1", 1), ("n2", 2)):
        c = config(me=me)
        seen = set()
        b = 0
        for _ in range(20):
            b = next_ballot(c, b)
            assert b > 0 and b % 3 == rank and owner(c, b) == me
            seen.add(b)
        assert len(seen) == 20
    assert next_ballot(config(me="n0"), 0) == 3
    assert next_ballot(config(me="n1"), 1) == 4
    assert next_ballot(config(me="n2"), -5) == 2


def test_config_rejects_an_unsafe_quorum_and_names_the_field(config: Any) -> None:
    with pytest.raises(ConfigError, match="quorum"):
        config(quorum=1)
    with pytest.raises(ConfigError, match="me"):
        config(me="zz")
    with pytest.raises(ConfigError, match="master"):
        config(master_mode=MasterMode.FORCED)
    assert config(voters=("a", "b", "c", "d", "e"), me="a").quorum_size == 3
    assert config(voters=("a", "b"), me="a").quorum_size == 2


# --- §5.1 starting an election ----------------------------------------------------------------


def test_cold_start_runs_for_election_on_first_due_tick(config: Any, node: Any) -> None:
    """§5.1: a node that starts without knowing a live lease becomes a candidate."""
    n = node(config())
    deadline = next_deadline(n.config, n.state)
    assert deadline is not None and deadline <= 0.1
    # Pre-vote first: ask whether the voters would promise ballot 3, raising nothing yet.
    effects = n.on(Tick(), 0.2)
    assert effects == [
        Broadcast(msg=PreVote(n=3, i=0)),
        RoleChanged(role=Role.CANDIDATE, n=0, master=None),
    ]
    assert isinstance(n.state, Candidate) and n.state.pre and n.state.n == 0
    # One yes plus our own is a quorum of three: now the real election.
    effects = n.on(Receive(src="n1", msg=PreVoteOk(n=3, i=0)), 0.21)
    assert effects == [
        Broadcast(msg=Prepare(n=3, i=0)),
        PersistPromise(n=3),
        RoleChanged(role=Role.CANDIDATE, n=3, master=None),
    ]
    assert isinstance(n.state, Candidate) and not n.state.pre


def test_restart_with_a_log_waits_one_lease_period(config: Any, node: Any) -> None:
    """R2: a remembered lease counts as starting now, so no election before L has passed."""
    last = LogEntry(i=4, n=3, value=NOP)
    n = node(config(me="n1"), Recovered(last=last, applied_i=3, promised_n=5), now=10.0)
    assert n.state.n == 5
    assert n.on(Tick(), 11.5) == []
    assert n.on(Receive(src="n2", msg=Prepare(n=8, i=4)), 11.6) == []  # guard: unknown holder
    effects = n.on(Tick(), 12.5)
    assert Broadcast(msg=PreVote(n=7, i=4)) in effects


def test_recovered_store_ahead_of_log_is_refused(config: Any) -> None:
    """R1: if the store is ahead of the log, stop (with a message saying so)."""
    with pytest.raises(RecoveryError, match="store"):
        initial_state(config(), Recovered(last=LogEntry(i=1, n=3, value=NOP), applied_i=5), 0, 1)
    with pytest.raises(RecoveryError, match="empty"):
        initial_state(config(), Recovered(last=None, applied_i=0), 0, 1)


# --- §5.2 handling Prepare ----------------------------------------------------------------------


def test_prepare_from_a_learner_is_refused(config: Any, node: Any) -> None:
    """§5.2 rule 1."""
    n = node(config(learners=("l0",)))
    assert n.on(Receive(src="l0", msg=Prepare(n=9, i=0))) == [
        Send(to="l0", msg=Nak(n=9, their_n=0, their_i=0))
    ]


def test_lease_guard_ignores_other_candidates_but_not_probes(
    config: Any, leader: Any, node: Any
) -> None:
    """§5.2 rule 2: while the lease view names someone else and is live, ignore n >= 0."""
    f = leader(config(me="n1"))  # n1 leads; make a follower n2 that applied n1's lease
    n = f.state.n
    follower = node(config(me="n2"))
    follower.on(Receive(src="n1", msg=Accept(n=n, i=0, value=MasterSet(node="n1"))), 1.0)
    follower.on(Receive(src="n1", msg=Accept(n=n, i=1, value=NOP)), 1.1)
    assert follower.state.lease_holder == "n1"
    assert master(follower.config, follower.state, 1.2) == "n1"
    assert follower.on(Receive(src="n0", msg=Prepare(n=30, i=1)), 1.2) == []
    probe = follower.on(Receive(src="n0", msg=Prepare(n=-1, i=0)), 1.2)
    assert probe == [Send(to="n0", msg=Nak(n=-1, their_n=n, their_i=1))]
    # The holder itself passes the guard.
    assert any(
        isinstance(e, Send) and isinstance(e.msg, Promise)
        for e in follower.on(Receive(src="n1", msg=Prepare(n=n + 3, i=1)), 1.3)
    )


def test_stale_ballot_or_lagging_candidate_gets_a_nak(config: Any, node: Any) -> None:
    """§5.2 rule 3: n' <= n, or i' < my_next, is answered with our ballot and next slot."""
    last = LogEntry(i=5, n=4, value=NOP)
    n = node(config(me="n1"), Recovered(last=last, applied_i=4, promised_n=4), now=10.0)
    later = 12.5  # past the remembered lease (R2)
    assert n.on(Receive(src="n0", msg=Prepare(n=3, i=5)), later) == [
        Send(to="n0", msg=Nak(n=3, their_n=4, their_i=5))
    ]
    assert n.on(Receive(src="n2", msg=Prepare(n=8, i=4)), later) == [
        Send(to="n2", msg=Nak(n=8, their_n=4, their_i=5))
    ]


def test_promise_persists_before_replying_and_reports_the_slot(config: Any, node: Any) -> None:
    """§5.2 rule 5 [stronger]: PersistPromise precedes the Promise, which carries (n, value)."""
    n = node(config(me="n1"))
    n.on(Receive(src="n0", msg=Accept(n=3, i=0, value=MasterSet(node="n0"))), 0.01)
    effects = n.on(Receive(src="n2", msg=Prepare(n=5, i=0)), 5.0)
    assert effects[:2] == [
        PersistPromise(n=5),
        Send(
            to="n2",
            msg=Promise(n=5, i=0, accepted=LogEntry(i=0, n=3, value=MasterSet(node="n0"))),
        ),
    ]
    assert isinstance(n.state, Follower) and n.state.n == 5


def test_respect_window_ignores_a_rival_candidate(config: Any, node: Any) -> None:
    """§5.2 rule 4: after promising X, ignore another candidate for L/4."""
    n = node(config(me="n0"))
    n.on(Receive(src="n1", msg=Prepare(n=1, i=0)), 0.01)
    assert n.on(Receive(src="n2", msg=Prepare(n=2, i=0)), 0.2) == []
    assert any(
        isinstance(e, Send) and isinstance(e.msg, Promise)
        for e in n.on(Receive(src="n2", msg=Prepare(n=2, i=0)), 0.6)
    )


def test_promise_to_a_candidate_ahead_starts_catchup(config: Any, node: Any) -> None:
    """§5.2 rule 5: if i' > my_next, I am behind: catch up from the sender."""
    n = node(config(me="n1"))
    effects = n.on(Receive(src="n2", msg=Prepare(n=2, i=7)), 0.01)
    assert StartCatchup(source="n2", from_i=0) in effects
    assert isinstance(n.state, CatchingUp)


# --- §5.3 candidate ---------------------------------------------------------------------------


def test_candidate_reproposes_the_highest_ballot_value(config: Any, node: Any) -> None:
    """§5.3 [stronger]: once Q promises are in, take the value with the highest accepted n."""
    c5 = config(voters=("n0", "n1", "n2", "n3", "n4"))
    n = node(c5)
    n.on(Tick(), 0.2)
    prevoted(n)
    b = n.state.n
    old = LogEntry(i=0, n=1, value=Batch(payloads=(b"old",)))
    new = LogEntry(i=0, n=2, value=Batch(payloads=(b"new",)))
    n.on(Receive(src="n1", msg=Promise(n=b, i=0, accepted=old)))
    assert isinstance(n.state, Candidate)
    effects = n.on(Receive(src="n2", msg=Promise(n=b, i=0, accepted=new)))
    assert Broadcast(msg=Accept(n=b, i=0, value=new.value)) in effects
    assert isinstance(n.state, Leader) and n.state.prop is not None
    assert n.state.prop.rids == ()  # nobody to reply to for an old batch


def test_candidate_with_no_value_takes_the_lease(config: Any, node: Any) -> None:
    n = node(config())
    n.on(Tick(), 0.2)
    n.on(Receive(src="n2", msg=PreVoteOk(n=3, i=0)))
    effects = n.on(Receive(src="n1", msg=Promise(n=3, i=0, accepted=None)))
    assert effects[1:] == [
        Broadcast(msg=Accept(n=3, i=0, value=MasterSet(node="n0"))),
        Persist(entry=LogEntry(i=0, n=3, value=MasterSet(node="n0"))),
    ]


def test_candidate_nak_from_a_node_ahead_catches_up(config: Any, node: Any) -> None:
    """§5.3 table: Nak(n, (n'', i'')) with i'' > i: catch up from it."""
    n = node(config())
    n.on(Tick(), 0.2)
    # Refused at the pre-vote already: the node ahead says so, and we catch up.
    effects = n.on(Receive(src="n2", msg=Nak(n=3, their_n=2, their_i=4)))
    assert StartCatchup(source="n2", from_i=0) in effects


def test_candidate_retries_above_the_highest_ballot_seen(config: Any, node: Any) -> None:
    """§5.3 table: a higher ballot in a Nak; the election timer retries with next(that)."""
    n = node(config())
    n.on(Tick(), 0.2)
    n.on(Receive(src="n1", msg=PreVoteOk(n=3, i=0)))
    n.on(Receive(src="n2", msg=Nak(n=3, their_n=11, their_i=0)))
    assert isinstance(n.state, Candidate)
    effects = n.on(Tick(), 0.2 + 1.2)
    # The retry asks again (pre-vote) above the highest ballot seen, then runs with it.
    assert Broadcast(msg=PreVote(n=12, i=0)) in effects
    effects = n.on(Receive(src="n1", msg=PreVoteOk(n=12, i=0)))
    assert Broadcast(msg=Prepare(n=12, i=0)) in effects


def test_candidate_outbid_by_a_voter_runs_again_instead_of_leading(config: Any, node: Any) -> None:
    """Two candidates at once: the rival (n1, ballot 4) refuses our Prepare(3) with its own
    higher promise before n2's Promise gives us a quorum. Leading with 3 would end at our first
    Accept to n1 (its Nak deposes us, failing the writes we hold then); we run above it at once.
    """
    n = node(config())
    n.on(Tick(), 0.2)
    n.on(Receive(src="n1", msg=PreVoteOk(n=3, i=0)))
    assert isinstance(n.state, Candidate) and n.state.n == 3
    n.on(Receive(src="n1", msg=Nak(n=3, their_n=4, their_i=0)))
    effects = n.on(Receive(src="n2", msg=Promise(n=3, i=0, accepted=None)))
    assert isinstance(n.state, Candidate) and n.state.n == 6, n.state
    assert Broadcast(msg=Prepare(n=6, i=0)) in effects
    assert not [e for e in effects if isinstance(e, Broadcast) and isinstance(e.msg, Accept)]
    # The next round, with the rival's promise among the answers, leads.
    n.on(Receive(src="n1", msg=Promise(n=6, i=0, accepted=None)))
    assert isinstance(n.state, Leader) and n.state.n == 6


def test_candidate_not_outbid_by_a_rebuilding_voter(config: Any, node: Any) -> None:
    """A refusal from a rebuilding voter (R9) does not count as outbidding us: its ballot is
    not one we run above (``max_seen`` ignores it too), so a new round would gain nothing."""
    n = node(config())
    n.on(Tick(), 0.2)
    n.on(Receive(src="n1", msg=PreVoteOk(n=3, i=0)))
    n.on(Receive(src="n1", msg=Nak(n=3, their_n=9, their_i=0, rebuilding=True)))
    n.on(Receive(src="n2", msg=Promise(n=3, i=0, accepted=None)))
    assert isinstance(n.state, Leader) and n.state.n == 3


# --- §5.4 leader ------------------------------------------------------------------------------


def test_leader_counts_itself_only_after_persisted(config: Any, leader: Any) -> None:
    """§5.4 step 2, S2: Accept goes out before Persist; the leader's vote needs Persisted."""
    ld = leader(config())
    n = ld.state.n
    effects = ld.on(reqs((1, b"a")))
    assert effects == [
        Broadcast(msg=Accept(n=n, i=2, value=Batch(payloads=(b"a",)))),
        Persist(entry=LogEntry(i=2, n=n, value=Batch(payloads=(b"a",)))),
    ]
    assert ld.on(Receive(src="n1", msg=Accepted(n=n, i=2))) == []  # 1 of Q = 2
    effects = ld.on(Persisted(i=2, n=n))
    assert effects == [Apply(i=2, value=Batch(payloads=(b"a",)))]
    # S9: the client hears only after Applied; idle again, the leader tells the followers the
    # slot is chosen so that they apply it now.
    assert ld.on(Applied(i=2, results=("ok",))) == [
        Reply(rid=1, result="ok"),
        Broadcast(msg=Commit(n=n, i=2)),
    ]


def test_requests_arriving_in_flight_form_the_next_bounded_batch(config: Any, leader: Any) -> None:
    """§5.4 step 4 and batching: one slot in flight; waiting requests go in the next value."""
    ld = leader(config(max_batch_count=2, max_batch_bytes=5))
    n = ld.state.n
    ld.on(reqs((1, b"a")))
    assert ld.on(reqs((2, b"bb"), (3, b"cc"), (4, b"d"))) == []  # S5: waits
    ld.on(Persisted(i=2, n=n))
    ld.on(Receive(src="n1", msg=Accepted(n=n, i=2)))
    effects = ld.on(Applied(i=2, results=(None,)))
    assert effects[0] == Reply(rid=1, result=None)
    assert Broadcast(msg=Accept(n=n, i=3, value=Batch(payloads=(b"bb", b"cc")))) in effects
    ld.on(Persisted(i=3, n=n))
    ld.on(Receive(src="n2", msg=Accepted(n=n, i=3)))
    effects = ld.on(Applied(i=3, results=(1, 2)))
    assert effects[:2] == [Reply(rid=2, result=1), Reply(rid=3, result=2)]
    assert Broadcast(msg=Accept(n=n, i=4, value=Batch(payloads=(b"d",)))) in effects


def test_applied_must_carry_one_result_per_payload(config: Any, leader: Any) -> None:
    """Contract 3 is asserted, not padded: a short (or long) Applied is a driver bug."""
    ld = leader(config())
    n = ld.state.n
    ld.on(reqs((1, b"a"), (2, b"b")))
    ld.on(Persisted(i=2, n=n))
    ld.on(Receive(src="n1", msg=Accepted(n=n, i=2)))
    for results in [("only one",), ("a", "b", "c")]:
        with pytest.raises(AssertionError, match="results for"):
            step(ld.config, ld.state, Applied(i=2, results=results), ld.now)
    effects = ld.on(Applied(i=2, results=("ra", "rb")))
    assert effects[:2] == [Reply(rid=1, result="ra"), Reply(rid=2, result="rb")]


def test_queue_bound_answers_overloaded(config: Any, leader: Any) -> None:
    ld = leader(config(max_queued=2))
    ld.on(reqs((1, b"a")))  # in flight, not queued
    effects = ld.on(reqs((2, b"b"), (3, b"c"), (4, b"d")))
    assert effects == [Fail(rid=4, code=FailCode.OVERLOADED)]


def test_leader_resends_accept_to_silent_voters(config: Any, leader: Any) -> None:
    """§5.4 step 1: re-send every ~L/4 to voters that have not acknowledged."""
    ld = leader(config())
    n = ld.state.n
    ld.on(reqs((1, b"a")))
    ld.on(Receive(src="n1", msg=Accepted(n=n, i=2)))
    effects = ld.on(Tick(), ld.now + 0.6)
    assert effects == [Send(to="n2", msg=Accept(n=n, i=2, value=Batch(payloads=(b"a",))))]


def test_lease_renewal_every_half_period(config: Any, leader: Any) -> None:
    """§5.6: the leader renews with MasterSet(me) every L/2; its own view ends first."""
    ld = leader(config(), now=1.0)
    assert lease_valid(ld.config, ld.state, 1.5)
    effects = ld.on(Tick(), 2.05)
    assert Broadcast(msg=Accept(n=ld.state.n, i=2, value=MasterSet(node="n0"))) in effects
    # Without renewal being chosen, the lease ends at L * (1 - d) / (1 + d) after proposal.
    assert lease_valid(ld.config, ld.state, 1.0 + 1.80)
    assert not lease_valid(ld.config, ld.state, 1.0 + 1.82)


def test_non_leader_refuses_writes(config: Any, node: Any) -> None:
    n = node(config())
    assert n.on(reqs((1, b"a"))) == [Fail(rid=1, code=FailCode.NOT_MASTER)]
    assert n.on(DropMaster(rid=2)) == [Fail(rid=2, code=FailCode.NOT_MASTER)]


def test_read_only_mode_refuses_writes_on_the_leader(config: Any, leader: Any) -> None:
    ld = leader(config(master_mode=MasterMode.READONLY))
    assert ld.on(reqs((1, b"a"))) == [Fail(rid=1, code=FailCode.READ_ONLY)]


# --- §5.5 follower ------------------------------------------------------------------------------


def test_follower_acknowledges_only_after_persisted(config: Any, node: Any) -> None:
    """§5.5 row 1, S2: Persist, then Accepted once Persisted arrives."""
    f = node(config(me="n1"))
    effects = f.on(Receive(src="n0", msg=Accept(n=3, i=0, value=MasterSet(node="n0"))), 0.01)
    assert effects[0] == Persist(entry=LogEntry(i=0, n=3, value=MasterSet(node="n0")))
    assert not f.of(Send)
    assert f.on(Persisted(i=0, n=3)) == [Send(to="n0", msg=Accepted(n=3, i=0))]
    # The next slot proves slot 0 chosen: apply it first, then write the new one.
    effects = f.on(Receive(src="n0", msg=Accept(n=3, i=1, value=NOP)))
    assert effects[:2] == [
        Apply(i=0, value=MasterSet(node="n0")),
        Persist(entry=LogEntry(i=1, n=3, value=NOP)),
    ]
    assert f.state.lease_holder == "n0"


def test_follower_naks_an_older_ballot(config: Any, node: Any) -> None:
    """§5.5 / S6: never accept below the promised ballot (answered with a Nak here)."""
    f = node(config(me="n1"))
    f.on(Receive(src="n2", msg=Prepare(n=5, i=0)), 0.01)
    effects = f.on(Receive(src="n0", msg=Accept(n=3, i=0, value=NOP)))
    assert effects == [Send(to="n0", msg=Nak(n=3, their_n=5, their_i=0))]


def test_follower_far_behind_catches_up_then_rejoins(config: Any, node: Any) -> None:
    """§5.5 row 3, R4: a slot beyond expected means catch up; the Accept is handled after."""
    from parakoon_paxos import CatchupDone

    f = node(config(me="n1"))
    effects = f.on(Receive(src="n0", msg=Accept(n=3, i=5, value=NOP)), 0.01)
    assert StartCatchup(source="n0", from_i=0) in effects
    done = CatchupDone(applied_i=4, last=LogEntry(i=4, n=3, value=NOP), lease_holder="n0")
    effects = f.on(done)
    assert Persist(entry=LogEntry(i=5, n=3, value=NOP)) in effects
    assert isinstance(f.state, Follower) and f.state.applied_i == 4


def test_learner_follows_but_never_votes(config: Any, node: Any) -> None:
    c = config(me="l0", learners=("l0",))
    f = node(c)
    assert next_deadline(c, f.state) is None
    assert f.on(Tick(), 100.0) == []
    f.on(Receive(src="n0", msg=Accept(n=3, i=0, value=NOP)), 100.0)
    # It acknowledges (so that the leader knows when it may be promoted), and never promises.
    assert f.on(Persisted(i=0, n=3)) == [Send(to="n0", msg=Accepted(n=3, i=0))]
    assert f.on(Receive(src="n0", msg=Prepare(n=9, i=0))) == []


def test_leader_never_counts_a_learner(config: Any, leader: Any) -> None:
    ld = leader(config(learners=("l0",)), now=1.0)
    ld.on(reqs((1, b"a")))
    prop = ld.state.prop
    assert prop is not None and not prop.chosen
    ld.on(Receive(src="l0", msg=Accepted(n=ld.state.n, i=prop.i)))
    assert ld.state.prop is not None and not ld.state.prop.chosen
    assert dict(ld.state.learner_at) == {"l0": prop.i}


# --- §5.7 losing leadership -----------------------------------------------------------------


def test_leader_that_promises_fails_waiting_requests(config: Any, leader: Any) -> None:
    """§5.7: in-flight and queued requests get NO_LONGER_MASTER (outcome unknown)."""
    ld = leader(config(), now=1.0)
    ld.on(reqs((1, b"a")))
    ld.on(reqs((2, b"b")))
    effects = ld.on(Receive(src="n1", msg=Prepare(n=100, i=2)), 4.0)  # lease long over
    assert effects[:2] == [
        Fail(rid=1, code=FailCode.NO_LONGER_MASTER),
        Fail(rid=2, code=FailCode.NO_LONGER_MASTER),
    ]
    assert role(ld.state) is Role.FOLLOWER


def test_drop_master_stops_renewing_and_answers_on_step_down(config: Any, leader: Any) -> None:
    """§5.7 DropMaster; refused on a single node."""
    ld = leader(config(), now=1.0)
    assert ld.on(DropMaster(rid=9)) == []
    assert not any(isinstance(e, Broadcast) for e in ld.on(Tick(), 2.1))
    effects = ld.on(Receive(src="n1", msg=Prepare(n=100, i=2)), 3.5)
    assert Reply(rid=9, result=None) in effects
    solo = leader(config(voters=("n0",)))
    assert solo.on(DropMaster(rid=1)) == [Fail(rid=1, code=FailCode.NOT_SUPPORTED)]


# --- cluster sizes and modes ------------------------------------------------------------------


def test_single_voter_commits_on_its_own_persist(config: Any, leader: Any) -> None:
    ld = leader(config(voters=("n0",)))
    n = ld.state.n
    assert ld.on(reqs((1, b"a"))) == [
        Persist(entry=LogEntry(i=2, n=n, value=Batch(payloads=(b"a",))))
    ]
    assert ld.on(Persisted(i=2, n=n)) == [Apply(i=2, value=Batch(payloads=(b"a",)))]


def test_two_voters_need_both(config: Any, leader: Any) -> None:
    ld = leader(config(voters=("n0", "n1")))
    n = ld.state.n
    ld.on(reqs((1, b"a")))
    assert ld.on(Persisted(i=2, n=n)) == []
    assert ld.on(Receive(src="n1", msg=Accepted(n=n, i=2))) == [
        Apply(i=2, value=Batch(payloads=(b"a",)))
    ]


def test_forced_mode(config: Any, node: Any) -> None:
    """§4: one node is always candidate or leader; the others never start elections."""
    other = node(config(me="n1", master_mode=MasterMode.FORCED, master="n0"))
    assert other.on(Tick(), 50.0) == []
    forced = node(config(master_mode=MasterMode.FORCED, master="n0"))
    assert Broadcast(msg=Prepare(n=3, i=0)) in forced.on(Tick(), 0.0)
    # It refuses a rival and runs again above it.
    effects = forced.on(Receive(src="n1", msg=Prepare(n=10, i=0)))
    assert Send(to="n1", msg=Nak(n=10, their_n=3, their_i=0)) in effects
    assert Broadcast(msg=Prepare(n=12, i=0)) in effects


def test_preferred_master_delays_the_others(config: Any, node: Any) -> None:
    """§5.1: under a preferred master, the other nodes wait L/2 longer before running."""
    checks = {}
    for me in ("n0", "n1"):
        f = node(config(me=me, preferred=True, master="n0"))
        f.on(Receive(src="n2", msg=Accept(n=2, i=0, value=MasterSet(node="n2"))), 0.0)
        f.on(Receive(src="n2", msg=Accept(n=2, i=1, value=NOP)), 0.0)
        f.on(Tick(), 0.5)  # the first check re-arms past the live lease
        assert isinstance(f.state, Follower)
        checks[me] = f.state.check_at
    assert 2.0 * 1.1 <= checks["n0"] <= 2.0 * 1.2
    assert checks["n1"] >= 2.0 * 1.1 + 1.0


def test_next_deadline_names_the_next_useful_tick(config: Any, node: Any, leader: Any) -> None:
    """Timers are deadlines in the state (§8); next_deadline tells the driver when to tick."""
    ld = leader(config(), now=1.0)
    assert next_deadline(ld.config, ld.state) == pytest.approx(1.0 + 1.0)  # renewal at L/2
    ld.on(reqs((1, b"a")))
    resend = next_deadline(ld.config, ld.state)
    assert resend is not None and 1.5 <= resend <= 1.55  # re-send at L/4 x (1.0-1.1)
    assert ld.on(Tick(), resend - 0.01) == []  # nothing is due before it
    cand = node(config())
    cand.on(Tick(), 0.2)
    d = next_deadline(cand.config, cand.state)
    assert d is not None and 1.2 <= d <= 1.3  # election timeout L/2 x (1.0-1.1)
    catching = node(config(me="n1"))
    catching.on(Receive(src="n0", msg=Accept(n=3, i=9, value=NOP)), 0.1)
    assert next_deadline(catching.config, catching.state) is None


def test_master_query(config: Any, leader: Any, node: Any) -> None:
    """WHO_MASTER: the leader names itself only while lease_valid; others use their view."""
    ld = leader(config(), now=1.0)
    assert master(ld.config, ld.state, 1.5) == "n0"
    assert master(ld.config, ld.state, 1.0 + 1.9) is None  # its own view is never a licence
    f = node(config(me="n1"))
    assert master(f.config, f.state, 0.0) is None
    f.on(Receive(src="n0", msg=Accept(n=3, i=0, value=MasterSet(node="n0"))), 1.0)
    f.on(Receive(src="n0", msg=Accept(n=3, i=1, value=NOP)), 1.1)
    assert master(f.config, f.state, 1.2) == "n0"
    assert master(f.config, f.state, 1.1 + 2.0) is None


def test_new_leader_waits_out_a_reproposed_lease_with_heartbeat_nops(
    config: Any, node: Any
) -> None:
    """§5.6: a leader that re-proposed another node's lease takes its own only after that lease
    has run out by its clock, and sends a Nop every L/2 meanwhile so its followers keep hearing
    from it."""
    n = node(config())
    n.on(Tick(), 0.2)
    prevoted(n)
    b = n.state.n
    old = LogEntry(i=0, n=2, value=MasterSet(node="n2"))
    n.on(Receive(src="n1", msg=Promise(n=b, i=0, accepted=old)))
    n.on(Persisted(i=0, n=b))
    n.on(Receive(src="n1", msg=Accepted(n=b, i=0)), 0.3)
    effects = n.on(Applied(i=0, results=()), 0.3)
    assert Broadcast(msg=Accept(n=b, i=1, value=NOP)) in effects  # followers learn slot 0
    assert not lease_valid(n.config, n.state, 0.4)
    n.on(Persisted(i=1, n=b))
    n.on(Receive(src="n1", msg=Accepted(n=b, i=1)), 0.4)
    n.on(Applied(i=1, results=()), 0.4)
    assert n.on(Tick(), 0.5) == []
    heartbeat = n.on(Tick(), 1.45)  # L/2 after the last proposal, n2's lease (from 0.3) is live
    assert heartbeat[0] == Broadcast(msg=Accept(n=b, i=2, value=NOP))
    n.on(Persisted(i=2, n=b))
    n.on(Receive(src="n1", msg=Accepted(n=b, i=2)), 1.5)
    n.on(Applied(i=2, results=()), 1.5)
    own = n.on(Tick(), 2.31)  # n2's lease, counted from 0.3, is over: take ours
    assert own[0] == Broadcast(msg=Accept(n=b, i=3, value=MasterSet(node="n0")))
