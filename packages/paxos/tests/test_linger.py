"""Batch linger (docs/paxos.md, "Batch linger"): an idle leader holds a client batch back for
the clients it has just answered, up to ``Config.batch_linger`` and half the slot's time; it
never holds a lease, a no-op or a membership change, and 0 keeps the old behaviour."""

from __future__ import annotations

from typing import Any

import pytest

from parakoon_paxos import (
    Accept,
    Accepted,
    Applied,
    Batch,
    Broadcast,
    ChangeMembership,
    ClientBatch,
    ClientRequest,
    Commit,
    Config,
    ConfigError,
    DropMaster,
    MasterSet,
    MemberOp,
    Membership,
    Persisted,
    Receive,
    Reply,
    Tick,
    next_deadline,
)


def reqs(*rids: int) -> ClientBatch:
    return ClientBatch(requests=tuple(ClientRequest(rid=r, payload=b"%d" % r) for r in rids))


def proposed(effects: list[Any]) -> list[Any]:
    """The values of the Accepts the leader broadcast in ``effects``."""
    return [e.msg.value for e in effects if isinstance(e, Broadcast) and isinstance(e.msg, Accept)]


def choose(ld: Any, i: int, at: float, results: tuple[object, ...]) -> list[Any]:
    """Slot ``i`` becomes chosen and applied at ``at``; the effects of the Applied."""
    n = ld.state.n
    ld.on(Persisted(i=i, n=n), at)
    ld.on(Receive(src="n1", msg=Accepted(n=n, i=i)), at)
    effects: list[Any] = ld.on(Applied(i=i, results=results), at)
    return effects


def test_answered_clients_share_the_next_slot(config: Any, leader: Any) -> None:
    """Two requests answered while one waits: the waiting one is held until both are back."""
    ld = leader(config(batch_linger=0.005))
    ld.on(reqs(1, 2), 1.0)  # slot 2, proposed at 1.0
    ld.on(reqs(3), 1.001)  # queued behind it
    effects = choose(ld, 2, 1.004, (None, None))
    assert effects[:2] == [Reply(rid=1, result=None), Reply(rid=2, result=None)]
    assert proposed(effects) == []  # held: 3 expected, 1 queued
    assert not any(isinstance(e, Broadcast) and isinstance(e.msg, Commit) for e in effects)
    assert ld.state.expect == 3
    # At most half the slot's 4 ms, under the 5 ms setting: the linger ends at 1.006.
    assert next_deadline(ld.config, ld.state) == 1.006
    assert proposed(ld.on(reqs(4), 1.0045)) == []
    effects = ld.on(reqs(5), 1.005)
    assert proposed(effects) == [Batch(payloads=(b"3", b"4", b"5"))]
    assert ld.state.expect == 0


def test_the_linger_ends_at_its_deadline(config: Any, leader: Any) -> None:
    """Clients that do not come back cost one linger, no more: the Tick proposes the queue."""
    ld = leader(config(batch_linger=0.002))
    ld.on(reqs(1, 2, 3), 1.0)
    ld.on(reqs(4), 1.001)
    assert proposed(choose(ld, 2, 1.010, (None, None, None))) == []
    assert next_deadline(ld.config, ld.state) == 1.012
    assert proposed(ld.on(Tick(), 1.0119)) == []
    assert proposed(ld.on(Tick(), 1.012)) == [Batch(payloads=(b"4",))]


def test_nothing_queued_is_not_held(config: Any, leader: Any) -> None:
    """One client: its next request finds nothing queued and nobody else expected."""
    ld = leader(config(batch_linger=0.002))
    ld.on(reqs(1), 1.0)
    effects = choose(ld, 2, 1.001, (None,))
    # Idle with nothing queued: the followers hear that slot 2 is chosen at once.
    assert Broadcast(msg=Commit(n=ld.state.n, i=2)) in effects
    assert proposed(ld.on(reqs(2), 1.0012)) == [Batch(payloads=(b"2",))]


