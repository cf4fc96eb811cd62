# The private handlers take (config, state, ..., now, out) positionally on the hot path.
# ruff: noqa: PLR0917
# spec: docs/spec/multipaxos-design-notes.md
"""The transition rules of parakoon's Multi-Paxos core: ``step(config, state, event, now)``.

Theory of operation
===================

A cluster of voters agrees on a sequence of *slots* 0, 1, 2, ..., each holding one *value*: a
client :class:`~parakoon_paxos.types.Batch` or a lease value
:class:`~parakoon_paxos.types.MasterSet`. This module is the whole protocol of one node as a pure
function. It reads no clock (``now`` is an argument, the node's monotonic seconds), draws no
randomness of its own (a xorshift generator lives in the state, seeded by the driver), does no I/O
and logs nothing: what must happen in the world is returned as a list of *effects*, and what
happened in the world comes back as *events*. Section numbers (§5.2, S6, R2, ...) refer to
``multipaxos-design-notes.md``.

Ballots (§1). The voter of rank r (position in the sorted names) owns the ballots n > 0 with
n mod N = r, so a ballot names its owner; ``Accepted(n, i)`` goes to ``owner(n)``. Negative
ballots are probes that never win.

Roles. A node is in exactly one of four frozen states, each a subclass of :class:`Common` (the
ballot, applied slot, last log entry, lease view, respect window and generator every role has):
a role state *is* its common part, so helpers that only touch common fields take any role
(a TypeVar bound to ``Common``) and hand back the same role. Each step copies its state about
once, with a generated copier (:func:`evolve`), because copying frozen dataclasses is the
core's main cost; mypy checks every ``evolve`` call as ``dataclasses.replace`` (field names and
types), which the copier matches exactly.

* ``Follower``: accepts from the leader of the highest ballot it has seen, learns that slot i is
  chosen when slot i+1 arrives under the same ballot, and runs an election when its view of the
  lease has run out (checked L x 1.1-1.2 after the last lease it applied) and it has not
  accepted anything from a leader for L.
* ``Candidate``: has broadcast ``Prepare(n, i)`` with ``i = applied_i + 1`` and counts promises.
  Once Q promises (itself included) are in, it proposes the highest-ballot value any of them
  reported for slot i (**[stronger]**, textbook Paxos), or, if none, whatever an idle leader
  would propose. A candidate that a voter refused for a higher promise meanwhile runs again
  above it instead (that voter would refuse its Accepts and depose it at the first one).
* ``Leader``: one slot in flight (S5). A slot is chosen when the leader's own ``Persisted`` plus
  ``Accepted`` from distinct voters reach Q; it then emits ``Apply``, waits for ``Applied``,
  replies to the clients of that batch and proposes the next value: a lease renewal when due, else
  every queued client request up to the batch bounds, else a ``Nop`` right after a ``MasterSet``
  (followers learn a slot only when the next one arrives).
* ``CatchingUp``: has asked the driver (``StartCatchup``) to copy every chosen slot from a peer
  that is ahead; ``CatchupDone`` makes it a follower again.

Every node answers ``Prepare`` by §5.2 in order: learners' prepares are refused; a live lease
held by someone other than the sender makes the node ignore it (the lease guard); a stale ballot
or a candidate that is behind gets a ``Nak`` with our ballot and next slot; a recent promise to
another candidate (the respect window, L/4) makes us ignore it; otherwise we persist the promise
(**[stronger]**), answer ``Promise(n, my_next, entry at my_next)`` and follow, or catch up if the
candidate is ahead of us.

Following (§5.5), with ``a = applied_i``: an ``Accept(n', i')`` with ``n'`` below our ballot
gets a ``Nak`` (so a deposed leader learns quickly); ``i' = a + 1`` is written (it may replace an
unchosen last entry, S3); ``i' = a + 2`` when our last entry is ``(a + 1, n')`` first applies that
entry (the leader of n' proposes a+2 only once a+1 is chosen, and it proposed exactly one value at
a+1 under n', the one we hold) and then writes; ``i' <= a`` is re-acknowledged (or rewritten under
the newer ballot); anything further ahead means we are behind: catch up from the sender.

Leases (§5.6). The lease is a log value. A node that applies ``MasterSet(m)`` records the view
``(m, now)``; while ``now - start < L`` it ignores prepares from anyone but m. The leader starts
its own lease at the *proposal* time of a fresh ``MasterSet(me)`` and trusts it only for
``L * (1 - d) / (1 + d)``, d being ``Config.clock_drift``: every follower that applied the value
started later and measures a full L on a clock whose rate differs by at most d, so its guard ends
after the leader's belief does. A ``MasterSet`` re-proposed from an older ballot never grants the
leader a lease (its followers' views may have started long ago); and a new leader whose applied
view names another live holder (for instance because it just re-proposed that holder's lease)
waits until that view expires before proposing ``MasterSet(me)``. A restarted node that has a log
treats the remembered lease as starting now (R2), holder unknown if the driver cannot tell.

Effect contract
===============

``step`` returns ``(new_state, effects)``. The driver must:

1. Execute effects in list order, except that a ``Send``, ``Broadcast`` or ``Reply`` must not go
   out before every ``Persist`` / ``PersistPromise`` that precedes it *in the same list* is
   durable. The lists are built so that this is exactly what correctness needs: a leader's
   ``Broadcast(Accept)`` comes *before* its own ``Persist`` (it need not wait; it counts itself
   only on ``Persisted``), while ``Promise`` comes after the ``PersistPromise`` it depends on.
   A follower's ``Accepted`` is never in the list with its ``Persist``: it is emitted when the
   driver reports ``Persisted(i, n)``.
2. Answer every ``Persist(entry)`` with ``Persisted(entry.i, entry.n)`` once it is durable (a lost
   answer only delays the protocol; a false one breaks S2).
3. Execute ``Apply`` effects in the order emitted (they are in slot order, S4), each atomically
   with the store's ``applied_i`` (R6), and answer each with ``Applied(i, results)``: one result
   per payload of the batch. The leader replies to clients only after ``Applied`` (S9).
4. Answer ``StartCatchup`` with ``CatchupDone`` (after the copied slots are durable and applied)
   or ``CatchupFailed``. The source must serve only slots up to its own applied slot that are
   durable in its log (S8); ``CatchupDone.lease_holder`` names the newest ``MasterSet`` among the
   slots this transfer applied.
5. Call ``step`` with ``Tick()`` at least every ~L/20, or at ``next_deadline``.

A crash may cut an effect list anywhere: everything the core relies on after a restart comes
from ``Recovered``, i.e. from what ``Persist``/``PersistPromise``/``Apply`` made durable.

Deviations from the notes (deliberate): the election vote is the textbook highest-ballot rule
(§5.3 **[stronger]**); timers are deadlines in the state rather than ``StartTimer`` effects; a
stale ``Accept`` is answered with a ``Nak`` rather than ignored; after catch-up the node simply
follows (the next ``Accept`` tells it whether it is still behind) instead of probing with
``Prepare(-2)``; the R3 probe on restart is likewise left to the next ``Accept``. A non-preferred
node delays its elections by L/2 (rather than "1 + L/2 - retries" seconds), and the random
waits widen with the elections lost in a row instead (``_candidate_wait``, ``_check_delay``,
``Common.unsettled``). A leader that gets a
``Nak`` carrying a higher ballot runs again above it at once (a voter that lagged and ran for
election would otherwise refuse its Accepts for good; the lease guard keeps everyone else from
winning meanwhile). A follower that accepted from a leader within the last L does not run for
election even if its lease view ran out (liveness only: the renewal may be accepted there but not
yet applied).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypeVar, assert_never

from .types import (
    NOP,
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
    Commit,
    Config,
    DropMaster,
    Effect,
    Event,
    Fail,
    FailCode,
    LogEntry,
    MasterMode,
    MasterSet,
    MemberOp,
    Membership,
    Message,
    Nak,
    Persist,
    Persisted,
    PersistPromise,
    Prepare,
    PreVote,
    PreVoteOk,
    Promise,
    Rebuilt,
    Receive,
    Recovered,
    Reply,
    Role,
    RoleChanged,
    Send,
    StartCatchup,
    Tick,
    Value,
)

NEVER: Final = float("inf")
LONG_AGO: Final = float("-inf")
_MASK64: Final = (1 << 64) - 1
# How close (in slots) a preferred master must be before the leader hands over (§8).
PREFERRED_HANDOVER_SLOTS: Final = 5


class RecoveryError(ValueError):
    """``Recovered`` violates S3/R1 (e.g. the store is ahead of the log)."""


# ---------------------------------------------------------------------------------------------
# The client request queue: a persistent FIFO, so that a frozen leader state can hold it without
# copying it on every step. Appends cons a whole ClientBatch onto ``back`` (O(1)); the front is a
# tuple read from ``pos`` on; it is rebuilt from ``back`` only when exhausted (amortised O(1)).


@dataclass(frozen=True, slots=True)
class _Chunk:
    requests: tuple[ClientRequest, ...]
    prev: _Chunk | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestQueue:
    front: tuple[ClientRequest, ...] = ()
    pos: int = 0
    back: _Chunk | None = None
    size: int = 0

    def push(self, requests: tuple[ClientRequest, ...]) -> RequestQueue:
        return RequestQueue(
            front=self.front,
            pos=self.pos,
            back=_Chunk(requests, self.back),
            size=self.size + len(requests),
        )

    def _normalised(self) -> RequestQueue:
        if self.pos < len(self.front) or self.back is None:
            return self
        chunks: list[tuple[ClientRequest, ...]] = []
        node: _Chunk | None = self.back
        while node is not None:
            chunks.append(node.requests)
            node = node.prev
        front: list[ClientRequest] = []
        for chunk in reversed(chunks):
            front.extend(chunk)
        return RequestQueue(front=tuple(front), pos=0, back=None, size=self.size)

    def take(
        self, max_count: int, max_bytes: int
    ) -> tuple[tuple[ClientRequest, ...], RequestQueue]:
        """Up to ``max_count`` requests and ``max_bytes`` payload bytes (at least one)."""
        q = self
        taken: list[ClientRequest] = []
        nbytes = 0
        while len(taken) < max_count and q.size > 0:
            q = q._normalised()
            front, pos = q.front, q.pos
            end = len(front)
            start = pos
            while pos < end and len(taken) < max_count:
                req = front[pos]
                # The first request goes even if it alone exceeds max_bytes: refusing it would
                # block the queue behind it for ever.
                if taken and nbytes + len(req.payload) > max_bytes:
                    break

                taken.append(req)
                nbytes += len(req.payload)
                pos += 1
            q = RequestQueue(front=front, pos=pos, back=q.back, size=q.size - (pos - start))
            if pos < end:
                break  # a bound was hit inside this front
        return tuple(taken), q

    def all(self) -> tuple[ClientRequest, ...]:
        reqs, _ = self.take(self.size or 1, 1 << 62)
        return reqs


EMPTY_QUEUE: Final = RequestQueue()


# ---------------------------------------------------------------------------------------------
# States.


@dataclass(frozen=True, slots=True, kw_only=True)
class Rebuild:
    """Progress of a voter that lost its durable state (R9) towards voting again.

    Such a node forgot the promises and accepts that other nodes counted on, so it must not
    vote until nothing it could have promised or accepted can matter any more. It probes every
    other voter with ``Prepare(probe_n, ...)`` (a fresh negative ballot, so that only answers to
    probes sent *after* the loss count) and records each answer. Once every other voter has
    answered, either as intact (its ballot and next slot) or as rebuilding itself:

    * ``target`` = the highest next slot reported + 1. Any slot x this node accepted before
      the loss was proposed only after x - 1 was chosen (one slot in flight, S5), so a quorum
      held x - 1 before the loss; every quorum has an intact member (else more nodes lost their
      state than the cluster tolerates), and that member answered with a next slot >= x - 1.
      So every forgotten accept lies at or below ``target``, and once this node has applied
      ``target`` (learnt from others, never from its own vote) it holds the chosen value of
      every slot it may once have voted on.
    * ``floor`` = the highest ballot reported. A forgotten promise was for a ballot some voter
      owned and had adopted; that voter, if still intact, answered with a ballot at least as
      high, so adopting ``floor`` honours every forgotten promise a live candidate could use.
      (A candidate that lost its own state forgot its candidacy with it.)

    This is the rule of "Paxos Made Live" §5.1 (rejoin after seeing a complete instance that
    began after the rebuild started), made concrete: the instance is slot ``target``, and the
    answers of *every* voter, not just a quorum, bound the forgotten ballots.
    """

    probe_n: int
    probe_at: float
    answers: tuple[tuple[str, int, int], ...] = ()  # (voter, its ballot, its next slot)
    waived: frozenset[str] = frozenset()  # voters that answered "rebuilding too"
    target: int | None = None
    floor: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Common:
    """What every role has.

    ``n`` is the highest ballot promised, followed or owned (persisted as ``promised_n`` or
    implied by a persisted log entry); ``applied_i`` the highest slot known chosen and handed to
    ``Apply``; ``last`` the newest log entry written or being written (``last.i`` is
    ``applied_i`` or ``applied_i + 1``, S3) and ``last_durable`` whether its ``Persisted`` came.
    The lease view is ``(lease_holder, lease_start)``; a holder of ``None`` with a finite start
    means "someone, unknown" (R2).
    """

    n: int
    # The highest ballot heard of in any message, promised or not: our next election starts
    # above it, so that it is not refused at once by voters that promised a higher one.
    max_seen: int
    applied_i: int
    last: LogEntry | None
    last_durable: bool
    lease_holder: str | None
    lease_start: float
    # The candidate we last promised, and until when other candidates are ignored (§5.2 rule 4).
    respect: str | None
    respect_until: float
    # The xorshift64 generator state: randomness lives in the state so that ``step`` stays a
    # pure function and the simulator replays a seed exactly.
    rng: int
    # Not None while the node rebuilds lost state (R9). No default on purpose: every role
    # change builds the new state field by field, and a forgotten rebuild would let a node
    # that lost its promises vote again; mypy reports a constructor call that omits it.
    rebuild: Rebuild | None
    # Elections lost in a row since we last accepted from a leader. A candidate's random wait
    # widens with it (``_candidate_wait``), and it survives the follower spells between two
    # attempts: a candidate that lost to a rival's Prepare becomes a follower, and when that
    # rival failed too it runs again from the follower's timer. Counting from zero there kept
    # two or three candidates in lock step for seconds when every live voter was needed (sim
    # seeds 252048 and 19371, --disk-loss). Liveness only; no safety rule reads it.
    unsettled: int
    # The replicated membership in force for our next slot (the newest ``Membership`` we
    # applied) and this node's configuration under it; both None while the static one of
    # ``step``'s ``config`` is in force. No defaults, like ``rebuild``: a role change that
    # forgot them would put a node back under a membership the cluster has left.
    members: Membership | None
    conf: Config | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Follower(Common):
    """``heard_at``: when we last accepted from a leader (for the record and for the first
    check after a rebuild). It no longer holds back elections: a leader that still sends but
    cannot get its renewals chosen (it cannot hear its followers) must be replaced, and commit
    notices apply every renewal at once, so a live leader renews our view every L/2.
    """

    leader: str | None
    check_at: float
    heard_at: float = LONG_AGO


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate(Common):
    i: int  # the slot we run for: applied_i + 1
    own: LogEntry | None  # our own entry at slot i: our promise's report, if our votes count
    promises: tuple[tuple[str, Promise], ...]  # at most one per other voter
    deadline: float  # when to run again, higher, without a quorum
    retries: int  # failed attempts in a row: the random part of the wait grows with it
    # Pre-vote: while ``pre`` is true the candidate has only asked whether the voters would
    # promise ``pre_n`` (its ballot ``n`` is unchanged, nothing persisted) and ``pre_ok`` holds
    # who said yes; a quorum of yeses starts the real election with ``pre_n``.
    pre: bool = False
    pre_n: int = 0
    pre_ok: frozenset[str] = frozenset()
    # A voter refused our Prepare because it promised a higher ballot (typically a rival that
    # ran at the same moment). It would refuse every Accept of ours too, so ``_decide`` runs
    # again above it instead of leading (see there).
    outbid: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Proposal:
    """The leader's slot in flight (S5: there is at most one)."""

    i: int
    value: Value
    # The client of each payload, in order; empty for a lease, a Nop or a value re-proposed
    # from an older ballot (whose clients the leader that lost them has failed).
    rids: tuple[int, ...]
    acks: frozenset[str]  # other voters that sent Accepted(n, i) for our ballot
    self_durable: bool  # our own Persisted came: our vote counts (not before, contract 1)
    chosen: bool  # a quorum holds it and Apply was emitted; waiting for Applied
    resend_at: float
    # For a fresh MasterSet(me): our lease runs from here, not from when it is chosen (§5.6).
    proposed_at: float
    # Proposed by us, in this term, as our own lease. A MasterSet(me) re-proposed from an
    # older ballot is not: followers may have applied it long ago, so it grants nothing.
    fresh_lease: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Leader(Common):
    prop: Proposal | None
    queue: RequestQueue  # client requests waiting for the next slot (batched when it frees)
    # The start of the lease *we* hold, which lease_valid trusts only for the shorter
    # ``Config.leader_lease``; the lease view in Common is what every node's guard uses.
    my_lease_start: float
    # When the next MasterSet(me) is due; while a foreign lease runs out, when the next
    # heartbeat Nop is.
    renew_at: float
    need_nop: bool  # a MasterSet was just chosen: followers apply it only when a next slot comes
    drop_rids: tuple[int, ...]  # DropMaster requests, answered when we step down

    drop_deadline: float  # NEVER unless dropping
    pref_i: int  # highest slot the preferred master acknowledged (preferred mode)
    pref_check_at: float
    # Membership changes: the one waiting for a free slot (its rid and the new membership),
    # the rid of the one in flight, and the highest slot each learner acknowledged (a learner
    # is promoted only once it holds our latest slot).
    change: tuple[int, Membership] | None = None
    change_rid: int | None = None
    learner_at: tuple[tuple[str, int], ...] = ()
    # Batch linger (docs/paxos.md): after answering a client slot, how many requests we expect
    # in the next batch (those queued then plus one back from each client just answered), and
    # until when an idle leader may wait for them. ``expect`` 0: no linger under way.
    expect: int = 0
    linger_until: float = LONG_AGO


