"""R9 (multipaxos-design-notes.md §7): a voter that lost its state votes only after rebuilding.

Each test drives one core by hand. The simulator (packages/sim) proves the rule over many seeds
with disk losses, and shows that a core which lets a wiped node vote at once forks.
"""

from __future__ import annotations

from typing import Any

from parakoon_paxos import (
    NOP,
    Accept,
    Accepted,
    Apply,
    Batch,
    Broadcast,
    Config,
    Effect,
    Follower,
    LogEntry,
    MasterMode,
    MasterSet,
    Nak,
    Persist,
    Persisted,
    PersistPromise,
    Prepare,
    Promise,
    Rebuilt,
    Receive,
    Recovered,
    Send,
    State,
    Tick,
    check_invariants,
    initial_state,
    rebuild_status,
    step,
)

L = 2.0


def config(me: str = "n0", voters: tuple[str, ...] = ("n0", "n1", "n2"), **kw: Any) -> Config:
    return Config(me=me, voters=voters, lease_period=L, **kw)


class Core:
    def __init__(self, cfg: Config, rec: Recovered, now: float = 0.0) -> None:
        self.config = cfg
        self.now = now
        self.state: State = initial_state(cfg, rec, now, seed=7)

    def on(self, event: Any, now: float | None = None) -> list[Effect]:
        if now is not None:
            self.now = now
        self.state, effects = step(self.config, self.state, event, self.now)
        check_invariants(self.config, self.state)
        return effects


def wiped(me: str = "n0", **kw: Any) -> Core:
    return Core(config(me=me, **kw), Recovered(rebuilding=True))


def probes(effects: list[Effect]) -> dict[str, Prepare]:
    return {e.to: e.msg for e in effects if isinstance(e, Send) and isinstance(e.msg, Prepare)}


def votes(effects: list[Effect]) -> list[Effect]:
    return [
        e
        for e in effects
        if isinstance(e, Send | Broadcast)
        and isinstance(e.msg, Promise | Accepted | Prepare)
        and not (isinstance(e.msg, Prepare) and e.msg.n < 0)
    ]


def test_a_rebuilding_node_gives_no_promise_and_says_why() -> None:
    core = wiped()
    out = core.on(Receive(src="n1", msg=Prepare(n=4, i=0)), now=0.1)
    assert out == [Send(to="n1", msg=Nak(n=4, their_n=0, their_i=0, rebuilding=True))]
    assert isinstance(core.state, Follower)


def test_a_rebuilding_node_never_runs_for_election() -> None:
    core = wiped()
    for k in range(1, 200):
        out = core.on(Tick(), now=k * 0.25)
        assert votes(out) == [], f"voted at t={core.now}: {out}"
    assert isinstance(core.state, Follower)


def test_a_rebuilding_node_learns_but_never_acknowledges() -> None:
    core = wiped()
    accept = Accept(n=4, i=0, value=MasterSet(node="n1"))
    out = core.on(Receive(src="n1", msg=accept), now=0.1)
    assert Persist(entry=LogEntry(i=0, n=4, value=accept.value), sync=False) in out
    out = core.on(Persisted(i=0, n=4))
    assert not any(isinstance(e, Send) for e in out), out
    # The next slot tells it slot 0 is chosen: it applies it, as a learner would.
    out = core.on(Receive(src="n1", msg=Accept(n=4, i=1, value=NOP)))
    assert Apply(i=0, value=MasterSet(node="n1")) in out
    assert not any(isinstance(e, Send) and isinstance(e.msg, Accepted) for e in out)


def test_probes_go_to_every_other_voter_with_a_fresh_ballot_until_all_answer() -> None:
    core = wiped()
    first = probes(core.on(Tick(), now=0.0))
    assert set(first) == {"n1", "n2"}
    probe_n = first["n1"].n
    assert probe_n < -2, "a fresh negative ballot, never the plain probes -1 and -2"
    # A stale answer (to some other probe) counts for nothing.
    core.on(Receive(src="n1", msg=Nak(n=-1, their_n=7, their_i=0)))
    rb = rebuild_status(core.state)
    assert rb is not None and rb.answers == ()
    core.on(Receive(src="n1", msg=Nak(n=probe_n, their_n=7, their_i=0)))
    # Only n2 is asked again, every L/2 or so.
    again = probes(core.on(Tick(), now=L * 0.6))
    assert set(again) == {"n2"}
    rb = rebuild_status(core.state)
    assert rb is not None and rb.target is None, "no target before every voter answered"


def test_the_target_and_floor_come_from_every_intact_voter() -> None:
    core = wiped(voters=("n0", "n1", "n2", "n3", "n4"))
    probe_n = probes(core.on(Tick(), now=0.0))["n1"].n
    # (An answer from a voter ahead also starts a catch-up; the answer counts all the same.)
    core.on(Receive(src="n1", msg=Nak(n=probe_n, their_n=16, their_i=40)))
    core.on(Receive(src="n2", msg=Nak(n=probe_n, their_n=21, their_i=38)))
    # n3 lost its state too: its ballot and slot witness nothing.
    core.on(Receive(src="n3", msg=Nak(n=probe_n, their_n=99, their_i=99, rebuilding=True)))
    rb = rebuild_status(core.state)
    assert rb is not None and rb.target is None, "n4 has not answered"
    core.on(Receive(src="n4", msg=Nak(n=probe_n, their_n=16, their_i=41)))
    rb = rebuild_status(core.state)
    assert rb is not None
    assert rb.target == 42, "highest next slot reported + 1"
    assert rb.floor == 21, "highest ballot of an intact voter"


