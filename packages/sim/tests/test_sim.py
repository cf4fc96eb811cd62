"""The simulator over many seeds, and the proof that its checkers have teeth.

* ``test_seeds``: ``PARAKOON_SIM_SEEDS`` seeds (default 1000, 10000 with ``PARAKOON_LONG=1``;
  e.g. 100000 for a long run) of
  random clusters (1, 2, 3 or 5 voters, sometimes a learner, elected/forced/preferred/read-only)
  under random faults, every checker on. Failing seeds are printed with the command that
  replays them. ``PARAKOON_SEED=N`` runs only seed N.
* ``test_cluster_sizes``: every cluster size explicitly, including liveness after healing.
* ``test_broken_variant_is_caught``: each deliberately broken core must be caught within the
  CI seeds.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import pytest

from parakoon_paxos import Config, Event, Leader, State, step
from parakoon_sim import VARIANTS, Faults, Sim, Violation, run_seed
from parakoon_sim.__main__ import main
from parakoon_sim.sim import SINGLE_FAULTS

CI_SEEDS = 1000

# The seed tests are bounded by their seed counts, not by time: a loaded machine runs them slower
# than pytest-timeout's default per test (120 s), which is there to catch hangs.
pytestmark = pytest.mark.timeout(900)


def _seeds(default: int) -> range:
    if "PARAKOON_SEED" in os.environ:
        seed = int(os.environ["PARAKOON_SEED"])
        return range(seed, seed + 1)
    if os.environ.get("PARAKOON_LONG") == "1":
        default *= 10
    return range(int(os.environ.get("PARAKOON_SIM_SEEDS", str(default))))


def test_seeds() -> None:
    seeds = _seeds(CI_SEEDS)
    failures: list[str] = []
    start = time.perf_counter()
    chosen = acked = 0
    for seed in seeds:
        try:
            result = run_seed(seed)
        except Violation as v:
            failures.append(str(v))
            print(f"seed={seed} FAILED: {v}")
            continue
        chosen += result.chosen
        acked += result.acked
    took = time.perf_counter() - start
    print(f"{len(seeds)} seeds in {took:.1f} s: {chosen} slots chosen, {acked} updates acked")
    assert not failures, "\n".join(failures)
    assert acked > 0


@pytest.mark.parametrize("voters", [1, 2, 3, 5])
def test_cluster_sizes(voters: int) -> None:
    for seed in _seeds(15):
        print(f"seed={seed} voters={voters}")
        result = Sim(seed, voters=voters, mode="elected").run()
        assert result.voters == voters
        assert result.acked > 0


# (variant, fault profile): the harsh profile is needed to produce the stale messages and
# isolated leaders that the subtler bugs need.
CAUGHT = [
    ("ack_before_persist", False, "persist before acknowledge"),
    ("skip_promise_persist", False, "persist before acknowledge"),
    ("accept_lower_ballot", True, ""),
    ("optimistic_renewal", True, "lease exclusion"),
    ("reply_before_chosen", False, "durability"),
]


def _caught(variant: str, rule: str, *, harsh: bool = False, membership: bool = False) -> None:
    """The checkers find ``variant`` within the CI seed budget, naming ``rule``."""
    step_fn = VARIANTS[variant]
    for seed in range(CI_SEEDS):
        try:
            Sim(seed, step_fn=step_fn, harsh=harsh, membership=membership).run()
        except (Violation, AssertionError) as v:
            print(f"{variant}: caught at seed={seed}: {v}")
            assert rule in str(v)
            return
    pytest.fail(f"{variant}: no violation found in {CI_SEEDS} seeds")


@pytest.mark.parametrize(("variant", "harsh", "rule"), CAUGHT, ids=[c[0] for c in CAUGHT])
def test_broken_variant_is_caught(variant: str, harsh: bool, rule: str) -> None:
    """The checkers find a deliberately broken core within the CI seed budget."""
    _caught(variant, rule, harsh=harsh)


@pytest.mark.parametrize(
    ("variant", "rule"),
    [
        ("two_changes_at_once", "one change at a time"),
        ("promote_before_caught_up", "promoted before caught up"),
    ],
)
def test_broken_membership_change_is_caught(variant: str, rule: str) -> None:
    """The membership checkers find a core that changes two nodes in one step, or that counts
    a learner as a voter before it caught up, within the CI seeds."""
    _caught(variant, rule, membership=True)


MEMBERSHIP_SEEDS = 200


def test_membership_seeds() -> None:
    """Random membership changes (add, promote, remove, the master included, one node at a
    time) under crashes, partitions, pauses, stale messages and lost disks."""
    seeds = _seeds(MEMBERSHIP_SEEDS)
    failures: list[str] = []
    changes = 0
    for seed in seeds:
        sim = Sim(seed, membership=True)
        try:
            sim.run()
        except Violation as v:
            failures.append(str(v))
            print(f"seed={seed} FAILED: {v}")
            continue
        changes += len(sim.member_history)
    print(f"{len(seeds)} membership seeds: {changes} membership changes chosen")
    assert not failures, "\n".join(failures)
    assert changes > len(seeds)


DISK_LOSS_SEEDS = 300


def test_disk_loss_seeds() -> None:
    """R9: nodes restart with empty disks (also mid-effect) under crashes and partitions."""
    seeds = _seeds(DISK_LOSS_SEEDS)
    failures: list[str] = []
    losses = rebuilt = 0
    for seed in seeds:
        try:
            result = Sim(seed, disk_loss=True).run()
        except Violation as v:
            failures.append(str(v))
            print(f"seed={seed} FAILED: {v}")
            continue
        losses += result.disk_losses
        rebuilt += result.rebuilt
    print(f"{len(seeds)} disk-loss seeds: {losses} disks lost, {rebuilt} voters rebuilt")
    assert not failures, "\n".join(failures)
    assert losses > 0 and rebuilt > 0


LINGER_SEEDS = 25


@pytest.mark.parametrize("profile", ["random", "harsh", "disk_loss", "membership"])
def test_linger_seeds(profile: str) -> None:
    """Every profile with the leaders' batch linger on (docs/paxos.md, "Batch linger"): it
    only moves when a leader proposes, so every checker must stay clean, liveness included.
    The simulated clients arrive at random, so most lingers run to their deadline."""
    seeds = _seeds(LINGER_SEEDS)
    kw: dict[str, Any] = {} if profile == "random" else {profile: True}
    failures: list[str] = []
    held = 0  # steps after which a leader held a batch back: the linger did happen

    def counting(config: Config, state: State, event: Event, now: float) -> Any:
        nonlocal held
        new, out = step(config, state, event, now)
        if isinstance(new, Leader) and new.prop is None and 0 < new.queue.size < new.expect:
            held += 1
        return new, out

    for seed in seeds:
        try:
            Sim(seed, batch_linger=0.02, step_fn=counting, **kw).run()
        except Violation as v:
            failures.append(str(v))
            print(f"seed={seed} FAILED ({profile}, --linger 0.02): {v}")
    assert not failures, "\n".join(failures)
    print(f"{len(seeds)} {profile} seeds with a linger: {held} steps held a batch back")
    assert held > len(seeds)


def test_reckless_disk_loss_never_forks() -> None:
    """More lost disks at once than the cluster tolerates: unavailable, never forgetful."""
    for seed in _seeds(100):
        rng = random.Random(seed)
        faults = Faults.disk_loss(rng)
        faults.reckless_loss = True
        print(f"seed={seed}")
        Sim(seed, faults=faults, voters=rng.choice((3, 5))).run()


@pytest.mark.parametrize("check_r9", [True, False], ids=["r9-checker", "consequences"])
def test_a_wiped_node_that_votes_at_once_is_caught(check_r9: bool) -> None:
    """The broken variant: a node that lost its disk votes as if it had always been empty.

    With the R9 checker on it is caught by that rule; with it off, the same core must be
    caught by what its votes do (a slot chosen twice, an acknowledged write lost).
    """
    step_fn = VARIANTS["vote_while_rebuilding"]
    for seed in range(CI_SEEDS):
        try:
            Sim(seed, step_fn=step_fn, disk_loss=True, check_r9=check_r9).run()
        except Violation as v:
            print(f"vote_while_rebuilding (check_r9={check_r9}): caught at seed={seed}: {v}")
            if check_r9:
                assert "R9" in str(v)
            else:
                assert "agreement" in str(v) or "durability" in str(v)
            return
    pytest.fail(f"vote_while_rebuilding: no violation found in {CI_SEEDS} seeds")


def test_a_seed_replays_exactly() -> None:
    a = Sim(42, trace=True).run()
    b = Sim(42, trace=True).run()
    assert a.trace == b.trace
    assert len(a.trace) > 100


def test_cli_runs_a_seed_and_a_range(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seed", "3"]) == 0
    assert "seed=3 ok" in capsys.readouterr().out
    assert main(["--seeds", "0..3"]) == 0
    assert "3 seeds, 0 failures" in capsys.readouterr().out
    assert main(["--seed", "0", "--variant", "ack_before_persist", "--trace"]) == 1
    captured = capsys.readouterr()
    assert "seed=0" in captured.err and "--seed 0 --trace" in captured.err
    assert "Persist" in captured.out


@pytest.mark.parametrize("voters", [3, 5])
@pytest.mark.parametrize("kind", sorted(SINGLE_FAULTS))
def test_one_lasting_fault_leaves_a_master_that_commits(kind: str, voters: int) -> None:
    """Survive every single fault: with one fault that never heals (a master that cannot hear,
    cannot speak, is cut off or dead, or one direction of one link cut), a master that
    commits exists within 3 lease periods and stays; a follower that comes back after being
    away never deposes the healthy master (pre-vote)."""
    for seed in _seeds(12):
        print(f"seed={seed} kind={kind} voters={voters}")
        Sim(seed, voters=voters, learners=0, mode="elected").run_single_fault(kind)


def test_without_prevote_a_returning_follower_deposes_the_master(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The broken variant of pre-vote: a node that runs raises its ballot at once. A follower
    that comes back while the master's link to it still backs off then forces the healthy
    master through a new election, which the disruption check reports."""
    from parakoon_paxos import core

    def run_at_once(config: Any, c: Any, retries: int, now: float, out: Any) -> Any:
        return core._start_election(config, c, retries, now, out)

    monkeypatch.setattr(core, "_start_prevote", run_at_once)
    with pytest.raises(Violation, match="disruption"):
        Sim(0, voters=3, learners=0, mode="elected").run_single_fault("follower_returns")