@dataclass(frozen=True, slots=True, kw_only=True)
class CatchingUp(Common):
    """``replay``: the newest Accept that arrived (or triggered the catch-up), with its sender;
    it is handled as soon as the transfer is done, so the node rejoins the slot in flight
    instead of always trailing the leader by one slot."""

    source: str
    from_i: int
    replay: tuple[str, Accept] | None = None


State: TypeAlias = Follower | Candidate | Leader | CatchingUp


# ---------------------------------------------------------------------------------------------
# Copy-with-changes for the frozen states. ``dataclasses.replace`` walks ``fields()`` and calls
# the frozen ``__init__`` (about 3 us for Common); every event copies one or two states, so the
# hot path uses a copier generated once per class (about 1 us): it allocates the instance and
# sets each slot, taking the new value where one was given. The result is equal to what
# ``replace`` returns (tests check this for every state class), which is why mypy may check the
# call sites against ``replace``: its dataclasses plugin knows each class's fields, so a wrong
# field name or type at any ``evolve`` call fails ``mypy --strict``. The copier itself takes
# ``**Any``; only the run time uses it.

_T = TypeVar("_T")
_S = TypeVar("_S", bound="Common")
_UNSET: Final = object()
_EVOLVERS: dict[type, Any] = {}


def _make_evolver(cls: type) -> Any:
    names = [f.name for f in fields(cls)]
    params = ", ".join(f"{n}=_UNSET" for n in names)
    body = "\n".join(f"    _set(x, {n!r}, o.{n} if {n} is _UNSET else {n})" for n in names)
    source = f"def evolve(o, *, {params}):\n    x = _new(_cls)\n{body}\n    return x\n"
    namespace: dict[str, Any] = {
        "_UNSET": _UNSET,
        "_new": object.__new__,
        "_set": object.__setattr__,
        "_cls": cls,
    }
    exec(source, namespace)  # the same technique dataclasses uses to build __init__
    return namespace["evolve"]


def _fast_evolve(obj: _T, /, **changes: Any) -> _T:
    """``dataclasses.replace`` for the core's frozen classes, faster (run-time ``evolve``)."""
    try:
        fn = _EVOLVERS[type(obj)]
    except KeyError:
        fn = _EVOLVERS[type(obj)] = _make_evolver(type(obj))
    result: _T = fn(obj, **changes)
    return result


if TYPE_CHECKING:
    from dataclasses import replace as evolve
else:
    evolve = _fast_evolve


# ---------------------------------------------------------------------------------------------
# Small pure helpers.


def _draw(rng: int) -> tuple[float, int]:
    """One step of the xorshift64 generator: a float in [0, 1) and the next generator state."""
    x = rng
    x ^= (x << 13) & _MASK64
    x ^= x >> 7
    x ^= (x << 17) & _MASK64
    return (x >> 11) / float(1 << 53), x


def _rand(c: _S) -> tuple[float, _S]:
    """A float in [0, 1) from the state's generator, and the state with the generator advanced."""
    r, x = _draw(c.rng)
    return r, evolve(c, rng=x)


def owner(config: Config, n: int) -> str:
    """The voter that owns ballot ``n`` (n > 0)."""
    return config.sorted_voters[n % len(config.sorted_voters)]