def test_if_every_other_voter_lost_its_state_the_node_waits() -> None:
    core = wiped()
    probe_n = probes(core.on(Tick(), now=0.0))["n1"].n
    core.on(Receive(src="n1", msg=Nak(n=probe_n, their_n=3, their_i=0, rebuilding=True)))
    core.on(Receive(src="n2", msg=Nak(n=probe_n, their_n=3, their_i=0, rebuilding=True)))
    rb = rebuild_status(core.state)
    assert rb is not None and rb.target is None
    assert set(probes(core.on(Tick(), now=L))) == {"n1", "n2"}, "it keeps asking"


def _follow(core: Core, leader: str, n: int, slots: range) -> list[Effect]:
    """The leader proposes each slot; the node persists it. Returns the last step's effects."""
    out: list[Effect] = []
    for i in slots:
        out = core.on(Receive(src=leader, msg=Accept(n=n, i=i, value=Batch(payloads=(b"%d" % i,)))))
        if any(isinstance(e, Persist) for e in out):
            out += core.on(Persisted(i=i, n=n))
    return out


def test_it_votes_again_once_the_target_is_applied_and_adopts_the_floor() -> None:
    core = wiped()
    probe_n = probes(core.on(Tick(), now=0.0))["n1"].n
    core.on(Receive(src="n1", msg=Nak(n=probe_n, their_n=4, their_i=0)))
    core.on(Receive(src="n2", msg=Nak(n=probe_n, their_n=5, their_i=0)))
    rb = rebuild_status(core.state)
    assert rb is not None and (rb.target, rb.floor) == (1, 5)
    # Slots 0 and 1 arrive from the leader of ballot 7; slot 1 is applied when slot 2 arrives.
    out = _follow(core, "n1", 7, range(2))
    assert rebuild_status(core.state) is not None
    assert not any(isinstance(e, Send) and isinstance(e.msg, Accepted) for e in out)
    out = core.on(Receive(src="n1", msg=Accept(n=7, i=2, value=NOP)))
    assert Apply(i=1, value=Batch(payloads=(b"1",))) in out
    promise = out.index(PersistPromise(n=7))
    rebuilt = out.index(Rebuilt(applied_i=1, n=7))
    assert promise < rebuilt, "the ballot floor is durable first"
    assert rebuild_status(core.state) is None
    # From now on it is a voter: the slot in flight is acknowledged once durable.
    out = core.on(Persisted(i=2, n=7))
    assert Send(to="n1", msg=Accepted(n=7, i=2)) in out


def test_a_floor_above_the_leader_s_ballot_is_kept() -> None:
    core = wiped()
    probe_n = probes(core.on(Tick(), now=0.0))["n1"].n
    core.on(Receive(src="n1", msg=Nak(n=probe_n, their_n=4, their_i=0)))
    core.on(Receive(src="n2", msg=Nak(n=probe_n, their_n=11, their_i=0)))
    _follow(core, "n1", 4, range(3))
    assert rebuild_status(core.state) is None
    assert core.state.n == 11, "a forgotten promise up to ballot 11 may exist"
    out = core.on(Receive(src="n1", msg=Accept(n=4, i=3, value=NOP)))
    assert Send(to="n1", msg=Nak(n=4, their_n=11, their_i=2)) in out


def test_a_rebuilding_node_restarts_rebuilding_with_what_it_learnt() -> None:
    cfg = config()
    entry = LogEntry(i=5, n=4, value=NOP)
    core = Core(cfg, Recovered(last=entry, applied_i=4, promised_n=4, rebuilding=True))
    assert rebuild_status(core.state) is not None
    out = core.on(Receive(src="n1", msg=Prepare(n=7, i=5)))
    assert out == [Send(to="n1", msg=Nak(n=7, their_n=4, their_i=5, rebuilding=True))]


def test_a_learner_rebuilds_too_and_so_does_a_single_voter() -> None:
    # A learner that lost its state may be promoted later: until it has rebuilt it must not
    # acknowledge (the leader promotes only a learner that acknowledged its latest slot).
    learner = Core(
        Config(me="l0", voters=("n0", "n1", "n2"), learners=("l0",), lease_period=L),
        Recovered(rebuilding=True),
    )
    assert rebuild_status(learner.state) is not None
    # Nor is a node that lost its state ever alone: its file may list it as the only voter
    # from before the cluster grew, and running alone would choose values nobody else holds.
    alone = Core(config(voters=("n0",)), Recovered(rebuilding=True))
    assert rebuild_status(alone.state) is not None
    assert isinstance(alone.state, Follower) and alone.on(Tick(), now=10.0) == []


def test_a_forced_master_that_lost_its_state_leads_without_counting_itself() -> None:
    core = wiped(master_mode=MasterMode.FORCED, master="n0")
    # First every voter must answer its probe: it forgot which ballots it used (S1, sim seed
    # 171287), and the answers put its next ballot above all of them.
    first = probes(core.on(Tick(), now=0.0))
    assert set(first) == {"n1", "n2"}
    probe_n = first["n1"].n
    core.on(Receive(src="n1", msg=Nak(n=probe_n, their_n=15, their_i=0)))
    core.on(Receive(src="n2", msg=Nak(n=probe_n, their_n=10, their_i=0)))
    out = core.on(Tick(), now=0.5)
    prepare = next(e.msg for e in out if isinstance(e, Broadcast))
    assert isinstance(prepare, Prepare) and prepare.n > 15
    # One promise plus its own would be a quorum of 3; without its own vote it is not.
    core.on(Receive(src="n1", msg=Promise(n=prepare.n, i=0, accepted=None)))
    assert type(core.state).__name__ == "Candidate"
    core.on(Receive(src="n2", msg=Promise(n=prepare.n, i=0, accepted=None)))
    assert type(core.state).__name__ == "Leader"