@pytest.mark.parametrize(
    "seed",
    [
        # Liveness: a new leader waited out a lease it had re-proposed without sending, and its
        # followers ran for election just as it took the lease (finding 7 in docs/paxos.md).
        88984,
        # Liveness: a fresh leader stepped down on a late Nak of a voter one slot ahead, and
        # leadership flapped after every hand-over (finding 5).
        72759,
        # A false S8 alarm: the source's last log slot was still being rewritten (simulator).
        33027,
        # S1: a pre-candidate counted a late Promise for the ballot it still held and led twice
        # under one ballot (found while pre-vote was written, fixed before it landed).
        290,
    ],
)
def test_regression_seed(seed: int) -> None:
    """Seeds that once failed, run again with the default profile; each must stay clean."""
    print(f"seed={seed}")
    run_seed(seed)


def test_regression_seed_171287_disk_loss() -> None:
    """S1: a forced master that lost its disk ran again with a ballot it had used before the
    loss and proposed a second value under it; it now waits for every voter's answer and runs
    above all their ballots (found by the 100,000-seed disk-loss run)."""
    print("seed=171287 profile=disk-loss")
    Sim(171287, disk_loss=True).run()


def test_regression_seed_252048_disk_loss() -> None:
    """Liveness: with two of five voters rebuilding, the three others needed one another
    and two candidates whose retry timers fell within 0.05 L of each other pre-empted each
    other for seconds; a candidate's random wait now widens with its failed attempts."""
    print("seed=252048 profile=disk-loss")
    Sim(252048, disk_loss=True).run()