def next_ballot(config: Config, above: int) -> int:
    """My smallest ballot strictly greater than ``above`` (and > 0)."""
    size = len(config.sorted_voters)
    b = (max(above, 0) // size) * size + config.rank
    while b <= above or b <= 0:
        b += size
    return b


def _lease_live(config: Config, c: Common, now: float) -> bool:
    """Is the lease we know of still running, as far as our guard is concerned?

    A full L from when we applied it (or restarted, R2): the guard side of §5.6. It never
    lets us serve as master; that is ``lease_valid``, with the shorter ``leader_lease``.
    """
    return now - c.lease_start < config.lease_period


def _respecting(c: Common, other: str, now: float) -> bool:
    """Inside the respect window for a candidate other than ``other`` (§5.2 rule 4)."""
    return c.respect is not None and c.respect != other and now < c.respect_until


def _votes(config: Config, c: Common) -> bool:
    """May this node's promises and accepts count (a voter that is not rebuilding, R9)?"""
    return config.is_voter and c.rebuild is None


def _can_elect(config: Config, c: Common) -> bool:
    if config.master_mode is MasterMode.FORCED:
        # Nobody else may ever lead, so a forced master that lost its state still runs; it
        # never counts its own promise or accept (a proposer needs no acceptor state), so it
        # needs every quorum from the others until a restart finds it rebuilt. But only once
        # every voter has answered its probe: it forgot which ballots it used, and running
        # with one of them again could propose a second value under one ballot (S1, sim
        # seed 171287 with disk loss); the answers' floor puts its next ballot above them all.
        return (
            config.is_voter
            and config.master == config.me
            and (c.rebuild is None or c.rebuild.target is not None)
        )
    return _votes(config, c)


def _check_delay(config: Config, r: float, unsettled: int = 0) -> float:
    """The follower's lease-check margin after the view expires (§8: L x 0.1-0.2 past L).

    After lost elections (``unsettled``) the random part widens (0.1 L, then 0.4 L, 0.8 L, at
    most 1 L): followers that gave up their own candidacies at about the same moment would
    otherwise run again within a few milliseconds of each other and split the votes again.
    """
    extra = 0.0
    if config.preferred and config.me != config.master:
        extra = config.lease_period / 2  # let the preferred master win the race
    spread = 0.1 if unsettled == 0 else min(1.0, 0.4 * unsettled)
    return config.lease_period * (0.1 + spread * r) + extra


def _candidate_wait(config: Config, r: float, retries: int) -> float:
    """How long a candidate waits for a quorum before it runs again, higher.

    L/2 plus a random part, so that two candidates do not pre-empt each other in lock step. The
    random part widens with each failed attempt (0.05 L, then 0.25 L, 0.5 L, at most 0.75 L):
    when every live voter is needed (a 5-voter cluster with two voters down or rebuilding), two
    candidates whose timers fall within one pre-vote and Prepare round trip of each other both
    lose, and with a fixed 0.05 L spread they kept losing for seconds (sim seed 252048,
    --disk-loss). In preferred mode the others wait L/2 longer, so the preferred master wins
    the race when it is up.
    """
    spread = 0.1 if retries == 0 else min(1.5, 0.5 * retries)
    wait = config.lease_period / 2 * (1.0 + spread * r)
    if config.preferred and config.me != config.master:
        wait += config.lease_period / 2
    return wait


def _take_members(config: Config, c: _S, value: Membership, now: float) -> _S:
    """We applied a chosen ``Membership``: every later slot runs under it.

    A rebuilding node starts its probe again (R9): the answers it collected came from the old
    voters, and the bound they gave says nothing about the quorums of the new membership.
    """
    rb = c.rebuild
    if rb is not None:
        probe = 3 + ((c.rng >> 11) % (1 << 40))
        _, c = _rand(c)
        rb = Rebuild(probe_n=-probe, probe_at=now)
    return evolve(c, members=value, conf=config.with_members(value), rebuild=rb)


def _entry_at(c: Common, i: int) -> LogEntry | None:
    last = c.last
    return last if last is not None and last.i == i else None


# ---------------------------------------------------------------------------------------------
# Construction and queries.


def initial_state(config: Config, recovered: Recovered, now: float, seed: int) -> State:
    """The state of a node that has just started from ``recovered`` (rules R1-R3).

    The node is always a follower at first; its first lease check is due at once when it may run
    an election right away (empty log, single voter, forced master), else one lease period plus
    the check margin from ``now`` (R2: a remembered lease counts as starting now).
    """
    last, applied = recovered.last, recovered.applied_i
    members = recovered.membership
    conf = config.with_members(members) if members is not None else None
    config = conf or config
    if applied < -1:
        raise RecoveryError(f"Recovered.applied_i: {applied} < -1")
    if last is None:
        if applied != -1:
            raise RecoveryError(f"Recovered: store applied slot {applied} but the log is empty")
    elif not applied <= last.i <= applied + 1:
        raise RecoveryError(
            f"Recovered: log ends at slot {last.i} but the store applied {applied}; the log must "
            "be replayed up to last_i - 1 before start (R1), and a store ahead of the log is fatal"
        )
    # A durable entry of ballot n means we followed n (S6), even if the promise record is older.
    n = max(recovered.promised_n, last.n if last is not None else 0)
    # Xorshift never leaves the state 0: map every seed to a non-zero state, spreading
    # consecutive seeds apart (the multiplier is the 64-bit golden ratio).
    rng = (seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & _MASK64 or 0x2545F4914F6CDD1D
    # R2: a node that took part in the cluster may have helped grant a lease just before it
    # stopped; it cannot tell when, so it honours one for a full L from now. A lone voter has
    # nobody to defer to.
    remembered = last is not None or recovered.lease_holder is not None or recovered.quiet_start
    # A node that lost its state is never alone: its cluster.toml may be from before the
    # cluster grew (a voter that was the only one once), and the replicated membership it
    # would learn from its peers is what its votes must respect (R9).
    alone = len(config.sorted_voters) == 1 and not recovered.rebuilding
    lease_start = now if remembered and not alone else LONG_AGO
    rebuild = None
    # Learners rebuild too: one that lost its state may be promoted later, and must not vote
    # on slots it may have acknowledged before the loss (R9).
    if recovered.rebuilding and config.member:
        # A fresh probe ballot, -3, -4, ... (R9): random, so that answers to an earlier
        # incarnation's probes do not count; -1 and -2 are the notes' R3 and catch-up probes.
        probe = 3 + ((rng >> 11) % (1 << 40))
        rebuild = Rebuild(probe_n=-probe, probe_at=now)

    c = Follower(
        leader=None,
        check_at=NEVER,
        n=n,
        max_seen=n,
        applied_i=applied,
        last=last,
        last_durable=True,
        lease_holder=recovered.lease_holder,
        lease_start=lease_start,
        respect=None,
        respect_until=LONG_AGO,
        rng=rng,
        rebuild=rebuild,
        unsettled=0,
        members=members,
        conf=conf,
    )
    r, c = _rand(c)
    forced_master = config.master_mode is MasterMode.FORCED and config.master == config.me
    if rebuild is not None and not forced_master:
        return evolve(c, check_at=NEVER)  # never a candidate while rebuilding
    if forced_master or alone or lease_start == LONG_AGO:
        # A cold start: a short random delay so that not every voter prepares at once.
        check_at = now if forced_master or alone else now + config.lease_period * 0.05 * r
    else:
        check_at = lease_start + config.lease_period + _check_delay(config, r)
    return evolve(c, check_at=check_at)


def effective_config(config: Config, state: State) -> Config:
    """The configuration ``state`` runs under: the static ``config`` until the node applied a
    replicated membership, then ``config`` under that membership (``Config.with_members``).
    Drivers use its ``peers`` and ``other_voters`` to carry out ``Broadcast``."""
    return state.conf or config


def members(state: State) -> Membership | None:
    """The replicated membership in force (None: the static configuration's)."""
    return state.members


def role(state: State) -> Role:
    match state:
        case Follower():
            return Role.FOLLOWER
        case Candidate():
            return Role.CANDIDATE
        case Leader():
            return Role.LEADER
        case CatchingUp():
            return Role.CATCHING_UP
        case _:
            assert_never(state)


def applied_i(state: State) -> int:
    return state.applied_i


def ballot(state: State) -> int:
    return state.n


def lease_valid(config: Config, state: State, now: float) -> bool:
    """Am I master with a valid lease (may serve consistent reads and accept writes)?"""
    return (
        isinstance(state, Leader)
        and state.my_lease_start <= now
        and now - state.my_lease_start < config.leader_lease
    )


def master(config: Config, state: State, now: float) -> str | None:
    """Who this node believes is master now (``None`` when nobody, as far as it knows)."""
    if lease_valid(config, state, now):
        return config.me
    # Our own name only ever comes from lease_valid: the (longer) view of our own lease that
    # followers keep is not a licence for us.
    if state.lease_holder not in (None, config.me) and _lease_live(config, state, now):
        return state.lease_holder
    return None


def next_deadline(config: Config, state: State) -> float | None:
    """The earliest time at which a ``Tick`` may change something (``None``: only events will)."""
    config = state.conf or config
    t = NEVER
    match state:
        case Follower(check_at=check_at):
            if _can_elect(config, state):
                t = check_at
            elif state.rebuild is not None and state.rebuild.target is None:
                # Until every voter answered our probe, only re-probing is due (R9).
                t = state.rebuild.probe_at
        case Candidate(deadline=deadline):
            t = deadline
        case Leader():
            prop = state.prop
            if prop is not None:
                if not prop.chosen:
                    t = prop.resend_at
            elif state.drop_deadline == NEVER:
                # A dropping leader renews nothing: only the drop deadline matters.
                t = state.renew_at
                if 0 < state.queue.size < state.expect:
                    t = min(t, state.linger_until)  # the batch held back goes out then
                if state.lease_holder != config.me and state.lease_start != LONG_AGO:
                    # Our own lease can only be proposed once the foreign one runs out; until
                    # then renew_at paces the Nops that keep the followers hearing from us.
                    t = min(t, state.lease_start + config.lease_period)
            t = min(t, state.drop_deadline, state.pref_check_at)
        case CatchingUp():
            pass
        case _:
            assert_never(state)
    return None if t == NEVER else t


# ---------------------------------------------------------------------------------------------
# The step function.


def step(config: Config, state: State, event: Event, now: float) -> tuple[State, list[Effect]]:
    """Apply one event; return the new state and the effects to execute (see the contract)."""
    out: list[Effect] = []
    if state.conf is not None:
        config = state.conf  # a replicated membership is in force (see "Membership changes")
    match event:  # most frequent first
        case Receive(src=src, msg=msg):
            new = _on_message(config, state, src, msg, now, out)
        case Persisted(i=i, n=n):
            new = _on_persisted(config, state, i, n, now, out)
        case Applied(i=i, results=results):
            new = _on_applied(config, state, i, results, now, out)
        case Tick():
            new = _on_tick(config, state, now, out)
        case ClientBatch(requests=requests):
            new = _on_client(config, state, requests, now, out)
        case CatchupDone():
            new = _on_catchup_done(config, state, event, now, out)
        case CatchupFailed(source=source):
            # A failure reported for another source belongs to a transfer we no longer wait for.
            if isinstance(state, CatchingUp) and state.source == source:
                new = _become_follower(config, state, None, now, out)
            else:
                new = state
        case DropMaster(rid=rid):
            new = _on_drop_master(config, state, rid, now, out)
        case ChangeMembership():
            new = _on_change(config, state, event, now, out)
        case _:
            assert_never(event)
    # R9: a rebuilding follower learns its target slot through any event (Accept, CatchupDone,
    # Nak answers), so the check that it may vote again runs after every one of them.
    if new.rebuild is not None and isinstance(new, Follower):
        new = _maybe_rebuilt(config, new, new.rebuild, now, out)
    return new, out


# --- ticks ------------------------------------------------------------------------------------


def _on_tick(config: Config, state: State, now: float, out: list[Effect]) -> State:
    match state:
        case Follower():
            if state.rebuild is not None and (
                state.rebuild.target is None or not _can_elect(config, state)
            ):
                return _rebuild_tick(config, state, state.rebuild, now, out)
            if now < state.check_at or not _can_elect(config, state):
                return state
            forced = config.master_mode is MasterMode.FORCED
            if forced:
                return _start_election(config, state, 0, now, out)
            # Our lease view ran out: the leader's renewals stopped being chosen (commit
            # notices apply each one at once, so a live leader renews our view every L/2).
            # A leader that still sends but cannot get its renewals chosen (it cannot hear its
            # followers) is no reason to wait: ask for a pre-vote.
            if not _lease_live(config, state, now) and now >= state.respect_until:
                lease_end = state.lease_start + config.lease_period
                if now < lease_end + _check_delay(config, 0.0):
                    # This check was set before the renewal we applied last: run only the
                    # margin past that lease's real end, so that the preferred master (L/2
                    # ahead) and the random spread still decide who runs first. Without it
                    # a non-preferred follower could run the moment a handed-over lease
                    # ended and win, and the hand-over started again (sim seed 14715).
                    r, s = _rand(state)
                    return evolve(s, check_at=lease_end + _check_delay(config, r, s.unsettled))
                return _start_prevote(config, state, state.unsettled, now, out)
            # Not yet: check again once the latest of the reasons to wait has passed, plus a
            # random margin so that the followers of a dead leader do not all run at once.
            r, s = _rand(state)
            base = max(s.lease_start + config.lease_period, s.respect_until, now)
            return evolve(s, check_at=base + _check_delay(config, r, s.unsettled))
        case Candidate():
            if now < state.deadline:
                return state
            # No quorum in time: ask again (a pre-vote, so that a candidate that cannot win,
            # e.g. one that cannot hear, never keeps raising its ballot over a live master).
            return _start_prevote(config, state, state.retries + 1, now, out)
        case Leader():
            return _leader_tick(config, state, now, out)
        case CatchingUp():
            return state
        case _:
            assert_never(state)


def _leader_tick(config: Config, s: Leader, now: float, out: list[Effect]) -> Leader | State:
    if now >= s.drop_deadline:
        # Nobody took over within 2.2 L after a drop-master: run an election ourselves (§5.7).
        # 2.2 L is past any follower's lease view plus its check margin, so every live
        # follower has had its chance; without this a dropped cluster could stay masterless.
        _step_down(config, s, out)
        return _run_or_follow(config, s, now, out)
    if config.preferred and now >= s.pref_check_at:
        s = evolve(s, pref_check_at=now + config.lease_period)
        pref = config.master
        if (
            pref is not None
            and pref != config.me
            and s.drop_deadline == NEVER
            and s.pref_i >= 0  # it has acknowledged something in this term: it is alive
            and s.pref_i >= s.applied_i - PREFERRED_HANDOVER_SLOTS
        ):
            # Hand over to the preferred master: stop renewing and let the leases run out.
            s = evolve(s, drop_deadline=now + 2.2 * config.lease_period)
    prop = s.prop
    if (
        prop is not None
        and not prop.chosen
        and now - prop.proposed_at >= config.lease_period
        and not lease_valid(config, s, now)
    ):
        # Our lease is gone and our slot has not been chosen for a whole lease period: we can
        # send but hear no quorum (a one-way partition, or our followers moved on). Step down
        # instead of re-sending for ever: our followers run once their lease views end, and
        # our Accepts would only keep the picture muddled.
        _step_down(config, s, out)
        return _become_follower(config, s, None, now, out)
    if prop is not None:
        if prop.chosen or now < prop.resend_at:
            return s
        # The network may lose an Accept or its Accepted: re-send the slot in flight to the
        # voters that have not acknowledged it (they re-acknowledge duplicates), every L/4 or
        # so, well inside the lease, so one lost message cannot cost the leader its lease.
        r, rng = _draw(s.rng)
        msg = Accept(n=s.n, i=prop.i, value=prop.value)
        for v in config.other_voters:
            if v not in prop.acks:
                out.append(Send(to=v, msg=msg))
        resend_at = now + config.lease_period / 4 * (1.0 + 0.1 * r)
        return evolve(s, rng=rng, prop=evolve(prop, resend_at=resend_at))
    return _maybe_propose(config, s, now, out)


# --- client requests and admin ------------------------------------------------------------------


def _on_client(
    config: Config,
    state: State,
    requests: tuple[ClientRequest, ...],
    now: float,
    out: list[Effect],
) -> State:
    # A dropping leader takes no new work: it is handing over, and what it queued now would
    # only be failed when it steps down.
    if not isinstance(state, Leader) or state.drop_deadline != NEVER:
        out.extend(Fail(rid=r.rid, code=FailCode.NOT_MASTER) for r in requests)
        return state
    if config.master_mode is MasterMode.READONLY:
        out.extend(Fail(rid=r.rid, code=FailCode.READ_ONLY) for r in requests)
        return state
    # max_queued bounds what a slow quorum makes us hold in memory: the excess fails at once
    # rather than waiting without bound.

    room = config.max_queued - state.queue.size
    if room < len(requests):
        out.extend(Fail(rid=r.rid, code=FailCode.OVERLOADED) for r in requests[max(room, 0) :])
        requests = requests[: max(room, 0)]
    if not requests:
        return state
    s = evolve(state, queue=state.queue.push(requests))
    return _maybe_propose(config, s, now, out)


def _on_drop_master(config: Config, state: State, rid: int, now: float, out: list[Effect]) -> State:
    if len(config.sorted_voters) == 1 or config.master_mode is MasterMode.FORCED:
        out.append(Fail(rid=rid, code=FailCode.NOT_SUPPORTED))
        return state
    if not isinstance(state, Leader):
        out.append(Fail(rid=rid, code=FailCode.NOT_MASTER))
        return state
    deadline = state.drop_deadline
    if deadline == NEVER:
        # A second DropMaster joins the first: pushing the deadline back on every request
        # would let a client keep the cluster masterless.
        deadline = now + 2.2 * config.lease_period
    # Requests already queued may still go out while the lease lasts; new ones are refused.
    s = evolve(state, drop_rids=(*state.drop_rids, rid), drop_deadline=deadline)
    if state.drop_deadline == NEVER and s.prop is None and s.queue.size > 0:
        # Only a batch held by the linger waits here (without one, an idle leader that is not
        # dropping has an empty queue), and a dropping leader never lingers: send it now.
        return _maybe_propose(config, s, now, out)
    return s


# --- persistence and application -------------------------------------------------------------


def _on_persisted(
    config: Config, state: State, i: int, n: int, now: float, out: list[Effect]
) -> State:
    last = state.last
    # Only the newest entry can be waiting for its Persisted (S3 keeps one entry beyond the
    # applied slot); an answer that does not name it exactly is for an entry since rewritten,
    # and counting it would vote for a value we no longer hold (S2).
    if last is None or last.i != i or last.n != n or state.last_durable:
        return state
    if isinstance(state, Leader):
        prop = state.prop
        if prop is not None and prop.i == i and n == state.n and not prop.self_durable:
            # The leader counts its own vote only now, never when it broadcasts (contract 1).
            prop = evolve(prop, self_durable=True)
            return _maybe_chosen(config, state, prop, now, out, last_durable=True)
        return evolve(state, last_durable=True)
    # A follower's Accepted leaves only once its copy is durable, and goes to the ballot's
    # owner (who proposed it) rather than to whoever we think leads: the two differ after a
    # hand-over, and only the owner counts votes for ballot n.
    # Learners acknowledge too (never counted): the leader promotes only a learner that holds
    # its latest slot.
    if config.member and state.rebuild is None and n > 0 and owner(config, n) != config.me:
        out.append(Send(to=owner(config, n), msg=Accepted(n=n, i=i)))
    return evolve(state, last_durable=True)


def _on_applied(
    config: Config,
    state: State,
    i: int,
    results: tuple[object, ...],
    now: float,
    out: list[Effect],
) -> State:
    if not isinstance(state, Leader):
        return state  # followers apply too, but have nobody to answer
    prop = state.prop
    if prop is None or not prop.chosen or prop.i != i:
        # The answer to an Apply emitted in another role or term (the driver answers every
        # Apply): no client of ours waits on it.
        return state
    value = prop.value
    # Contract 3, asserted: one result per payload (none for a lease or a Nop). Padding a
    # short answer would reply None to a client whose update may have failed.
    assert len(results) == (len(value.payloads) if isinstance(value, Batch) else 0), (
        f"Applied({i}): {len(results)} results for {value!r}"
    )
    assert state.applied_i == i, f"Applied({i}) with applied_i={state.applied_i}"
    if isinstance(value, Membership):
        return _after_change(config, state, value, now, out)
    # A value re-proposed from an older ballot has no rids: its clients were failed by the
    # leader that lost them, so nobody is waiting here.
    for rid, result in zip(prop.rids, results, strict=False):
        out.append(Reply(rid=rid, result=result))
    if config.batch_linger > 0 and prop.rids:
        # Closed-loop clients answered now send their next request within moments; proposing
        # the queue at once would leave them for the slot after, and the clients would settle
        # into groups that take turns, each waiting two slots. Wait for them a little (at most
        # half this slot's time), so that one slot carries everyone.
        state = evolve(
            state,
            expect=min(len(prop.rids) + state.queue.size, config.max_batch_count),
            linger_until=now + min(config.batch_linger, (now - prop.proposed_at) / 2),
        )
    new = _maybe_propose(config, state, now, out, idle=True)
    if (
        isinstance(new, Leader)
        and new.prop is None
        and not _lingering(new, now)
        and (config.other_voters or config.learners)
    ):
        # Idle now: tell followers and learners slot i is chosen, so that they apply it now
        # rather than when the next slot comes (up to a lease renewal later).
        out.append(Broadcast(msg=Commit(n=state.n, i=i)))
    return new


def _after_change(
    config: Config, s: Leader, value: Membership, now: float, out: list[Effect]
) -> State:
    """Our ``Membership`` is chosen and applied: answer its requester, then run again.

    Ballots are owned by rank among the voters, and the ranks of the new membership differ
    from the old ones', so the ballot we led with may now name another voter: we never lead a
    slot of the new membership with it. A fresh election (no pre-vote: the lease guard of
    our followers still names us) gives us a ballot of the new membership, and our first value
    under it is a fresh lease, granted by a quorum of the new voters. A leader that is no
    longer a voter steps down; the others elect once its lease has run out.
    """
    assert config is s.conf, "the leader runs under the membership it just applied"
    if s.change_rid is not None:
        out.append(Reply(rid=s.change_rid, result=value))
    s = evolve(s, change_rid=None, prop=None)
    _step_down(config, s, out)
    return _run_or_follow(config, s, now, out)


def _run_or_follow(config: Config, s: Leader, now: float, out: list[Effect]) -> State:
    """A leader that stepped down runs again at once, if the membership in force still lets it
    (between choosing its own removal and its Applied it does not)."""
    if _can_elect(config, s):
        return _start_election(config, s, 0, now, out)
    return _become_follower(config, s, None, now, out)


def _on_change(
    config: Config, state: State, ev: ChangeMembership, now: float, out: list[Effect]
) -> State:
    """A membership change request: one node added, promoted or removed (see the theory)."""
    if config.master_mode is MasterMode.FORCED:
        out.append(Fail(rid=ev.rid, code=FailCode.NOT_SUPPORTED))
        return state
    if not isinstance(state, Leader) or state.drop_deadline != NEVER:
        out.append(Fail(rid=ev.rid, code=FailCode.NOT_MASTER))
        return state
    if (
        state.change is not None
        or state.change_rid is not None
        or (state.prop is not None and isinstance(state.prop.value, Membership))
        or not lease_valid(config, state, now)
    ):
        # One change at a time, and only under a lease the current voters granted.
        out.append(Fail(rid=ev.rid, code=FailCode.MEMBERSHIP_BUSY))
        return state
    members = _changed(config, state, ev)
    if isinstance(members, FailCode):
        out.append(Fail(rid=ev.rid, code=members))
        return state
    return _maybe_propose(config, evolve(state, change=(ev.rid, members)), now, out)


def _changed(config: Config, s: Leader, ev: ChangeMembership) -> Membership | FailCode:
    """The membership after ``ev``, or why it cannot be made."""
    voters, learners = set(config.sorted_voters), set(config.learners)
    name = ev.node
    old = s.members.addresses if s.members is not None else ()
    addresses = dict(old)
    match ev.op:
        case MemberOp.ADD:
            if not name or name in voters or name in learners:
                return FailCode.MEMBERSHIP_INVALID
            learners.add(name)
            addresses[name] = ev.address
        case MemberOp.PROMOTE:
            if name not in learners:
                return FailCode.MEMBERSHIP_INVALID
            # Caught up: it acknowledged our latest slot. Promoting a learner that is far behind
            # would count a voter that cannot vote yet (the quorum would need every other one).
            if dict(s.learner_at).get(name, -1) < s.applied_i:
                return FailCode.LEARNER_BEHIND
            learners.discard(name)
            voters.add(name)
        case MemberOp.REMOVE:
            if name not in voters and name not in learners:
                return FailCode.MEMBERSHIP_INVALID
            if voters == {name}:
                return FailCode.MEMBERSHIP_INVALID
            voters.discard(name)
            learners.discard(name)
            addresses.pop(name, None)
        case _:
            assert_never(ev.op)
    return Membership(
        voters=tuple(sorted(voters)),
        learners=tuple(sorted(learners)),
        addresses=tuple(sorted(addresses.items())),
    )


def _on_catchup_done(
    config: Config, state: State, ev: CatchupDone, now: float, out: list[Effect]
) -> State:
    if not isinstance(state, CatchingUp):
        return state
    last = ev.last
    if ev.applied_i < state.applied_i or (
        last is not None and not ev.applied_i <= last.i <= ev.applied_i + 1
    ):
        # The driver reported less than we already had, or a tail it did not apply: trust only
        # what is consistent with S3 and retry from the next Accept.
        return _become_follower(config, state, None, now, out)
    # The copied entries carry their ballots: holding an entry of ballot n implies we follow
    # at least n (S6), as after a restart (R1).
    n = max(state.n, last.n if last is not None else 0)
    s = evolve(
        state,
        applied_i=ev.applied_i,
        last=last,
        last_durable=True,
        n=n,
        max_seen=max(state.max_seen, n),
    )
    if ev.lease_holder is not None:
        # We cannot know when that lease began; starting it now is the cautious reading (the
        # lease guard then lasts longest), as on a restart (R2).
        s = evolve(s, lease_holder=ev.lease_holder, lease_start=now)
    if ev.membership is not None and ev.membership != s.members:
        s = _take_members(config, s, ev.membership, now)
    follower = _become_follower(config, s, state.source, now, out)
    if state.replay is not None:
        src, accept = state.replay
        # Only an Accept we can now take: one still out of reach would start another transfer
        # at once, and a driver whose source had nothing new would loop without end. The
        # leader's re-send (or its next slot) brings a fresh Accept soon enough.
        if accept.i <= s.applied_i + 2:
            return _follower_accept(config, follower, src, accept, now, out)
    return follower


# --- messages --------------------------------------------------------------------------------


def _on_message(
    config: Config, state: State, src: str, msg: Message, now: float, out: list[Effect]
) -> State:
    match msg:  # most frequent first
        case Accept():
            if isinstance(state, Follower):
                return _follower_accept(config, state, src, msg, now, out)
            return _on_accept(config, state, src, msg, now, out)
        case Accepted():
            if isinstance(state, Leader):
                return _on_accepted(config, state, src, msg, now, out)
            return state
        case Prepare():
            return _on_prepare(config, state, src, msg, now, out)
        case Promise():
            if isinstance(state, Candidate):
                return _on_promise(config, state, src, msg, now, out)
            return state
        case Nak():
            return _on_nak(config, state, src, msg, now, out)
        case Commit():
            if isinstance(state, Follower):
                return _on_commit(config, state, msg, now, out)
            return state
        case PreVote():
            return _on_prevote(config, state, src, msg, now, out)
        case PreVoteOk():
            if isinstance(state, Candidate) and state.pre and msg.n == state.pre_n:
                return _on_prevote_ok(config, state, src, now, out)
            return state
        case _:
            assert_never(msg)


def _on_prepare(
    config: Config, state: State, src: str, m: Prepare, now: float, out: list[Effect]
) -> State:
    my_next = state.applied_i + 1
    if not config.is_voter:
        # Learners never vote, and neither does a node the membership no longer lists. But a
        # candidate behind us may need the slots we hold to learn that it has left the
        # membership it runs under (a removed node can be the only live one that applied its
        # own removal): point it at us, as a witness of nothing ("rebuilding").
        if m.n >= 0 and m.i < my_next:
            out.append(
                Send(to=src, msg=Nak(n=m.n, their_n=state.n, their_i=my_next, rebuilding=True))
            )
        elif m.n >= 0 and m.i > my_next and isinstance(state, Follower):
            # A voter runs for a slot we have not reached: the slots we miss may make us a
            # voter (a promotion whose commit notice overtook its Accept). Fetch them.
            return _start_catchup(config, state, src, out)
        return state
    if state.rebuild is not None:
        # R9: no promise while rebuilding; say so, so that a rebuilding prober does not count
        # us as a witness and a candidate knows why.
        out.append(Send(to=src, msg=Nak(n=m.n, their_n=state.n, their_i=my_next, rebuilding=True)))
        return state
    if src not in config.sorted_voters:
        out.append(Send(to=src, msg=Nak(n=m.n, their_n=state.n, their_i=my_next)))  # rule 1
        if m.n >= 0 and m.i > my_next and isinstance(state, Follower):
            # Not a voter of the membership we know, but ahead of us: the membership may have
            # changed in slots we have not applied yet. Fetch them.
            return _start_catchup(config, state, src, out)
        return state
    # Rule 2, the lease guard: while the lease we applied runs, only its holder may take over.
    # Probes (negative ballots, R9) pass: they never win, and our Nak below is the answer a
    # rebuilding node waits for.
    if m.n >= 0 and state.lease_holder != src and _lease_live(config, state, now):
        return state
    if m.n == state.n and m.n > 0 and owner(config, m.n) == src and not isinstance(state, Leader):
        # A duplicate of the Prepare we promised (our Promise may have been lost): promise
        # again, idempotent, persisting first as for the original (contract 1).
        out.append(PersistPromise(n=m.n))
        out.append(Send(to=src, msg=Promise(n=m.n, i=my_next, accepted=_entry_at(state, my_next))))
        return state
    if m.n <= state.n or m.i < my_next:
        # Rule 3: a stale ballot, or a candidate behind us (it would lead from a slot we know
        # is chosen). Our ballot and next slot tell it to run higher or to catch up first.
        out.append(Send(to=src, msg=Nak(n=m.n, their_n=state.n, their_i=my_next)))
        if m.n > state.max_seen:
            return evolve(state, max_seen=m.n)
        return state
    if _respecting(state, src, now):
        return state  # rule 4
    if config.master_mode is MasterMode.FORCED and config.master == config.me:
        # A forced master never yields: refuse, and run again above the intruder.
        out.append(Send(to=src, msg=Nak(n=m.n, their_n=state.n, their_i=my_next)))
        if isinstance(state, Leader):
            return state
        return _start_election(
            config, evolve(state, max_seen=max(state.max_seen, m.n)), 0, now, out
        )
    # Rule 5: promise. The respect window (rule 4) then gives this candidate L/4 to finish
    # before a rival's higher ballot may pre-empt it: without it two candidates can keep
    # out-bidding each other and neither ever gets a quorum.
    if isinstance(state, Leader | Candidate):
        _step_down(config, state, out)
    s = evolve(
        state,
        n=m.n,
        max_seen=max(state.max_seen, m.n),
        respect=src,
        respect_until=now + config.lease_period / 4,
    )
    out.append(PersistPromise(n=m.n))
    out.append(Send(to=src, msg=Promise(n=m.n, i=my_next, accepted=_entry_at(s, my_next))))
    if isinstance(s, CatchingUp):
        return s  # one transfer at a time; the next Accept says the rest
    if m.i > my_next:
        return _start_catchup(config, s, src, out)
    return _become_follower(config, s, src, now, out)


def _on_promise(
    config: Config, s: Candidate, src: str, m: Promise, now: float, out: list[Effect]
) -> State:
    # A promise for a slot above ours comes from a voter that is ahead: it cannot report what
    # it accepted at our slot i, so it must not count (its Nak path makes us catch up).
    # A pre-candidate still holds its old ballot: a late Promise for that ballot belongs to a
    # candidacy it has given up (counting it would lead twice under one ballot, S1).
    if s.pre or m.n != s.n or src not in config.other_voters or m.i > s.i:
        return s
    # Keyed by sender: a re-sent Promise must not count twice towards the quorum.
    promises = (*(p for p in s.promises if p[0] != src), (src, m))
    s = evolve(s, promises=promises)
    if len(promises) + (1 if _votes(config, s) else 0) >= config.quorum_size:
        return _decide(config, s, now, out)
    return s


def _decide(config: Config, s: Candidate, now: float, out: list[Effect]) -> State:
    """Q promises are in: lead, re-proposing the highest-ballot value reported for slot i."""
    assert not s.pre, "deciding on a pre-vote"
    assert len(s.promises) + (1 if _votes(config, s) else 0) >= config.quorum_size
    assert s.i == s.applied_i + 1 and owner(config, s.n) == config.me
    if s.outbid:
        # A voter refused us for a higher promise while we ran (two candidates at once, at a
        # cold start say). Leading now would last only until our first Accept reached it: its
        # Nak deposes us (see _on_nak), and the client writes we hold by then fail with
        # NO_LONGER_MASTER. Run again above it now, before we hold anything; the promisers
        # we have respect us, so the next round is as likely to win as this one was.
        return _start_election(config, s, s.retries, now, out)
    # Only entries *at* slot i matter: a promiser behind us reports an older slot, which is
    # chosen and applied here already; a value chosen at i was accepted by some promiser, and
    # the highest ballot among the reports is the one a chosen value would carry (§5.3).
    best = s.own
    for _, p in s.promises:
        acc = p.accepted
        if p.i == s.i and acc is not None and acc.i == s.i and (best is None or acc.n > best.n):
            best = acc
    r, rng = _draw(s.rng)
    leader = Leader(
        n=s.n,
        max_seen=s.max_seen,
        applied_i=s.applied_i,
        last=s.last,
        last_durable=s.last_durable,
        lease_holder=s.lease_holder,
        lease_start=s.lease_start,
        respect=s.respect,
        respect_until=s.respect_until,
        rng=rng,
        rebuild=s.rebuild,
        unsettled=0,
        members=s.members,
        conf=s.conf,
        prop=None,
        queue=EMPTY_QUEUE,
        my_lease_start=LONG_AGO,
        renew_at=now,
        need_nop=False,
        drop_rids=(),
        drop_deadline=NEVER,
        pref_i=-1,
        pref_check_at=now + config.lease_period * (1 + r) if config.preferred else NEVER,
    )
    out.append(RoleChanged(role=Role.LEADER, n=s.n, master=config.me))
    if best is not None:
        # Re-proposed under our ballot with no clients attached: whoever proposed it first
        # failed its clients (outcome unknown) when it lost the lead. fresh_lease=False: an
        # old MasterSet(me) grants no lease, its followers' views may have started long ago.
        return _propose(
            config,
            leader,
            s.i,
            best.value,
            (),
            now,
            out,
            fresh_lease=False,
            queue=leader.queue,
            renew_at=leader.renew_at,
            need_nop=leader.need_nop,
        )
    return _maybe_propose(config, leader, now, out)


def _on_nak(config: Config, state: State, src: str, m: Nak, now: float, out: list[Effect]) -> State:
    s = state
    rb = s.rebuild
    # Only answers to our current probe ballot count towards a rebuild (R9): an answer to an
    # older probe may describe a cluster from before our loss.
    if rb is not None and m.n == rb.probe_n and src in config.other_voters:
        rb = _rebuild_answer(config, rb, src, m)
        # Once every voter answered, our next ballot goes above every ballot they hold, so we
        # never reuse one we may have used before the loss (R9).
        s = evolve(s, rebuild=rb, max_seen=max(s.max_seen, rb.floor))
    # max_seen is where our next election starts: running above every ballot we have heard
    # of saves a round of refusals.
    if m.their_n > s.max_seen and not m.rebuilding:
        s = evolve(s, max_seen=m.their_n)
    ahead = m.their_i > s.applied_i + 1
    match s:
        case Follower() | CatchingUp():
            # A voter ahead of us: fetch what we missed from it (a CatchingUp node is already
            # fetching; one transfer at a time).

            # (Any sender: one we do not know yet is a member of a membership chosen in the
            # slots we missed.)
            if ahead and isinstance(s, Follower):
                return _start_catchup(config, s, src, out)
            return s
        case Candidate():
            if s.pre and m.n == s.pre_n and ahead:
                # Refused for being behind: catch up instead of asking again.
                return _start_catchup(config, s, src, out)
            if m.n != s.n or s.pre:
                return s  # a refusal of an earlier candidacy of ours, or of a pre-vote
            if ahead:
                # Chosen slots beyond ours: no quorum will promise us slot i, catch up first.
                _step_down(config, s, out)
                return _start_catchup(config, s, src, out)
            if m.their_n > s.n and not m.rebuilding and src in config.other_voters:
                # A voter holds a higher promise: if we win anyway, it refuses our Accepts.
                return evolve(s, outbid=True)
            # A higher ballot is out there; the election timer will retry above it.
            return s
        case Leader():
            if m.n != s.n:
                return s
            if m.their_i > s.applied_i + 2:
                # Chosen slots beyond the one we are finishing: we are behind (a deposed leader).
                _step_down(config, s, out)
                return _start_catchup(config, s, src, out)
            # A voter one slot ahead of us (a late answer to our Prepare from, typically, the
            # idle former leader) is no reason to stop: our promise quorum holds whatever was
            # chosen at the slot we are finishing, so we re-propose exactly that value, and
            # nothing beyond it can have been chosen. Stepping down here made fresh leaders
            # flap after every hand-over.
            if m.their_n > s.n:
                # A voter promised a higher ballot (typically a node that lagged, saw no lease
                # and ran for election). It will refuse our Accepts for good, so run again above
                # it: while our lease is live the other voters' guard lets only us through.
                _step_down(config, s, out)
                return _run_or_follow(config, s, now, out)
            return s
        case _:
            assert_never(s)


def _on_accept(
    config: Config, state: State, src: str, m: Accept, now: float, out: list[Effect]
) -> State:
    follower: Follower
    match state:
        case CatchingUp():
            # Remember only the newest Accept, to take once the transfer is done.
            if m.n >= state.n and (state.replay is None or m.i >= state.replay[1].i):
                return evolve(state, replay=(src, m))
            return state
        case Candidate():
            if m.n < state.n:
                # An older leader still sending: harmless, unless its slot shows that slots
                # beyond ours are chosen (our candidacy is for a decided slot): fetch them.
                if m.i > state.applied_i + 1:
                    _step_down(config, state, out)
                    return _start_catchup(config, state, src, out)
                return state
            # A leader at or above our ballot already has its quorum: follow it.
            _step_down(config, state, out)
            follower = _become_follower(config, state, src, now, out)
        case Leader():
            if m.n == state.n:
                return state  # our own ballot echoed back; nothing to do
            if m.n < state.n:
                out.append(
                    Send(to=src, msg=Nak(n=m.n, their_n=state.n, their_i=state.applied_i + 1))
                )
                return state
            if lease_valid(config, state, now):
                return state  # §5.6: a leader with a valid lease ignores higher Accepts
            _step_down(config, state, out)
            follower = _become_follower(config, state, src, now, out)
        case Follower():
            follower = state
        case _:
            assert_never(state)
    return _follower_accept(config, follower, src, m, now, out)


def _follower_accept(
    config: Config, s: Follower, src: str, m: Accept, now: float, out: list[Effect]
) -> State:
    if m.n < s.n:
        # A deposed leader: the Nak carries our ballot so it steps down at once instead of
        # re-sending until its lease runs out.
        out.append(Send(to=src, msg=Nak(n=m.n, their_n=s.n, their_i=s.applied_i + 1)))
        return s
    a = s.applied_i
    last = s.last
    assert last is None or a <= last.i <= a + 1, f"S3: last {last} with applied_i={a}"
    i = m.i
    if i <= a:
        # A re-send for a slot we know is chosen: acknowledge what we durably hold, or rewrite it
        # under the newer ballot (the value is necessarily the chosen one).
        if last is None or last.i != i:
            return s
        if last.n == m.n:
            if s.last_durable and _votes(config, s):
                out.append(Send(to=src, msg=Accepted(n=m.n, i=i)))
            return s
        entry = LogEntry(i=i, n=m.n, value=m.value)
        out.append(Persist(entry=entry, sync=_sync(m.value)))
        return evolve(
            s,
            n=m.n,
            max_seen=max(s.max_seen, m.n),
            last=entry,
            last_durable=False,
            leader=src,
            heard_at=now,
            unsettled=0,
        )
    # The lease view and applied slot this Accept may move (one copy of the state per step).
    lease_holder, lease_start = s.lease_holder, s.lease_start
    if i == a + 2 and last is not None and last.i == a + 1 and last.n == m.n:
        # Slot a+1 is chosen and we hold its value: the leader of m.n proposes a+2 only once
        # a+1 is chosen, and it proposed exactly one value at a+1 under m.n, ours (§5.5).
        # Matching ballots matter: an entry of another ballot may hold a value never chosen.
        out.append(Apply(i=last.i, value=last.value))
        a = last.i
        if isinstance(last.value, MasterSet):
            # The lease starts when *we* apply it, later than the leader's own start, so our
            # guard outlasts the leader's belief in its lease (§5.6).
            lease_holder, lease_start = last.value.node, now
        elif isinstance(last.value, Membership):
            s = _take_members(config, s, last.value, now)
    if i == a + 1:
        if last is not None and last.i == i and last.n == m.n and last.value == m.value:
            # A duplicate of what we hold: acknowledge once durable (Persisted will do it).
            if s.last_durable and _votes(config, s):
                out.append(Send(to=src, msg=Accepted(n=m.n, i=i)))
            # (Nothing was applied above: the entry applied there sits at slot i - 1.)
            return evolve(s, leader=src, heard_at=now, unsettled=0)
        # Write (or overwrite an unchosen last entry, S3); Accepted waits for Persisted.
        entry = LogEntry(i=i, n=m.n, value=m.value)
        out.append(Persist(entry=entry, sync=_sync(m.value)))
        if m.n != s.n or s.leader != src:
            out.append(RoleChanged(role=Role.FOLLOWER, n=m.n, master=src))
        return evolve(
            s,
            n=m.n,
            max_seen=max(s.max_seen, m.n),
            applied_i=a,
            last=entry,
            last_durable=False,
            lease_holder=lease_holder,
            lease_start=lease_start,
            leader=src,
            heard_at=now,
            unsettled=0,
        )
    # Further ahead than one slot: we missed chosen slots. Fetch them from the sender, then
    # handle this Accept again.
    return _start_catchup(config, s, src, out, replay=(src, m))


def _on_accepted(
    config: Config, s: Leader, src: str, m: Accepted, now: float, out: list[Effect]
) -> State:
    if config.preferred and src == config.master and m.i > s.pref_i:
        s = evolve(s, pref_i=m.i)
    if src in config.learners:
        if m.n == s.n and m.i > dict(s.learner_at).get(src, -1):
            at = (*(x for x in s.learner_at if x[0] != src), (src, m.i))
            return evolve(s, learner_at=at)
        return s
    prop = s.prop
    # Count each voter once, for our ballot and the slot in flight only: a late Accepted for
    # an earlier slot or term says nothing about this one. Learners never count.
    if (
        prop is None
        or m.n != s.n
        or m.i != prop.i
        or prop.chosen
        or src in prop.acks
        or src not in config.other_voters
    ):
        if m.n > s.max_seen:
            return evolve(s, max_seen=m.n)
        return s
    return _maybe_chosen(
        config, s, evolve(prop, acks=prop.acks | {src}), now, out, last_durable=s.last_durable
    )


# --- leader mechanics -------------------------------------------------------------------------


def _sync(value: Value) -> bool:
    return isinstance(value, Batch) and value.sync


def _propose(
    config: Config,
    s: Leader,
    i: int,
    value: Value,
    rids: tuple[int, ...],
    now: float,
    out: list[Effect],
    *,
    fresh_lease: bool,
    queue: RequestQueue,
    renew_at: float,
    need_nop: bool,
) -> State:
    """Phase 2 for slot i: broadcast first (no need to wait), then persist our own copy.

    ``queue``, ``renew_at`` and ``need_nop`` are the new leader state's (one copy per step).
    """
    # S5: one slot in flight, right after the applied one.
    assert i == s.applied_i + 1 and (s.prop is None or s.prop.chosen), f"S5: propose {i}"
    # Each rid is the client of the payload at the same position (or none: a re-proposal).
    assert not rids or (isinstance(value, Batch) and len(rids) == len(value.payloads))
    entry = LogEntry(i=i, n=s.n, value=value)
    if len(config.sorted_voters) > 1 or config.learners:
        out.append(Broadcast(msg=Accept(n=s.n, i=i, value=value)))
    out.append(Persist(entry=entry, sync=_sync(value)))
    r, rng = _draw(s.rng)
    prop = Proposal(
        i=i,
        value=value,
        rids=rids,
        acks=frozenset(),
        self_durable=False,
        chosen=False,
        resend_at=now + config.lease_period / 4 * (1.0 + 0.1 * r),
        proposed_at=now,
        fresh_lease=fresh_lease,
    )
    return evolve(
        s,
        rng=rng,
        last=entry,
        last_durable=False,
        prop=prop,
        queue=queue,
        renew_at=renew_at,
        need_nop=need_nop,
    )


def _lingering(s: Leader, now: float) -> bool:
    """Client requests wait while more are expected and the linger runs; never on a dropping
    leader. (A due renewal or membership change goes first: their branches come before.)"""
    return 0 < s.queue.size < s.expect and now < s.linger_until and s.drop_deadline == NEVER


def _maybe_propose(
    config: Config, s: Leader, now: float, out: list[Effect], *, idle: bool = False
) -> State:
    """When idle, propose the next value (§5.4 step 4); may do nothing.

    ``idle=True``: the slot in flight (``s.prop``) has just been applied and is to be dropped.
    """
    if s.prop is not None and not idle:
        return s
    assert not idle or (s.prop is not None and s.prop.chosen and s.prop.i == s.applied_i)
    i = s.applied_i + 1
    dropping = s.drop_deadline != NEVER
    foreign_live = s.lease_holder != config.me and _lease_live(config, s, now)
    lease_ok = lease_valid(config, s, now)
    # The lease comes first: renewing halfway through leaves half a lease for the renewal to
    # be chosen (re-sends included) before the old one runs out. A dropping leader lets it
    # lapse, and a foreign live lease must run out before we may claim our own (§5.6).
    if not dropping and not foreign_live and (not lease_ok or now >= s.renew_at):
        return _propose(
            config,
            s,
            i,
            MasterSet(node=config.me),
            (),
            now,
            out,
            fresh_lease=True,
            queue=s.queue,
            renew_at=now + config.lease_period / 2,
            need_nop=False,
        )
    # While a foreign lease runs out, any value we send doubles as the heartbeat below.
    renew_at = now + config.lease_period / 2 if foreign_live else s.renew_at
    if s.change is not None and lease_ok and not dropping:
        rid, members = s.change
        return _propose(
            config,
            evolve(s, change=None, change_rid=rid),
            i,
            members,
            (),
            now,
            out,
            fresh_lease=False,
            queue=s.queue,
            renew_at=renew_at,
            need_nop=False,
        )
    if _lingering(s, now):
        # Requests are queued, but more are due within the linger (see _on_applied); the
        # ``Tick`` at ``linger_until`` proposes whatever came by then.
        return evolve(s, prop=None) if idle else s
    if s.queue.size > 0 and (lease_ok or not dropping):
        if s.expect:
            s = evolve(s, expect=0, linger_until=LONG_AGO)
        reqs, queue = s.queue.take(config.max_batch_count, config.max_batch_bytes)
        batch = Batch(payloads=tuple(r.payload for r in reqs), sync=any(r.sync for r in reqs))
        rids = tuple(r.rid for r in reqs)
        return _propose(
            config,
            s,
            i,
            batch,
            rids,
            now,
            out,
            fresh_lease=False,
            queue=queue,
            renew_at=renew_at,
            need_nop=False,
        )
    if s.need_nop:
        # Followers learn slot i only when slot i+1 arrives: without this Nop a new lease (or
        # the last batch before a pause) would stay unapplied on them.
        return _propose(
            config,
            s,
            i,
            NOP,
            (),
            now,
            out,
            fresh_lease=False,
            queue=s.queue,
            renew_at=renew_at,
            need_nop=False,
        )
    if foreign_live and not dropping and now >= s.renew_at:
        # Waiting out someone else's lease (one we just re-proposed): keep the followers hearing
        # from us every L/2, or their own view of that lease runs out when ours does and they
        # run for election just as we take the lease.
        return _propose(
            config,
            s,
            i,
            NOP,
            (),
            now,
            out,
            fresh_lease=False,
            queue=s.queue,
            renew_at=now + config.lease_period / 2,
            need_nop=s.need_nop,
        )
    return evolve(s, prop=None) if idle else s


def _maybe_chosen(
    config: Config,
    s: Leader,
    prop: Proposal,
    now: float,
    out: list[Effect],
    *,
    last_durable: bool,
) -> State:
    """``prop`` (the new version of ``s.prop``) has one more vote: is it chosen now?

    ``last_durable`` is the new leader state's (one copy per step).
    """
    assert s.prop is not None and prop.i == s.prop.i, "a vote for another slot"
    if prop.chosen:
        return evolve(s, prop=prop, last_durable=last_durable)
    # Our own vote counts only once durable, and never while we rebuild (R9): a vote we might
    # forget in a crash could make a value look chosen that no quorum holds.
    votes = len(prop.acks) + (1 if prop.self_durable and _votes(config, s) else 0)
    if votes < config.quorum_size:
        return evolve(s, prop=prop, last_durable=last_durable)
    # Chosen (S1): hand it to the store; reply to clients once it is applied (S9).
    assert prop.i == s.applied_i + 1, f"S4: slot {prop.i} chosen after {s.applied_i}"
    out.append(Apply(i=prop.i, value=prop.value))
    value = prop.value
    chosen = evolve(prop, chosen=True)
    if isinstance(value, Membership):
        # Tell every member of the old membership at once (the one being removed included, so
        # that it learns it is out), and run under the new one from the next slot on; the
        # Applied of this slot makes us run for a ballot of the new membership.
        for p in config.peers:
            out.append(Send(to=p, msg=Commit(n=s.n, i=prop.i)))
        s = _take_members(config, s, value, now)
        return evolve(s, applied_i=prop.i, prop=chosen, last_durable=last_durable)
    if not isinstance(value, MasterSet):
        return evolve(s, applied_i=prop.i, prop=chosen, last_durable=last_durable)
    # need_nop: followers learn this slot only when the next one arrives.
    if value.node == config.me and prop.fresh_lease:
        # Our lease starts when we *proposed* it, not now: every follower started its view
        # later, so our belief ends first (§5.6).
        return evolve(
            s,
            applied_i=prop.i,
            prop=chosen,
            last_durable=last_durable,
            need_nop=True,
            my_lease_start=prop.proposed_at,
            lease_holder=config.me,
            lease_start=prop.proposed_at,
        )
    # Someone else's lease (or an old one of ours) re-proposed: it starts now for us and grants
    # us nothing; _maybe_propose waits for it to run out.
    return evolve(
        s,
        applied_i=prop.i,
        prop=chosen,
        last_durable=last_durable,
        need_nop=True,
        lease_holder=value.node,
        lease_start=now,
    )


# --- role changes -----------------------------------------------------------------------------


def _step_down(config: Config, state: Leader | Candidate, out: list[Effect]) -> None:
    """Leave the leader/candidate role: fail what we held (outcome unknown), answer drops.

    Only effects: the caller builds the next role from ``state`` (its common part).
    """
    assert isinstance(state, Leader | Candidate), type(state)
    if isinstance(state, Leader):
        # The slot in flight may still be chosen by our successor, or not: the clients get
        # NO_LONGER_MASTER (outcome unknown), never a success we cannot vouch for (S9).
        if state.prop is not None:
            out.extend(Fail(rid=r, code=FailCode.NO_LONGER_MASTER) for r in state.prop.rids)
        out.extend(Fail(rid=r.rid, code=FailCode.NO_LONGER_MASTER) for r in state.queue.all())
        if state.change_rid is not None:
            out.append(Fail(rid=state.change_rid, code=FailCode.NO_LONGER_MASTER))
        if state.change is not None:
            out.append(Fail(rid=state.change[0], code=FailCode.NOT_MASTER))
        # A DropMaster asked us to stop leading; we no longer do, which is its success.
        out.extend(Reply(rid=r, result=None) for r in state.drop_rids)


# A role change builds the new state from the common fields of the old one, field by field:
# mypy cannot check a generic copy into another class, but it checks these constructor calls,
# and a field added to Common (without a default) makes each of them fail until it is passed.


def _unsettled(c: Common) -> int:
    """Elections lost in a row, counting the one a candidate gives up now."""
    return c.retries + 1 if isinstance(c, Candidate) else c.unsettled


def _become_follower(
    config: Config, c: Common, leader: str | None, now: float, out: list[Effect]
) -> Follower:
    r, rng = _draw(c.rng)
    # No election before the lease we know of could have run out, plus a random margin.
    base = max(c.lease_start + config.lease_period, now)
    out.append(RoleChanged(role=Role.FOLLOWER, n=c.n, master=leader))
    return Follower(
        n=c.n,
        max_seen=c.max_seen,
        applied_i=c.applied_i,
        last=c.last,
        last_durable=c.last_durable,
        lease_holder=c.lease_holder,
        lease_start=c.lease_start,
        respect=c.respect,
        respect_until=c.respect_until,
        rng=rng,
        rebuild=c.rebuild,
        unsettled=_unsettled(c),
        members=c.members,
        conf=c.conf,
        leader=leader,
        check_at=base + _check_delay(config, r, _unsettled(c)),
        # heard_at stays LONG_AGO: only Accepts received as this follower may hold back
        # our own candidacy (see Follower).
    )


def _start_catchup(
    config: Config,
    c: Common,
    source: str,
    out: list[Effect],
    replay: tuple[str, Accept] | None = None,
) -> CatchingUp:
    out.append(StartCatchup(source=source, from_i=c.applied_i + 1))
    out.append(RoleChanged(role=Role.CATCHING_UP, n=c.n, master=None))
    return CatchingUp(
        n=c.n,
        max_seen=c.max_seen,
        applied_i=c.applied_i,
        last=c.last,
        last_durable=c.last_durable,
        lease_holder=c.lease_holder,
        lease_start=c.lease_start,
        respect=c.respect,
        respect_until=c.respect_until,
        rng=c.rng,
        rebuild=c.rebuild,
        unsettled=_unsettled(c),
        members=c.members,
        conf=c.conf,
        source=source,
        from_i=c.applied_i + 1,
        replay=replay,
    )


def _start_prevote(config: Config, c: Common, retries: int, now: float, out: list[Effect]) -> State:
    """Ask every voter whether it would promise our next ballot, raising nothing yet.

    A node that cannot win (the others still see a live lease, or it is behind) thus never
    raises its ballot, so it never forces a healthy master to run again above it: a follower
    back from a partition or a restart, or a master that cannot hear, stays harmless.
    """
    assert _can_elect(config, c), "a pre-vote by a node that may not run"
    if config.quorum_size <= 1 or config.master_mode is MasterMode.FORCED:
        return _start_election(config, c, retries, now, out)
    pre_n = next_ballot(config, max(c.n, c.max_seen))
    i = c.applied_i + 1
    r, rng = _draw(c.rng)
    wait = _candidate_wait(config, r, retries)
    s = Candidate(
        n=c.n,
        max_seen=c.max_seen,
        applied_i=c.applied_i,
        last=c.last,
        last_durable=c.last_durable,
        lease_holder=c.lease_holder,
        lease_start=c.lease_start,
        respect=c.respect,
        respect_until=c.respect_until,
        rng=rng,
        rebuild=c.rebuild,
        unsettled=c.unsettled,
        members=c.members,
        conf=c.conf,
        i=i,
        own=None,
        promises=(),
        deadline=now + wait,
        retries=retries,
        pre=True,
        pre_n=pre_n,
        pre_ok=frozenset({config.me}) if _votes(config, c) else frozenset(),
    )
    out.append(Broadcast(msg=PreVote(n=pre_n, i=i)))
    if not isinstance(c, Candidate):
        out.append(RoleChanged(role=Role.CANDIDATE, n=c.n, master=None))
    return s


def _on_prevote(
    config: Config, state: State, src: str, m: PreVote, now: float, out: list[Effect]
) -> State:
    """Would we promise ``m.n``? The same tests as a Prepare (§5.2), without promising."""
    my_next = state.applied_i + 1
    if not _votes(config, state) or src not in config.sorted_voters:
        if config.is_voter or m.i < my_next:
            out.append(
                Send(
                    to=src,
                    msg=Nak(n=m.n, their_n=state.n, their_i=my_next, rebuilding=True),
                )
            )
        if m.i > my_next and isinstance(state, Follower) and state.rebuild is None:
            return _start_catchup(config, state, src, out)  # as for a Prepare, above
        return state
    if state.lease_holder != src and _lease_live(config, state, now):
        return state  # the lease guard: a live master (maybe us) needs no successor
    if m.n <= state.n or m.i < my_next:
        out.append(Send(to=src, msg=Nak(n=m.n, their_n=state.n, their_i=my_next)))
        return state
    if _respecting(state, src, now):
        return state
    out.append(Send(to=src, msg=PreVoteOk(n=m.n, i=my_next)))
    return state


def _on_prevote_ok(config: Config, s: Candidate, src: str, now: float, out: list[Effect]) -> State:
    if src not in config.other_voters:
        return s
    ok = s.pre_ok | {src}
    if len(ok) < config.quorum_size:
        return evolve(s, pre_ok=ok)
    # A quorum would promise: now raise the ballot for real (the Prepares may still lose).
    return _start_election(
        config, evolve(s, max_seen=max(s.max_seen, s.pre_n - 1)), s.retries, now, out
    )


def _on_commit(config: Config, s: Follower, m: Commit, now: float, out: list[Effect]) -> State:
    """The leader says slot ``m.i`` under ballot ``m.n`` is chosen: apply our copy now.

    Our last entry ``(m.i, m.n)`` is the one value the leader of ``m.n`` proposed at ``m.i``
    (the same reasoning as learning a slot from the next one, §5.5).
    """
    last = s.last
    if last is None or last.i != m.i or last.n != m.n or s.applied_i != m.i - 1:
        return s
    out.append(Apply(i=last.i, value=last.value))
    if isinstance(last.value, MasterSet):
        return evolve(s, applied_i=last.i, lease_holder=last.value.node, lease_start=now)
    if isinstance(last.value, Membership):
        return evolve(_take_members(config, s, last.value, now), applied_i=last.i)
    return evolve(s, applied_i=last.i)


def _start_election(
    config: Config, c: Common, retries: int, now: float, out: list[Effect]
) -> State:
    """§5.1: a new ballot above everything seen, for slot applied_i + 1."""
    assert _can_elect(config, c), "an election by a node that may not run"
    n = next_ballot(config, max(c.n, c.max_seen))
    i = c.applied_i + 1
    r, rng = _draw(c.rng)
    wait = _candidate_wait(config, r, retries)
    # Our own last entry is our promise's report for slot i, if our votes count at all (R9).
    own = _entry_at(c, i) if _votes(config, c) else None
    s = Candidate(
        n=n,
        max_seen=n,
        applied_i=c.applied_i,
        last=c.last,
        last_durable=c.last_durable,
        lease_holder=c.lease_holder,
        lease_start=c.lease_start,
        # Running ourselves ends any respect for another candidate.
        respect=None,
        respect_until=LONG_AGO,
        rng=rng,
        rebuild=c.rebuild,
        unsettled=c.unsettled,
        members=c.members,
        conf=c.conf,
        i=i,
        own=own,
        promises=(),
        deadline=now + wait,
        retries=retries,
    )
    if config.other_voters:
        out.append(Broadcast(msg=Prepare(n=n, i=i)))
    # Neither the Broadcast (before it in the list) nor our own vote waits for this promise to
    # be durable: a crash forgets the candidacy along with it.
    out.append(PersistPromise(n=n))
    out.append(RoleChanged(role=Role.CANDIDATE, n=n, master=None))
    if config.quorum_size <= 1:
        return _decide(config, s, now, out)
    return s


# --- rebuilding after lost state (R9) --------------------------------------------------------


def _rebuild_tick(config: Config, s: Follower, rb: Rebuild, now: float, out: list[Effect]) -> State:
    """Probe every voter that has not answered yet, every L/2, until all have."""
    assert rb is s.rebuild
    if rb.target is not None or now < rb.probe_at:
        return s
    msg = Prepare(n=rb.probe_n, i=s.applied_i + 1)
    # Voters that said "rebuilding too" are asked again: an operator may recover one of them
    # deliberately, and then it answers as a witness.
    intact = {a[0] for a in rb.answers}
    for v in config.other_voters:
        if v not in intact:
            out.append(Send(to=v, msg=msg))
    r, rng = _draw(s.rng)
    probe_at = now + config.lease_period / 2 * (1.0 + 0.1 * r)
    return evolve(s, rng=rng, rebuild=evolve(rb, probe_at=probe_at))


def _rebuild_answer(config: Config, rb: Rebuild, src: str, m: Nak) -> Rebuild:
    """Record one voter's answer to our probe; fix the target once every voter answered."""
    assert m.n == rb.probe_n, "an answer to another probe"
    if rb.target is not None:
        return rb  # fixed once; probing has stopped, late answers change nothing
    if m.rebuilding:
        # A voter that lost its state too witnesses nothing; it is waived rather than
        # awaited, or two rebuilding voters would wait for each other for ever.
        rb = evolve(rb, waived=rb.waived | {src})
    else:
        answers = (*(a for a in rb.answers if a[0] != src), (src, m.their_n, m.their_i))
        rb = evolve(rb, answers=answers, waived=rb.waived - {src})
    answered = {a[0] for a in rb.answers} | rb.waived
    if rb.answers and answered >= set(config.other_voters):
        # Every voter answered and at least one holds the history (see Rebuild).
        target = max(a[2] for a in rb.answers) + 1
        floor = max(a[1] for a in rb.answers)
        rb = evolve(rb, target=target, floor=floor)
    return rb


def _maybe_rebuilt(
    config: Config, s: Follower, rb: Rebuild, now: float, out: list[Effect]
) -> State:
    """Vote again once the target slot is applied: adopt the ballot floor durably first."""
    assert rb is s.rebuild
    if rb.target is None or s.applied_i < rb.target:
        return s
    n = max(s.n, rb.floor)
    # The floor is persisted before Rebuilt is recorded, so a node that restarts as a voter
    # has it; a crash in between only restarts the rebuild (see Rebuilt).
    out.append(PersistPromise(n=n))
    out.append(Rebuilt(applied_i=s.applied_i, n=n))
    r, rng = _draw(s.rng)
    check_at = max(s.lease_start + config.lease_period, s.heard_at + config.lease_period, now)
    if n != s.n:
        out.append(RoleChanged(role=Role.FOLLOWER, n=n, master=s.leader))
    return evolve(
        s,
        rng=rng,
        n=n,
        max_seen=max(s.max_seen, n),
        rebuild=None,
        check_at=check_at + _check_delay(config, r),
    )


def rebuild_status(state: State) -> Rebuild | None:
    """The rebuild progress of a node that lost its state (``None`` when it votes normally)."""
    return state.rebuild


def check_invariants(config: Config, state: State) -> None:
    """Assert the structural invariants of one node's state (for tests and the simulator).

    Raises ``AssertionError`` naming the broken invariant.
    """
    config = state.conf or config
    c = state
    assert (c.members is None) == (c.conf is None), "members and conf go together"
    last = c.last
    if last is None:
        assert c.applied_i == -1, f"S3: no log but applied_i={c.applied_i}"
    else:
        assert c.applied_i <= last.i <= c.applied_i + 1, (
            f"S3: last_i={last.i} with applied_i={c.applied_i}"
        )
        assert last.n <= c.n, f"S6: last entry ballot {last.n} above our ballot {c.n}"
    assert c.max_seen >= c.n or c.n <= 0, f"max_seen {c.max_seen} < n {c.n}"
    match state:
        case Leader(prop=prop):
            # Between choosing a Membership and its Applied the leader already runs under the
            # new membership, which may no longer count it or its ballot; it proposes nothing
            # in between and runs again (or steps down) on Applied.
            changing = prop is not None and prop.chosen and isinstance(prop.value, Membership)
            assert config.is_voter or changing, "a learner became leader"
            assert c.rebuild is None or _can_elect(config, c), "R9: a rebuilding node leads"
            assert changing or owner(config, c.n) == config.me, (
                f"leading with a ballot {c.n} we do not own"
            )
            if prop is not None:
                assert prop.i == (c.applied_i if prop.chosen else c.applied_i + 1), (
                    f"S5: proposal for slot {prop.i} with applied_i={c.applied_i}"
                )
                assert last is not None and last.i == prop.i, "proposal not in our log"
            assert state.queue.size >= 0
        case Candidate(i=i):
            assert c.rebuild is None or _can_elect(config, c), "R9: a rebuilding node runs"
            assert i == c.applied_i + 1, f"candidate for slot {i} with applied_i={c.applied_i}"
            if state.pre:
                assert owner(config, state.pre_n) == config.me and state.pre_n > c.n
            else:
                assert owner(config, c.n) == config.me
        case Follower() | CatchingUp():
            pass
        case _:
            assert_never(state)