def test_no_linger_by_default(config: Any, leader: Any) -> None:
    """``batch_linger = 0`` (the core's default) proposes the queue as soon as a slot frees."""
    ld = leader(config())
    ld.on(reqs(1, 2), 1.0)
    ld.on(reqs(3), 1.001)
    assert proposed(choose(ld, 2, 1.004, (None, None))) == [Batch(payloads=(b"3",))]


def test_a_lease_renewal_is_never_held(config: Any, leader: Any) -> None:
    """The renewal branch comes before the linger: a MasterSet due while requests are held
    goes out at once, and the held requests follow when the linger ends."""
    ld = leader(config(batch_linger=0.005))
    renew_at = ld.state.renew_at
    ld.on(reqs(1, 2), renew_at - 0.02)
    ld.on(reqs(3), renew_at - 0.019)
    assert proposed(choose(ld, 2, renew_at - 0.001, (None, None))) == []
    linger_until = ld.state.linger_until
    assert linger_until == renew_at + 0.004  # still lingering when the renewal is due
    assert proposed(ld.on(Tick(), renew_at)) == [MasterSet(node="n0")]
    # The renewal is chosen; the held request follows at the end of the linger (not before:
    # its clients may still come back), and it is the next slot the followers need.
    assert proposed(choose(ld, 3, renew_at + 0.001, ())) == []
    assert proposed(ld.on(Tick(), linger_until)) == [Batch(payloads=(b"3",))]


def test_a_membership_change_is_never_held(config: Any, leader: Any) -> None:
    ld = leader(config(batch_linger=0.005, voters=("n0", "n1", "n2")))
    ld.on(reqs(1, 2), 1.0)
    ld.on(reqs(3), 1.001)
    assert proposed(choose(ld, 2, 1.004, (None, None))) == []
    effects = ld.on(ChangeMembership(rid=9, op=MemberOp.ADD, node="n3", address="a:1"), 1.0041)
    assert [type(v) for v in proposed(effects)] == [Membership]


def test_a_drop_master_sends_the_held_batch_at_once(config: Any, leader: Any) -> None:
    """A dropping leader never lingers: the batch held when DropMaster comes goes out with it."""
    ld = leader(config(batch_linger=0.005))
    ld.on(reqs(1, 2), 1.0)
    ld.on(reqs(3), 1.001)
    assert proposed(choose(ld, 2, 1.004, (None, None))) == []
    assert proposed(ld.on(DropMaster(rid=9), 1.0041)) == [Batch(payloads=(b"3",))]


def test_a_dropping_leader_does_not_linger(config: Any, leader: Any) -> None:
    """Requests queued before a DropMaster still go out while the lease lasts, at once."""
    ld = leader(config(batch_linger=0.005))
    ld.on(reqs(1, 2), 1.0)
    ld.on(reqs(3), 1.0003)  # queued behind slot 2
    ld.on(DropMaster(rid=9), 1.0005)
    effects = choose(ld, 2, 1.004, (None, None))
    assert proposed(effects) == [Batch(payloads=(b"3",))]


def test_expectations_are_capped_by_the_batch_bound(config: Any, leader: Any) -> None:
    """More clients than a slot can carry: the leader waits for a full slot, not for more."""
    ld = leader(config(batch_linger=0.005, max_batch_count=2))
    ld.on(reqs(1, 2), 1.0)
    ld.on(reqs(3), 1.001)
    assert proposed(choose(ld, 2, 1.004, (None, None))) == []
    assert ld.state.expect == 2
    assert proposed(ld.on(reqs(4), 1.0041)) == [Batch(payloads=(b"3", b"4"))]


def test_the_linger_is_bounded_by_the_lease(config: Any) -> None:
    """A held batch must never eat into the lease: the setting stays below L / 8."""
    with pytest.raises(ConfigError, match="batch_linger"):
        config(lease_period=2.0, batch_linger=0.25)
    assert isinstance(config(lease_period=2.0, batch_linger=0.249), Config)