def test_regression_seed_19371_disk_loss() -> None:
    """Liveness: with two of five voters rebuilding, candidates that lost to each other became
    followers and ran again from their follower timers within milliseconds of each other, so
    the widening candidate wait never came into play (4.2 s without a master in the calm
    phase). Lost elections now count across follower spells (``unsettled``) and widen the
    follower's check margin too."""
    print("seed=19371 profile=disk-loss")
    Sim(19371, disk_loss=True).run()


def test_regression_seed_14715_disk_loss() -> None:
    """Liveness (preferred mode): followers whose election check was scheduled before the last
    renewal they applied ran the moment the handed-over lease ended, so a non-preferred node
    won, handed over again, and the calm phase ended without a master. A follower now runs
    only its margin past the lease's real end."""
    print("seed=14715 profile=disk-loss")
    Sim(14715, disk_loss=True).run()


def test_regression_seed_31201_disk_loss_pause_into_calm() -> None:
    """Liveness, the simulator's fault model: a pause drawn just before the calm phase kept n4
    frozen 3 L into it while two rebuilding voters needed its answer; with the election and a
    preferred-mode hand-over after it, every calm-phase request met a node that was not master.
    The calm phase now ends pauses too (``end_pauses_at_calm``, off by default until every
    profile's long run is redone with it: it changes every seed with a pause under way then).
    Found by the 100,000-seed disk-loss run of session 7."""
    print("seed=31201 profile=disk-loss end_pauses_at_calm")
    Sim(31201, disk_loss=True, end_pauses_at_calm=True).run()
    with pytest.raises(Violation, match="no calm-phase request committed"):
        Sim(31201, disk_loss=True).run()  # the seed as the long run met it


@pytest.mark.parametrize(
    "seed",
    [
        # The simulator's fault model, not the core: a change asked for before the calm phase
        # completed in it and left the voters kept down a majority of the new membership
        # (first membership long run; now judged unavailable by design).
        1745,
        # The same model: a node kept down that the slot after the newest (chosen, not yet
        # known) membership still needed; nodes are kept down within the minority of both.
        50504,
        # The same model: two disks lost in a 4-voter membership whose removal of one of them
        # was chosen but not yet known; losses now stay a minority of both memberships.
        55634,
        # The simulator's clients asked removed nodes for the master; they ask members now.
        7,
        # The core: a learner whose promotion's commit notice overtook its Accept ignored the
        # new leader's Prepare for good; a non-voter now catches up on a Prepare beyond it.
        8,
        # The core: the only live node that had applied a removal (its own) ignored the
        # candidate that was behind; non-voters now point such a candidate at themselves.
        40,
        # The simulator's fault model: the calm phase kept n4 down while n1, which had lost its
        # disk, was a voter of the membership before the newest (chosen, not yet known); lost
        # disks now count in every membership in play (second membership long run).
        37647,
        # The same model: a removal accepted by a minority and chosen ten seconds later left
        # two of four voters without state; memberships accepted but not chosen are in play.
        42851,
    ],
)
def test_regression_seed_membership(seed: int) -> None:
    """Seeds that once failed under the membership profile; each must stay clean."""
    print(f"seed={seed} profile=membership")
    Sim(seed, membership=True).run()
