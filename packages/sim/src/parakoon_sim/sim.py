"""A deterministic simulation of a parakoon cluster: N copies of the real ``step`` in one thread.

Everything random comes from one ``random.Random(seed)``, so a seed replays exactly. The world
around the pure cores is modelled as follows.

* **Time.** A priority queue of timed happenings on a true clock. Each node reads its own clock
  ``offset + rate * t`` with ``rate`` within ``1 ± drift`` (drift 5%; ``Config.clock_drift``
  tells the cores the same bound).
* **Disk.** Per node: the log (slot -> entry, only the last slot ever rewritten), the promised
  ballot and the store (the list of applied values). ``Persist``/``PersistPromise`` are queued
  writes that become durable, in order, after a random fsync latency; then ``Persisted`` is
  delivered. A crash discards writes not yet durable (a torn tail) and the rest of the effect
  list being executed. ``Apply`` writes the store atomically with its applied slot (R6).
  A restart replays the log into the store up to ``last_i - 1`` (R1) and gives the core only
  ``Recovered``.
* **Disk loss (R9).** A node may lose its whole disk (also in the middle of an effect list) and
  restart empty, the way an operator replaces a failed disk or starts an empty ``home_dir``
  next to a live history. The cluster identity tells such a node that a history exists, so it
  restarts with ``Recovered(rebuilding=True)``; that flag is durable until the core's
  ``Rebuilt`` effect lands. At most a minority of voters is without its state at once (beyond
  that the cluster is unavailable by design); ``Faults.reckless_loss`` lifts the limit to check
  that even then nothing chosen is contradicted.
* **Driver contract.** Effects run in order; a message that follows a ``Persist`` in the same
  list leaves only when that write is durable.
* **Network.** Per message: drop, duplicate, delay (so reordering); partitions that isolate a
  random subset and heal later.
* **Clients.** Submit unique payloads to the node they believe is master; a refused or failed
  request is not retried (its outcome may be unknown).

Checkers run after every step (``Violation`` names the seed, the true time and the rule):

* agreement (S1): no slot has two chosen values; every store applies exactly the chosen value
  of each slot, in order (so all stores are prefixes of one history);
* validity: every chosen value was proposed, every chosen payload was submitted, no payload is
  chosen twice;
* durability (S9): every acknowledged request's payload is in the chosen history;
* lease exclusion (S7): no two nodes believe they hold a valid lease at the same true time;
* persist before acknowledge (S2): ``Accepted(n, i)`` leaves only when (i, n) is durable on the
  sender, ``Promise(n)`` only when ``promised_n >= n`` is durable;
* no vote while rebuilding (R9): a node whose durable state says "rebuilding" sends no
  ``Promise`` and no ``Accepted`` until its core has emitted ``Rebuilt`` (``check_r9=False``
  turns this off, to show that the agreement and durability checkers catch the consequence);
* structural invariants of every core state (``check_invariants``).

"Chosen" is judged by the simulator itself: (i, n, v) is chosen once a quorum of voters has
accepted it (made it durable as a voter, or acknowledged it), whatever the cores believe. Once
chosen it stays chosen, even if every disk that held it is lost later. Entries a rebuilding node
writes are a learner's copies, not accepts, until it acknowledges them.

Liveness: after the faulty phase the network heals and every node restarts (sometimes a
minority of voters stays down instead), and the cluster must have a master and commit fresh
client updates within a few lease periods.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from parakoon_paxos import (
    Accept,
    Accepted,
    Applied,
    Apply,
    Batch,
    Broadcast,
    CatchupDone,
    CatchupFailed,
    ChangeMembership,
    ClientBatch,
    ClientRequest,
    Config,
    DropMaster,
    Effect,
    Event,
    Fail,
    Leader,
    LogEntry,
    MasterMode,
    MasterSet,
    MemberOp,
    Membership,
    Message,
    Persist,
    Persisted,
    PersistPromise,
    Promise,
    Rebuilt,
    Receive,
    Recovered,
    Reply,
    RoleChanged,
    Send,
    StartCatchup,
    State,
    Tick,
    Value,
    check_invariants,
    effective_config,
    initial_state,
    lease_valid,
    master,
    next_deadline,
    step,
)
from parakoon_paxos.contract import NOW, stage

StepFn = Callable[[Config, State, Event, float], tuple[State, list[Effect]]]

# Bounds (every loop and queue of the simulator has one).
MAX_EVENTS_PER_SEED = 2_000_000
#: Happenings a paused node puts back until its pause ends, with where their data names it.
_DEFERRABLE = {"tick": 0, "event": 0, "catchup": 0, "client": 0, "member": 0, "deliver": 1}
MAX_TRACE_LINES = 200_000


#: The faults of ``Sim.run_single_fault``: each stays until the end of the run.
SINGLE_FAULTS = frozenset(
    {"deaf_master", "mute_master", "isolate_master", "crash_master", "one_way", "follower_returns"}
)


class Violation(AssertionError):
    """A checker failed. ``str()`` names the rule, the seed and the true time."""


@dataclass(slots=True, kw_only=True)
class Faults:
    """The fault profile of one run (drawn from the seed unless given)."""

    drop: float = 0.02
    duplicate: float = 0.02
    delay_min: float = 0.001
    delay_max: float = 0.05
    fsync_min: float = 0.0005
    fsync_max: float = 0.01
    apply_latency: float = 0.001
    crash_rate: float = 0.05  # expected crashes per node per lease period
    crash_mid_effects: float = 0.01  # chance to crash before each effect of a list
    down_min: float = 0.1
    down_max: float = 3.0
    partition_rate: float = 0.05  # expected partitions per lease period
    partition_min: float = 0.5
    partition_max: float = 5.0
    drift: float = 0.05
    client_rate: float = 50.0  # client requests per simulated second
    drop_master_rate: float = 0.0  # drop-master requests per lease period
    pause_rate: float = 0.0  # expected pauses (a frozen process, e.g. GC) per lease period
    pause_min: float = 0.3
    pause_max: float = 3.0
    disk_loss_rate: float = 0.0  # expected disk losses per node per lease period (R9)
    reckless_loss: bool = False  # allow more lost disks at once than the cluster tolerates
    member_rate: float = 0.0  # membership change requests per lease period

    @staticmethod
    def harsh(rng: random.Random) -> Faults:
        """Many partitions, pauses and stale messages: what the broken-variant tests use."""
        return Faults(
            drop=rng.choice((0.0, 0.05)),
            duplicate=0.05,
            delay_max=rng.choice((0.02, 0.1)),
            fsync_max=0.02,
            crash_rate=0.05,
            crash_mid_effects=0.0,
            partition_rate=0.4,
            partition_min=0.5,
            partition_max=2.0,
            pause_rate=0.3,
            pause_min=0.5,
            pause_max=2.0,
            client_rate=50.0,
        )

    @staticmethod
    def draw(rng: random.Random) -> Faults:
        return Faults(
            drop=rng.choice((0.0, 0.01, 0.05, 0.15)),
            duplicate=rng.choice((0.0, 0.02, 0.1)),
            delay_min=0.001,
            delay_max=rng.choice((0.005, 0.02, 0.1)),
            fsync_max=rng.choice((0.002, 0.02, 0.1)),
            crash_rate=rng.choice((0.0, 0.05, 0.2, 0.5)),
            crash_mid_effects=rng.choice((0.0, 0.01, 0.05)),
            down_max=rng.choice((0.5, 3.0, 8.0)),
            partition_rate=rng.choice((0.0, 0.05, 0.2)),
            client_rate=rng.choice((10.0, 50.0, 200.0)),
            drop_master_rate=rng.choice((0.0, 0.0, 0.1)),
            pause_rate=rng.choice((0.0, 0.05, 0.2)),
            disk_loss_rate=rng.choice((0.0, 0.0, 0.02, 0.1)),
            member_rate=rng.choice((0.0, 0.0, 0.3, 1.0)),
        )

    @staticmethod
    def disk_loss(rng: random.Random) -> Faults:
        """Frequent disk losses on top of crashes, partitions and stale messages (R9)."""
        return Faults(
            drop=rng.choice((0.0, 0.05)),
            duplicate=0.05,
            delay_max=rng.choice((0.02, 0.1)),
            fsync_max=0.02,
            crash_rate=rng.choice((0.1, 0.3)),
            crash_mid_effects=rng.choice((0.0, 0.01)),
            down_max=rng.choice((0.5, 2.0)),
            partition_rate=rng.choice((0.0, 0.2, 0.4)),
            partition_min=0.5,
            partition_max=2.0,
            pause_rate=rng.choice((0.0, 0.1)),
            client_rate=50.0,
            disk_loss_rate=rng.choice((0.1, 0.3)),
            member_rate=rng.choice((0.0, 0.3, 1.0)),
        )

    @staticmethod
    def membership(rng: random.Random) -> Faults:
        """Frequent membership changes (add, promote, remove, the master included) on top of
        crashes, partitions, pauses, stale messages and lost disks."""
        return Faults(
            drop=rng.choice((0.0, 0.05)),
            duplicate=0.05,
            delay_max=rng.choice((0.02, 0.1)),
            fsync_max=0.02,
            crash_rate=rng.choice((0.0, 0.1, 0.3)),
            crash_mid_effects=rng.choice((0.0, 0.01)),
            down_max=rng.choice((0.5, 2.0)),
            partition_rate=rng.choice((0.0, 0.2)),
            partition_min=0.5,
            partition_max=2.0,
            pause_rate=rng.choice((0.0, 0.1)),
            client_rate=50.0,
            disk_loss_rate=rng.choice((0.0, 0.05, 0.2)),
            member_rate=rng.choice((1.0, 2.0, 4.0)),
        )


@dataclass(slots=True)
class Disk:
    log: dict[int, LogEntry] = field(default_factory=dict)
    last_i: int = -1
    promised_n: int = 0
    store: list[Value] = field(default_factory=list)
    lease_holder: str | None = None
    durable: set[tuple[int, int]] = field(default_factory=set)  # (i, n) ever made durable
    rebuilding: bool = False  # lost its state; cleared when the core's Rebuilt is durable

    @property
    def applied_i(self) -> int:
        return len(self.store) - 1


@dataclass(slots=True)
class Node:
    name: str
    config: Config
    rate: float
    offset: float
    disk: Disk = field(default_factory=Disk)
    state: State | None = None
    incarnation: int = 0
    write_free_at: float = 0.0  # true time at which the disk queue is empty
    next_tick: float = 0.0
    partition: int = 0  # nodes talk only within the same partition number
    paused_until: float = 0.0  # a paused node handles nothing until then (its inbox waits)
    rebuilt_emitted: bool = False  # this incarnation's core has emitted Rebuilt
    max_durable_i: int = -1  # the highest slot ever durable on this node (lost disks included)

    def local(self, t: float) -> float:
        return self.offset + self.rate * t

    def true_time(self, local: float) -> float:
        return (local - self.offset) / self.rate


@dataclass(slots=True, kw_only=True)
class Result:
    seed: int
    voters: int
    learners: int
    mode: str
    chosen: int
    acked: int
    submitted: int
    events: int
    crashes: int
    elections: int
    trace: list[str]
    disk_losses: int = 0
    rebuilt: int = 0


class Sim:
    """One seeded run. ``run()`` returns a :class:`Result` or raises :class:`Violation`."""

    def __init__(
        self,
        seed: int,
        *,
        voters: int | None = None,
        learners: int | None = None,
        lease_period: float = 1.0,
        duration: float | None = None,
        faults: Faults | None = None,
        harsh: bool = False,
        disk_loss: bool = False,
        membership: bool = False,
        check_r9: bool = True,
        check_members: bool = True,
        step_fn: StepFn = step,
        trace: bool = False,
        max_batch_count: int = 64,
        mode: str | None = None,
        end_pauses_at_calm: bool = False,
        batch_linger: float = 0.0,
    ) -> None:
        self.seed = seed
        # The leaders' batch linger (Config.batch_linger); 0, the default, runs every seed as
        # before the linger existed.
        self.batch_linger = batch_linger
        # Off by default until the next full long run of every profile (see _end_pauses): it
        # changes the runs of every seed with a pause under way when the calm phase starts.
        self.end_pauses_at_calm = end_pauses_at_calm
        self.rng = random.Random(seed)
        rng = self.rng
        nv = voters if voters is not None else rng.choice((1, 2, 3, 3, 3, 3, 5, 5))
        if mode is None:
            mode = rng.choice(("elected",) * 17 + ("forced", "preferred", "readonly"))
        self.mode = mode
        nl = learners if learners is not None else rng.choice((0, 0, 0, 1))
        self.L = lease_period
        self.duration = duration if duration is not None else rng.uniform(8.0, 16.0) * self.L
        if faults is None:
            if membership:
                faults = Faults.membership(rng)
            elif disk_loss:
                faults = Faults.disk_loss(rng)
            else:
                faults = Faults.harsh(rng) if harsh else Faults.draw(rng)
        self.faults = faults
        self.step_fn = step_fn
        self.check_r9 = check_r9
        self.check_members = check_members
        self.replay_flags = (
            " --membership"
            if membership
            else (" --disk-loss" if disk_loss else (" --harsh" if harsh else ""))
        )
        self.tracing = trace
        self.trace: list[str] = []
        voter_names = tuple(f"n{k}" for k in range(nv))
        learner_names = tuple(f"l{k}" for k in range(nl))
        self.initial_voters = voter_names
        # The true membership history: (slot, membership) for every chosen Membership, in
        # slot order; slot i runs under the newest one chosen below i.
        self.initial_members = Membership(voters=voter_names, learners=learner_names)
        self.member_history: list[tuple[int, Membership]] = []
        self.max_batch_count = max_batch_count
        self.nodes: dict[str, Node] = {}
        self.added = 0
        self.member_requested_at = float("-inf")
        for name in voter_names + learner_names:
            self._new_node(name, voter_names, learner_names)
        self.now = 0.0
        self.seq = 0
        self.queue: list[tuple[float, int, str, Any]] = []
        # Global knowledge for the checkers.
        self.accepts: dict[tuple[int, int], tuple[Value, set[str]]] = {}
        self.chosen: dict[int, Value] = {}
        self.chosen_payload_slot: dict[bytes, int] = {}
        self.proposed: set[Value] = set()
        self.submitted: dict[int, bytes] = {}
        self.acked: set[int] = set()
        self.answered: set[int] = set()
        self.next_rid = 0
        self.events = 0
        self.crashes = 0
        self.leaders_elected = 0
        self.disk_losses = 0
        self.rebuilt = 0
        self.elections = 0
        self.calm = False
        self.unavailable_by_design = False
        self.cut: set[tuple[str, str]] = set()  # directed links that drop every message
        self.final_rids: list[int] = []
        self.last_master_at = float("-inf")

    # --- membership (the simulator's own truth) --------------------------------------------------

    def _new_node(self, name: str, voters: tuple[str, ...], learners: tuple[str, ...]) -> Node:
        """A node whose cluster.toml lists ``voters`` and ``learners`` (it is one of them)."""
        rng, d, mode = self.rng, self.faults.drift, self.mode
        preferred = mode == "preferred" and "n0" in voters
        config = Config(
            me=name,
            voters=voters,
            learners=learners,
            lease_period=self.L,
            clock_drift=d,
            max_batch_count=self.max_batch_count,
            max_queued=1000,
            batch_linger=self.batch_linger,
            master_mode={
                "forced": MasterMode.FORCED,
                "readonly": MasterMode.READONLY,
            }.get(mode, MasterMode.ELECTED),
            master="n0" if mode == "forced" or preferred else None,
            preferred=preferred,
        )
        node = Node(
            name=name,
            config=config,
            rate=rng.uniform(1 - d, 1 + d),
            offset=rng.uniform(0, 1000),
        )
        self.nodes[name] = node
        return node

    def members_at(self, i: int) -> Membership:
        """The membership slot ``i`` runs under (the newest chosen below it)."""
        found = self.initial_members
        for slot, m in self.member_history:
            if slot >= i:
                break
            found = m
        return found

    @property
    def members(self) -> Membership:
        """The newest chosen membership."""
        return self.member_history[-1][1] if self.member_history else self.initial_members

    @property
    def voters(self) -> tuple[str, ...]:
        return self.members.voters

    def _node_members(self, node: Node) -> Membership | None:
        """The newest Membership in the node's store (None: its static one is in force)."""
        for value in reversed(node.disk.store):
            if isinstance(value, Membership):
                return value
        return None

    def _check_membership(self, i: int, new: Membership) -> None:
        """A chosen Membership at slot i: one node changes, quorums intersect, and a promoted
        learner held the leader's recent slots."""
        old = self.members_at(i)

        def role(m: Membership, x: str) -> int:
            return 2 if x in m.voters else (1 if x in m.learners else 0)

        names = set(old.voters) | set(old.learners) | set(new.voters) | set(new.learners)
        changed = sorted(x for x in names if role(old, x) != role(new, x))
        if len(changed) != 1:
            raise self.fail(
                "one change at a time",
                f"slot {i}: {old.voters}/{old.learners} -> {new.voters}/{new.learners} "
                f"changes {changed}",
            )
        q_old, q_new = len(old.voters) // 2 + 1, len(new.voters) // 2 + 1
        if q_old + q_new <= len(set(old.voters) | set(new.voters)):
            raise self.fail(
                "quorum intersection", f"slot {i}: {old.voters} -> {new.voters} do not intersect"
            )
        (x,) = changed
        if role(old, x) == 1 and role(new, x) == 2:
            held = self.nodes[x].max_durable_i
            if held < i - 4:
                raise self.fail(
                    "promoted before caught up",
                    f"slot {i}: {x} promoted to voter holding only slot {held}",
                )

    # --- plumbing ------------------------------------------------------------------------------

    def _at(self, t: float, kind: str, data: Any) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (t, self.seq, kind, data))

    def _log(self, text: str) -> None:
        if self.tracing and len(self.trace) < MAX_TRACE_LINES:
            self.trace.append(f"{self.now:9.4f} {text}")

    def fail(self, rule: str, detail: str) -> Violation:
        return Violation(
            f"seed={self.seed} t={self.now:.4f}: {rule}: {detail}\n"
            f"replay: uv run --all-packages python -m parakoon_sim --seed {self.seed} --trace"
            f"{self.replay_flags}"
        )

    # --- node lifecycle ------------------------------------------------------------------------

    def _start(self, node: Node) -> None:
        disk = node.disk
        # The store is in memory (as in parakoon): a restart rebuilds it from the log. R1:
        # replay up to last_i - 1 (last_i on a single voter, where every durable entry is
        # chosen).
        disk.store = []
        disk.lease_holder = None
        for i in range(disk.applied_i + 1, disk.last_i):
            self._store_apply(node, i, disk.log[i].value, "replay")
        members = self._node_members(node)
        if disk.last_i >= 0 and (members.voters if members else node.config.voters) == (node.name,):
            # The only voter of the membership its last slot ran under chose it alone.
            self._store_apply(node, disk.last_i, disk.log[disk.last_i].value, "replay")
            members = self._node_members(node)
        last = disk.log.get(disk.last_i) if disk.last_i >= 0 else None
        rec = Recovered(
            last=last,
            applied_i=disk.applied_i,
            promised_n=disk.promised_n,
            lease_holder=disk.lease_holder,
            rebuilding=disk.rebuilding,
            membership=members,
        )
        node.incarnation += 1
        node.write_free_at = self.now
        node.rebuilt_emitted = False
        node.state = initial_state(node.config, rec, node.local(self.now), self.rng.getrandbits(63))
        self._log(f"{node.name} start {rec}")
        self._schedule_tick(node)

    def _may_lose_disk(self, node: Node) -> bool:
        """Lose one more disk only while a majority of voters keeps its state (R9), in the
        newest membership and in the one before it (the newest may be chosen with no node
        knowing it yet, so the slot after it may still need a quorum of the one before)."""
        if self.calm or len(self.voters) < 3:
            return False  # one or two voters cannot survive any lost disk
        if self.faults.reckless_loss:
            return True
        if self.now - self.member_requested_at < 2 * self.L:
            # A change may be on its way: the membership the loss must be a minority of is not
            # known here.
            return False
        if node.disk.rebuilding:
            return True
        for m in self._memberships_in_play():
            everyone = set(m.voters) | set(m.learners)
            if node.name not in everyone:
                continue
            # Learners count: one may be promoted while it rebuilds.
            lost = sum(1 for n in self.nodes.values() if n.disk.rebuilding and n.name in everyone)
            if lost >= (len(m.voters) - 1) // 2:
                return False
        return True

    def _memberships_in_play(self) -> list[Membership]:
        """Every membership that governs, or may come to govern, the next slots: the newest
        chosen, the one before it (the newest may be chosen with no node knowing it yet), and
        each one accepted somewhere but not chosen (a later leader may still choose it: seed
        42851 lost a second disk of five voters while a removal that left four sat accepted
        by a minority, and was chosen ten seconds later)."""
        if not self.member_history:
            found = [self.initial_members]
        else:
            found = [self.members, self.members_at(self.member_history[-1][0])]
        for node in self.nodes.values():
            for i, entry in node.disk.log.items():
                if isinstance(entry.value, Membership) and i not in self.chosen:
                    found.append(entry.value)
        unique: dict[tuple[tuple[str, ...], tuple[str, ...]], Membership] = {}
        for m in found:
            unique.setdefault((m.voters, m.learners), m)
        return list(unique.values())

    def _lose_disk(self, node: Node) -> None:
        """The node's disk is replaced by an empty one; it restarts rebuilding (R9)."""
        self._crash(node)  # a node that was down already has its restart pending
        self.disk_losses += 1
        # The identity file is gone with the rest; the node learns from its peers' identities
        # that a history exists, so it comes back as a rebuilding voter.
        # The node restarts with the cluster.toml it was created with, however old: a file from
        # before the cluster grew may even list it as the only voter. It must rebuild all the
        # same (a node that lost its state is never alone) and learn the membership in force
        # from its peers.
        node.disk = Disk(rebuilding=True)
        self._log(f"{node.name} DISK LOST")

    def _crash(self, node: Node) -> None:
        if node.state is None:
            return
        self.crashes += 1
        node.state = None
        node.incarnation += 1  # in-flight disk writes, Persisted/Applied and ticks are void
        self._log(f"{node.name} CRASH")
        if not self.calm:
            down = self.rng.uniform(self.faults.down_min, self.faults.down_max) * self.L
            self._at(self.now + down, "restart", node.name)

    def _schedule_tick(self, node: Node) -> None:
        assert node.state is not None
        # Ticks at every deadline the core reports (next_deadline) plus a periodic backstop of
        # about L/5: between deadlines a Tick changes nothing, so a sparser backstop than the
        # driver's L/20 only saves events (and a deadline the core forgot to report would show
        # up as lost liveness).
        period = self.L / 5
        t = self.now + period * self.rng.uniform(0.5, 1.0)
        dl = next_deadline(node.config, node.state)
        if dl is not None:
            t_dl = node.true_time(dl) + 1e-6
            if t_dl < t:
                t = max(t_dl, self.now + 1e-6)
        node.next_tick = t
        self._at(t, "tick", (node.name, node.incarnation, t))

    # --- stepping ------------------------------------------------------------------------------

    def _step(self, node: Node, event: Event) -> None:
        assert node.state is not None
        self.events += 1
        local = node.local(self.now)
        state, effects = self.step_fn(node.config, node.state, event, local)
        node.state = state
        if self.tracing and (effects or not isinstance(event, Tick)):
            self._log(f"{node.name} <- {_fmt(event)}")
        self._execute(node, effects)
        if node.state is not None:
            try:
                check_invariants(node.config, node.state)
            except AssertionError as e:
                raise self.fail("invariant", f"{node.name}: {e}") from None
            if node.next_tick > self.now:
                dl = next_deadline(node.config, node.state)
                if dl is not None and node.true_time(dl) < node.next_tick - 1e-9:
                    self._schedule_tick(node)
        self._check_leases()

    def _execute(self, node: Node, effects: list[Effect]) -> None:
        f = self.faults
        inc = node.incarnation
        durable_at: list[float] = []  # when each write of this list becomes durable
        for staged in stage(effects):
            eff = staged.effect
            # Held effects wait for the writes before them (parakoon_paxos.contract).
            send_after = self.now if staged.after == NOW else durable_at[staged.after]
            if not self.calm and f.crash_mid_effects and self.rng.random() < f.crash_mid_effects:
                if f.disk_loss_rate and self.rng.random() < 0.3 and self._may_lose_disk(node):
                    self._lose_disk(node)
                else:
                    self._crash(node)
                return
            if self.tracing:
                self._log(f"{node.name} -> {_fmt(eff)}")
            match eff:
                case Send(to=to, msg=msg):
                    self._send(node, to, msg, send_after)
                case Broadcast(msg=msg):
                    conf = (
                        node.config
                        if node.state is None
                        else effective_config(node.config, node.state)
                    )
                    for to in conf.peers:
                        self._send(node, to, msg, send_after)
                case Persist(entry=entry):
                    if isinstance(node.state, Leader) and entry.n == node.state.n:
                        self.proposed.add(entry.value)  # our own proposal (a lone voter's too)
                    # Writes complete in order; _write_done checks S3 (no gap, no rewrite
                    # below the last slot) when each one lands.
                    node.write_free_at = max(node.write_free_at, self.now) + self.rng.uniform(
                        f.fsync_min, f.fsync_max
                    )
                    durable_at.append(node.write_free_at)
                    self._at(node.write_free_at, "write", (node.name, inc, entry))
                case PersistPromise(n=n):
                    node.write_free_at = max(node.write_free_at, self.now) + self.rng.uniform(
                        f.fsync_min, f.fsync_max
                    )
                    durable_at.append(node.write_free_at)
                    self._at(node.write_free_at, "promise", (node.name, inc, n))
                case Rebuilt():
                    node.rebuilt_emitted = True
                    node.write_free_at = max(node.write_free_at, self.now) + self.rng.uniform(
                        f.fsync_min, f.fsync_max
                    )
                    durable_at.append(node.write_free_at)
                    self._at(node.write_free_at, "rebuilt", (node.name, inc))
                case Apply(i=i, value=value):
                    self._store_apply(node, i, value, "apply")
                    results = (
                        tuple(len(p) for p in value.payloads) if isinstance(value, Batch) else ()
                    )
                    self._at(
                        self.now + f.apply_latency,
                        "event",
                        (node.name, inc, Applied(i=i, results=results)),
                    )
                case Reply(rid=rid):
                    if send_after > self.now:
                        self._at(send_after, "reply", (node.name, inc, rid))
                    else:
                        self._on_reply(node, rid)
                case Fail(rid=rid):
                    if send_after > self.now:
                        self._at(send_after, "fail", (node.name, inc, rid))
                    else:
                        self.answered.add(rid)
                case StartCatchup(source=source):
                    delay = self.rng.uniform(f.delay_min, f.delay_max) * 2
                    self._at(self.now + delay, "catchup", (node.name, inc, source))
                case RoleChanged(role=r):
                    if r.value == "candidate":
                        self.elections += 1
                    elif r.value == "leader":
                        self.leaders_elected += 1
                case _:
                    raise AssertionError(f"unknown effect {eff!r}")

    def _send(self, node: Node, to: str, msg: Message, not_before: float) -> None:
        f = self.faults
        copies = 1
        if not self.calm:
            if self.rng.random() < f.drop:
                copies = 0
            elif self.rng.random() < f.duplicate:
                copies = 2
        for _ in range(copies):
            t = max(not_before, self.now) + self.rng.uniform(f.delay_min, f.delay_max)
            self._at(not_before, "depart", (node.name, node.incarnation, to, msg, t))

    # --- disk ----------------------------------------------------------------------------------

    def _write_done(self, node: Node, entry: LogEntry) -> None:
        disk = node.disk
        if entry.i == disk.last_i + 1 or entry.i == disk.last_i:
            disk.log[entry.i] = entry
            disk.last_i = entry.i
        elif entry.i < disk.last_i:
            raise self.fail(
                "S3", f"{node.name} rewrites slot {entry.i} below its last {disk.last_i}"
            )
        else:
            raise self.fail("S3", f"{node.name} appends slot {entry.i} after {disk.last_i}")
        disk.durable.add((entry.i, entry.n))
        node.max_durable_i = max(node.max_durable_i, entry.i)
        # A rebuilding node's copies are a learner's, not accepts, as long as the cores keep
        # R9; without the R9 checker every durable copy counts, so that a core that lets a
        # rebuilding node vote is judged by what its votes did (agreement, durability).
        if not disk.rebuilding or not self.check_r9:
            self._accepted(node.name, entry.i, entry.n, entry.value)

    def _accepted(self, name: str, i: int, n: int, value: Value) -> None:
        """``name`` has accepted (i, n, value): chosen once a quorum of the voters of the
        membership slot i runs under has (a learner's copy counts if it is such a voter)."""
        known, who = self.accepts.setdefault((i, n), (value, set()))
        if known != value:
            raise self.fail("S1", f"slot {i} ballot {n} has {known} and {value}")
        who.add(name)
        voters = self.members_at(i).voters
        if len(who.intersection(voters)) >= len(voters) // 2 + 1:
            self._choose(i, value)

    def _choose(self, i: int, value: Value) -> None:
        old = self.chosen.get(i)
        if old is not None:
            if old != value:
                raise self.fail("agreement", f"slot {i} chosen twice: {old} and {value}")
            return
        if value not in self.proposed:
            raise self.fail("validity", f"slot {i} chose {value} which nobody proposed")
        if isinstance(value, Membership):
            if self.check_members:
                self._check_membership(i, value)
            self.member_history.append((i, value))
            self.member_history.sort(key=lambda x: x[0])
        self.chosen[i] = value
        self._log(f"CHOSEN {i} {_fmt_value(value)}")
        if isinstance(value, Batch):
            for p in value.payloads:
                if p in self.chosen_payload_slot:
                    raise self.fail("validity", f"payload {p!r} chosen twice")
                if int(p.split(b":")[0]) not in self.submitted:
                    raise self.fail("validity", f"payload {p!r} was never submitted")
                self.chosen_payload_slot[p] = i

    def _store_apply(self, node: Node, i: int, value: Value, how: str) -> None:
        disk = node.disk
        if i != disk.applied_i + 1:
            raise self.fail("S4", f"{node.name} {how} slot {i} after {disk.applied_i}")
        chosen = self.chosen.get(i)
        if chosen is None:
            raise self.fail(
                "agreement", f"{node.name} {how} slot {i} = {value} which is not chosen"
            )
        if chosen != value:
            raise self.fail("agreement", f"{node.name} {how} slot {i} = {value}, chosen {chosen}")
        disk.store.append(value)
        if isinstance(value, MasterSet):
            disk.lease_holder = value.node

    def _catchup(self, node: Node, source: str) -> None:
        if node.write_free_at > self.now:
            # The driver installs caught-up data after the log writes already queued.
            self._at(node.write_free_at + 1e-6, "catchup", (node.name, node.incarnation, source))
            return
        src = self.nodes[source]
        if src.state is None or src.partition != node.partition:
            self._step(node, CatchupFailed(source=source))
            return
        disk, sdisk = node.disk, src.disk
        copied_lease: str | None = None
        # The source serves only chosen slots that are durable in its log (S8).
        for i in range(disk.applied_i + 1, min(sdisk.applied_i, sdisk.last_i) + 1):
            entry = sdisk.log[i]
            if entry.value != sdisk.store[i]:
                if i == sdisk.last_i:
                    # The source's last log slot may still be on its way to being rewritten
                    # with the chosen value (a stale proposal of its own was durable first);
                    # the source serves only up to the slot before it.
                    break
                raise self.fail("S8", f"{source} log slot {i} differs from its store")
            # Copied data is durable before it is applied (the driver's job).
            if i < disk.last_i:
                raise self.fail("S3", f"{node.name} catch-up below its log end")
            disk.log[i] = entry
            disk.last_i = i
            disk.durable.add((i, entry.n))
            node.max_durable_i = max(node.max_durable_i, i)
            self._store_apply(node, i, entry.value, "catch-up")
            if isinstance(entry.value, MasterSet):
                copied_lease = entry.value.node
        last = disk.log.get(disk.last_i) if disk.last_i >= 0 else None
        self._step(
            node,
            CatchupDone(
                applied_i=disk.applied_i,
                last=last,
                lease_holder=copied_lease,
                membership=self._node_members(node),
            ),
        )

    # --- clients -------------------------------------------------------------------------------

    def _master_target(self) -> str | None:
        """Where a client sends: the node that a live member (drawn at random) believes is
        master, else that member itself; None when no member is up. Clients learn the members
        from any live node, as the client library does."""
        m = self.members
        live = [
            n
            for n in self.nodes.values()
            if n.state is not None and (n.name in m.voters or n.name in m.learners)
        ]
        if not live:
            return None
        probe = self.rng.choice(live)
        assert probe.state is not None
        return master(probe.config, probe.state, probe.local(self.now)) or probe.name

    def _client_submit(self) -> None:
        target = self._master_target()
        if target is None:
            return
        count = self.rng.choice((1, 1, 2, 5))
        reqs = []
        for _ in range(count):
            rid = self.next_rid
            self.next_rid += 1
            payload = f"{rid}:{self.seed}".encode() + b"x" * self.rng.randrange(0, 40)
            self.submitted[rid] = payload
            reqs.append(ClientRequest(rid=rid, payload=payload, sync=self.rng.random() < 0.1))
            if self.calm:
                self.final_rids.append(rid)
        delay = self.rng.uniform(self.faults.delay_min, self.faults.delay_max)
        self._at(self.now + delay, "client", (target, tuple(reqs)))

    def _member_request(self) -> None:
        """Ask the node some live node believes is master for one membership change, drawn
        against the true membership (the leader may know another one and refuse)."""
        if self.mode == "forced" or self.calm:
            return
        target = self._master_target()
        if target is None:
            return
        self.member_requested_at = self.now
        for _ in range(2 if self.rng.random() < 0.25 else 1):  # sometimes two at once
            self._one_member_request(target)

    def _one_member_request(self, target: str) -> None:
        m, rng = self.members, self.rng
        everyone = [*m.voters, *m.learners]
        rebuilding = any(self.nodes[x].disk.rebuilding for x in everyone)
        ops: list[tuple[MemberOp, str]] = []
        for x in m.learners:
            ops += [(MemberOp.PROMOTE, x)] * 3 + [(MemberOp.REMOVE, x)]
        if len(everyone) < 7:
            ops += [(MemberOp.ADD, "")] * 2
        if len(m.voters) > 1 and not rebuilding:
            # Any voter, the master included; shrinking below 3 is rarer.
            weight = 2 if len(m.voters) > 3 else 1
            ops += [(MemberOp.REMOVE, x) for x in m.voters] * weight
        if not ops:
            return
        op, name = rng.choice(ops)
        if op is MemberOp.ADD:
            name = f"a{self.added}"
            self.added += 1
            node = self._new_node(name, m.voters, tuple(sorted((*m.learners, name))))
            # The operator starts the new node about when it asks for it to be added.
            self._at(self.now + rng.uniform(0.0, 0.5) * self.L, "restart", node.name)
        rid = -1 - self.next_rid
        self.next_rid += 1
        self._log(f"MEMBER {op.value} {name} -> {target}")
        delay = rng.uniform(self.faults.delay_min, self.faults.delay_max)
        self._at(self.now + delay, "member", (target, ChangeMembership(rid=rid, op=op, node=name)))

    def _on_reply(self, node: Node, rid: int) -> None:
        if rid not in self.submitted:
            self.answered.add(rid)  # an admin request (drop-master)
            return
        payload = self.submitted[rid]
        if payload not in self.chosen_payload_slot:
            raise self.fail(
                "durability", f"{node.name} acknowledged rid {rid} but it is not chosen"
            )
        self.acked.add(rid)
        self.answered.add(rid)

    # --- checkers ------------------------------------------------------------------------------

    def _check_leases(self) -> None:
        holders = [
            n.name
            for n in self.nodes.values()
            if isinstance(n.state, Leader) and lease_valid(n.config, n.state, n.local(self.now))
        ]
        if holders:
            self.last_master_at = self.now
        if len(holders) > 1:
            raise self.fail("lease exclusion", f"{holders} all believe they hold the lease")

    def _check_depart(self, node: Node, msg: Message) -> None:
        if (
            self.check_r9
            and isinstance(msg, Accepted | Promise)
            and node.disk.rebuilding
            and not node.rebuilt_emitted
        ):
            raise self.fail("R9", f"{node.name} votes ({msg}) while its disk says it is rebuilding")
        if isinstance(msg, Accepted) and (msg.i, msg.n) not in node.disk.durable:
            raise self.fail(
                "persist before acknowledge",
                f"{node.name} sends Accepted(n={msg.n}, i={msg.i}) without it on disk",
            )
        if isinstance(msg, Accepted):
            entry = node.disk.log.get(msg.i)
            if entry is not None and entry.n == msg.n:
                self._accepted(node.name, msg.i, msg.n, entry.value)
        if isinstance(msg, Promise) and node.disk.promised_n < msg.n:
            raise self.fail(
                "persist before acknowledge",
                f"{node.name} sends Promise(n={msg.n}) with promised_n="
                f"{node.disk.promised_n} on disk",
            )

    # --- the run -------------------------------------------------------------------------------

    def run(self) -> Result:
        f = self.faults
        rng = self.rng
        for node in self.nodes.values():
            self._start(node)
        # Faults and load for the faulty phase.
        end = self.duration
        t = 0.0
        while f.client_rate > 0:
            t += rng.expovariate(f.client_rate)
            if t >= end:
                break
            self._at(t, "submit", None)
        names = list(self.nodes)
        for name in names:
            t = 0.0
            while f.crash_rate > 0:
                t += rng.expovariate(f.crash_rate / self.L)
                if t >= end:
                    break
                self._at(t, "crash", name)
        t = 0.0
        while f.partition_rate > 0 and len(names) > 1:
            t += rng.expovariate(f.partition_rate / self.L)
            if t >= end:
                break
            self._at(t, "partition", None)
        for name in names:
            t = 0.0
            while f.disk_loss_rate > 0:
                t += rng.expovariate(f.disk_loss_rate / self.L)
                if t >= end:
                    break
                self._at(t, "lose_disk", name)
        t = 0.0
        while f.drop_master_rate > 0:
            t += rng.expovariate(f.drop_master_rate / self.L)
            if t >= end:
                break
            self._at(t, "drop_master", None)
        for name in names:
            t = 0.0
            while f.pause_rate > 0:
                t += rng.expovariate(f.pause_rate / self.L)
                if t >= end:
                    break
                self._at(t, "pause", name)
        t = 0.0
        while f.member_rate > 0:
            t += rng.expovariate(f.member_rate / self.L)
            if t >= end:
                break
            self._at(t, "member_request", None)
        self._at(end, "calm", None)
        calm_len = 8 * self.L
        stop = end + calm_len
        # Fresh load once the cluster has had 3 lease periods to settle.
        for k in range(8):
            self._at(end + 3 * self.L + k * 0.5 * self.L, "submit", None)
        self._at(stop, "stop", None)

        while self.queue:
            if self.events > MAX_EVENTS_PER_SEED:
                raise self.fail("bound", f"more than {MAX_EVENTS_PER_SEED} events")
            t, _, kind, data = heapq.heappop(self.queue)
            self.now = t
            if kind == "stop":
                break
            self._dispatch(kind, data)
        self._check_liveness()
        return self._result()

    # --- one fault that stays: the cluster must recover while it lasts -------------------------

    def run_single_fault(self, kind: str, *, recover_within: float = 3.0) -> Result:
        """Settle, then inject one fault that is never healed; a master that commits must exist
        within ``recover_within`` lease periods and until the end (``SINGLE_FAULTS``).

        The network otherwise behaves (no drops, duplicates or partitions beyond the fault, no
        crashes), so any loss of liveness is the fault's doing.
        """
        if kind not in SINGLE_FAULTS:
            raise ValueError(f"unknown single fault {kind!r}; one of {sorted(SINGLE_FAULTS)}")
        f = self.faults
        f.drop = f.duplicate = 0.0
        f.crash_rate = f.crash_mid_effects = f.partition_rate = f.pause_rate = 0.0
        f.disk_loss_rate = f.drop_master_rate = 0.0
        for node in self.nodes.values():
            self._start(node)
        inject = 4 * self.L
        stop = inject + (recover_within + 6) * self.L
        t = 0.0
        while True:
            t += self.rng.expovariate(20.0)
            if t >= stop:
                break
            self._at(t, "submit", None)
        self._at(inject, "single_fault", kind)
        judged_from = inject + recover_within * self.L
        leaders_before: int | None = None
        acked_after: set[int] = set()
        while self.queue:
            if self.events > MAX_EVENTS_PER_SEED:
                raise self.fail("bound", f"more than {MAX_EVENTS_PER_SEED} events")
            t, _, what, data = heapq.heappop(self.queue)
            self.now = t
            if t >= stop:
                break
            before = len(self.acked)
            if leaders_before is None and t >= inject:
                leaders_before = self.leaders_elected
            self._dispatch(what, data)
            if t >= judged_from and len(self.acked) > before:
                acked_after.add(len(self.acked))
        if self.now - self.last_master_at > self.L:
            raise self.fail("liveness", f"{kind}: no master during the last lease period")
        if kind == "follower_returns" and self.leaders_elected != leaders_before:
            raise self.fail(
                "disruption",
                "a follower that came back deposed a healthy master "
                f"({self.leaders_elected - (leaders_before or 0)} elections won)",
            )
        if not acked_after:
            raise self.fail(
                "liveness", f"{kind}: nothing committed {recover_within} L after the fault"
            )
        return self._result()

    def _single_fault(self, kind: str) -> None:
        holders = [
            n.name
            for n in self.nodes.values()
            if isinstance(n.state, Leader) and lease_valid(n.config, n.state, n.local(self.now))
        ]
        victim = holders[0] if holders else self.rng.choice(self.voters)
        others = [n for n in self.nodes if n != victim]
        match kind:
            case "deaf_master":
                self.cut |= {(o, victim) for o in others}
            case "mute_master":
                self.cut |= {(victim, o) for o in others}
            case "isolate_master":
                self.cut |= {(o, victim) for o in others} | {(victim, o) for o in others}
            case "crash_master":
                self.calm = True  # no restart
                self._crash(self.nodes[victim])
            case "one_way":
                a, b = self.rng.sample(list(self.nodes), 2)
                self.cut.add((a, b))
                victim = f"{a}->{b}"
            case "follower_returns":
                # A follower is away for 1.5-6 L (down, its peers' links to it backing off)
                # and comes back under load: the master must stay (no disruptive return).
                victim = self.rng.choice(others)
                self._crash(self.nodes[victim])
                self.calm = True  # no scheduled restart; this one is ours
                away = self.rng.uniform(1.5, 6.0) * self.L
                self._at(self.now + away, "restart", victim)
                # The master's link to it is still backing off when it returns: for up to
                # 1.5 L it hears nothing, so its own lease check runs out (as in the node,
                # where a reconnect back-off once outlasted the lease).
                if holders:
                    link = (holders[0], victim)
                    self._at(self.now + away, "cut_add", link)
                    back = self.rng.uniform(1.2, 1.5) * self.L
                    self._at(self.now + away + back, "cut_remove", link)
            case _:
                raise AssertionError(kind)
        self._log(f"SINGLE FAULT {kind} on {victim}")

    def _result(self) -> Result:
        return Result(
            seed=self.seed,
            voters=len(self.initial_voters),
            learners=len(self.initial_members.learners),
            mode=self.mode,
            chosen=len(self.chosen),
            acked=len(self.acked),
            submitted=len(self.submitted),
            events=self.events,
            crashes=self.crashes,
            elections=self.elections,
            trace=self.trace,
            disk_losses=self.disk_losses,
            rebuilt=self.rebuilt,
        )

    @staticmethod
    def _alive(node: Node, incarnation: int) -> bool:
        return node.state is not None and node.incarnation == incarnation

    def _deferred(self, name: str, kind: str, data: Any) -> bool:
        """A paused node handles nothing: put the happening back until the pause ends."""
        until = self.nodes[name].paused_until
        if self.now < until:
            self._at(until, kind, data)
            return True
        return False

    def _dispatch(self, kind: str, data: Any) -> None:
        nodes = self.nodes
        at = _DEFERRABLE.get(kind)
        if at is not None and self._deferred(data[at], kind, data):
            return
        if kind == "tick":
            name, inc, t = data
            node = nodes[name]
            if node.state is None or node.incarnation != inc or node.next_tick != t:
                return
            self._step(node, Tick())
            if self._alive(node, inc):  # the step may have crashed it
                self._schedule_tick(node)
        elif kind == "depart":
            name, inc, to, msg, arrive = data
            node = nodes[name]
            if node.state is None or node.incarnation != inc:
                return  # the node crashed before its write was durable: never sent
            self._check_depart(node, msg)
            if isinstance(msg, Accept):
                self.proposed.add(msg.value)
            self._at(arrive, "deliver", (name, to, msg))
        elif kind == "deliver":
            src, to, msg = data
            node = nodes[to]
            if node.state is None or nodes[src].partition != node.partition:
                return
            if (src, to) in self.cut:
                return  # a one-way cut: this direction of the link drops everything
            self._step(node, Receive(src=src, msg=msg))
        elif kind == "write":
            name, inc, entry = data
            node = nodes[name]
            if node.incarnation != inc:
                return  # torn: the crash came first
            self._write_done(node, entry)
            if node.state is not None and not self._deferred(
                name, "event", (name, inc, Persisted(i=entry.i, n=entry.n))
            ):
                self._step(node, Persisted(i=entry.i, n=entry.n))
        elif kind == "promise":
            name, inc, n = data
            node = nodes[name]
            if node.incarnation != inc:
                return
            node.disk.promised_n = max(node.disk.promised_n, n)
        elif kind in ("reply", "fail"):
            name, inc, rid = data
            node = nodes[name]
            if node.incarnation != inc:
                return  # the node crashed before the write it waited for: never answered
            if kind == "reply":
                self._on_reply(node, rid)
            else:
                self.answered.add(rid)
        elif kind == "rebuilt":
            name, inc = data
            node = nodes[name]
            if node.incarnation != inc:
                return
            node.disk.rebuilding = False
            self.rebuilt += 1
            self._log(f"{name} REBUILT")
        elif kind == "lose_disk":
            node = nodes[data]
            if self._may_lose_disk(node):
                self._lose_disk(node)
        elif kind == "event":
            name, inc, event = data
            node = nodes[name]
            if node.state is not None and node.incarnation == inc:
                self._step(node, event)
        elif kind == "catchup":
            name, inc, source = data
            node = nodes[name]
            if node.state is not None and node.incarnation == inc:
                self._catchup(node, source)
        elif kind == "client":
            target, reqs = data
            node = nodes[target]
            if node.state is None:
                self.answered.update(r.rid for r in reqs)
                return
            self._step(node, ClientBatch(requests=reqs))
        elif kind in ("submit", "member_request"):
            (self._client_submit if kind == "submit" else self._member_request)()
        elif kind == "member":
            if nodes[data[0]].state is not None:
                self._step(nodes[data[0]], data[1])
        elif kind == "crash":
            if not self.calm:
                self._crash(nodes[data])
        elif kind == "restart":
            node = nodes[data]
            if node.state is None:
                self._start(node)
        elif kind == "partition":
            if self.calm:
                return
            for node in nodes.values():
                node.partition = 0
            side = [n for n in nodes if self.rng.random() < 0.4]
            for name in side:
                nodes[name].partition = 1
            self._log(f"PARTITION {side}")
            heal = self.rng.uniform(self.faults.partition_min, self.faults.partition_max) * self.L
            self._at(self.now + heal, "heal", None)
        elif kind == "heal":
            for node in nodes.values():
                node.partition = 0
            self._log("HEAL")
        elif kind == "drop_master":
            live = [n for n in nodes.values() if n.state is not None]
            if live:
                node = self.rng.choice(live)
                rid = -1 - self.next_rid
                self.next_rid += 1
                self._step(node, DropMaster(rid=rid))
        elif kind == "pause":
            node = nodes[data]
            if not self.calm and node.state is not None:
                length = self.rng.uniform(self.faults.pause_min, self.faults.pause_max) * self.L
                node.paused_until = max(node.paused_until, self.now + length)
                self._log(f"{data} PAUSED until {node.paused_until:.4f}")
        elif kind == "single_fault":
            self._single_fault(data)
        elif kind == "cut_add":
            self.cut.add(data)
        elif kind == "cut_remove":
            self.cut.discard(data)
        elif kind == "calm":
            self._calm()
        else:
            raise AssertionError(kind)

    def _calm(self) -> None:
        """The faulty phase ends: heal, restart, and maybe keep a minority down."""
        nodes = self.nodes
        self.calm = True
        # Liveness needs only a majority: sometimes a minority of voters stays down.
        kept_down: list[str] = []
        # The newest membership may be chosen without any node knowing it yet: a new leader
        # then still runs phase 1 for its slot under the one before, so the faults left must
        # be a minority of both. A rebuilding voter counts against that minority, and it
        # needs an answer from every voter to finish (R9), so none is kept down beside it.
        in_play = self._memberships_in_play()
        lost = [
            sum(1 for n in nodes.values() if n.disk.rebuilding and n.name in m.voters)
            for m in in_play
        ]
        self.unavailable_by_design = any(
            k > (len(m.voters) - 1) // 2 for k, m in zip(lost, in_play, strict=True)
        )
        minority = 0 if any(lost) else min((len(m.voters) - 1) // 2 for m in in_play)
        if minority and self.rng.random() < 0.3:
            candidates = [v for v in self.voters if not (self.mode == "forced" and v == "n0")]
            kept_down = self.rng.sample(candidates, self.rng.randint(1, minority))
        self._log(f"CALM: network healed, every node up except {kept_down}")
        if self.end_pauses_at_calm:
            self._end_pauses()
        for node in nodes.values():
            node.partition = 0
            if node.name in kept_down:
                self._crash(node)
            elif node.state is None:
                self._start(node)

    def _end_pauses(self) -> None:
        """The calm phase also ends the pauses under way. Without it a pause drawn just
        before the calm phase (up to 3 L) eats into its 8 L budget: seed 31201 (--disk-loss)
        had n4 paused 3 L into the calm phase beside two rebuilding voters that needed its
        answer, then an election and a preferred-mode hand-over, and every calm-phase request
        met a node that was not master (liveness only). The happenings a paused node put
        back to its pause's end move to now, in their order."""
        paused = {n.name: n.paused_until for n in self.nodes.values() if n.paused_until > self.now}
        if not paused:
            return
        for paused_name in paused:
            self.nodes[paused_name].paused_until = self.now
        moved = []
        for entry in self.queue:
            t, _, kind, data = entry
            at = _DEFERRABLE.get(kind)
            owner = None if at is None else data[at]
            if owner in paused and t == paused[owner]:
                entry = (self.now, *entry[1:])  # put back by _deferred: due now, same order
            moved.append(entry)
        self.queue = moved
        heapq.heapify(self.queue)
        self._log(f"CALM: the pauses of {sorted(paused)} end now")

    def _check_liveness(self) -> None:
        if self.unavailable_by_design:
            return  # more voters lost their state than the cluster tolerates: no quorum
        up = [v for v in self.voters if self.nodes[v].state is not None]
        if len(up) < len(self.voters) // 2 + 1:
            # A change asked for before the calm phase completed in it and left the voters
            # kept down a majority of the new membership (a 3-voter cluster with one down that
            # removes another voter): no quorum, by design.
            self._log(f"UNAVAILABLE BY DESIGN: voters {self.voters}, up {up}")
            return
        if self.now - self.last_master_at > self.L:
            raise self.fail("liveness", "no master after 8 calm lease periods")
        missing = [rid for rid in self.final_rids if rid not in self.acked]
        if missing:
            # A request sent to a node that was not master is refused; only those that reached
            # the master must commit. Resubmitting is the client's job, so judge only the ones a
            # master accepted: they must have been acknowledged.
            unanswered = [rid for rid in missing if rid not in self.answered]
            if unanswered:
                raise self.fail("liveness", f"calm-phase requests never answered: {unanswered}")
        if self.mode == "readonly":
            if self.acked:
                raise self.fail("read-only", f"{len(self.acked)} writes acknowledged")
            return
        if self.final_rids and not any(rid in self.acked for rid in self.final_rids):
            raise self.fail("liveness", "no calm-phase request committed")


def _fmt_value(v: Value) -> str:
    if isinstance(v, MasterSet):
        return f"MasterSet({v.node})"
    if isinstance(v, Membership):
        return f"Membership(voters={v.voters}, learners={v.learners})"
    if not v.payloads:
        return "Nop"
    return f"Batch({len(v.payloads)}{', sync' if v.sync else ''})"


def _fmt(obj: object) -> str:
    text = repr(obj)
    return text if len(text) < 200 else text[:197] + "..."


def run_seed(seed: int, *, trace: bool = False, step_fn: StepFn = step, **kw: Any) -> Result:
    return Sim(seed, trace=trace, step_fn=step_fn, **kw).run()
