"""The vocabulary of the Paxos core: configuration, values, messages, events and effects.

Everything here is a frozen, slotted, keyword-only dataclass (or an ``Enum``), so values can be
compared whole in tests and shared freely between states without copying. The transition rules
that consume and produce these types live in :mod:`parakoon_paxos.core`, which opens with the
theory of operation and the effect contract.

Deviations from the API sketched in the task brief (each one deliberate):

* ``Config`` has one more field, ``clock_drift`` (default 0.05): the bound on how far any node's
  clock *rate* may differ from true time. The leader shortens its own view of its lease by the
  factor ``(1 - d) / (1 + d)`` so that lease exclusion holds even when the leader's clock runs
  slow and a follower's runs fast (see ``core`` §Leases).
* ``Recovered`` and ``CatchupDone`` carry an optional ``lease_holder``: the node named by the
  newest ``MasterSet`` the store has applied. Rule R2 needs it ("a remembered lease of another
  node counts as starting now"); when the driver does not know it, ``None`` is safe (the node
  then distrusts every candidate for one lease period if its log is not empty).
* ``FailCode`` has ``READ_ONLY`` for writes refused in read-only mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TypeAlias


class MasterMode(Enum):
    """How the master is chosen (``cluster.toml`` ``master_mode``)."""

    ELECTED = "elected"
    FORCED = "forced"
    READONLY = "readonly"


class Role(Enum):
    CANDIDATE = "candidate"
    LEADER = "leader"
    FOLLOWER = "follower"
    CATCHING_UP = "catching_up"


class FailCode(Enum):
    """Why a client request (or admin request) was refused."""

    NOT_MASTER = "not_master"
    # The request was accepted by a leader that lost leadership before it was applied: the
    # update may or may not have been chosen (outcome unknown).
    NO_LONGER_MASTER = "no_longer_master"
    OVERLOADED = "overloaded"
    NOT_SUPPORTED = "not_supported"
    READ_ONLY = "read_only"
    # Membership changes (``ChangeMembership``): another change is still in flight, or the
    # leader's lease was not yet renewed under the current membership; retry shortly.
    MEMBERSHIP_BUSY = "membership_busy"
    # The change makes no sense against the current membership (adding a member, promoting a
    # non-learner, removing a stranger or the last voter).
    MEMBERSHIP_INVALID = "membership_invalid"
    # ``promote`` of a learner that has not acknowledged the leader's latest slot.
    LEARNER_BEHIND = "learner_behind"


class ConfigError(ValueError):
    """The static configuration is inconsistent; the message names the field."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Static configuration of one node. Derived fields are computed once, here.

    ``voters`` is the cluster's voting membership in any order; a node's *rank* is its position
    in the sorted names, and ballots are owned by rank (ballot ``n`` belongs to the voter of rank
    ``n mod len(voters)``).
    """

    me: str
    voters: tuple[str, ...]
    learners: tuple[str, ...] = ()
    quorum: int | None = None
    lease_period: float
    master_mode: MasterMode = MasterMode.ELECTED
    master: str | None = None
    preferred: bool = False
    max_batch_count: int = 1000
    max_batch_bytes: int = 4 << 20
    max_queued: int = 10_000
    clock_drift: float = 0.05
    # How long an idle leader may hold a client batch back for the clients it has just
    # answered (see "Batch linger" in docs/paxos.md); 0 proposes at once, as before.
    batch_linger: float = 0.0
    # Built by ``with_members`` from a replicated membership that no longer lists ``me`` (the
    # node was removed): it is then neither voter nor learner and takes no part.
    outsider_ok: bool = field(default=False, repr=False, compare=False)

    # Derived (not constructor arguments).
    sorted_voters: tuple[str, ...] = field(init=False, repr=False, compare=False)
    rank: int = field(init=False, repr=False, compare=False)
    is_voter: bool = field(init=False, repr=False, compare=False)
    quorum_size: int = field(init=False, repr=False, compare=False)
    other_voters: tuple[str, ...] = field(init=False, repr=False, compare=False)
    peers: tuple[str, ...] = field(init=False, repr=False, compare=False)
    leader_lease: float = field(init=False, repr=False, compare=False)
    member: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        voters = tuple(sorted(self.voters))
        if not voters:
            raise ConfigError("Config.voters: at least one voter is required")
        if len(set(voters)) != len(voters):
            raise ConfigError(f"Config.voters: duplicate name in {self.voters!r}")
        if set(voters) & set(self.learners):
            raise ConfigError("Config.learners: a node cannot be both voter and learner")
        if len(set(self.learners)) != len(self.learners):
            raise ConfigError(f"Config.learners: duplicate name in {self.learners!r}")
        if self.me not in voters and self.me not in self.learners and not self.outsider_ok:
            raise ConfigError(f"Config.me: {self.me!r} is neither a voter nor a learner")
        if not self.lease_period > 0:
            raise ConfigError(f"Config.lease_period: must be > 0, got {self.lease_period!r}")
        if not 0 <= self.clock_drift < 0.25:
            raise ConfigError(f"Config.clock_drift: must be in [0, 0.25), got {self.clock_drift}")
        if not 0 <= self.batch_linger < self.lease_period / 8:
            raise ConfigError(
                f"Config.batch_linger: must be in [0, lease_period / 8), got {self.batch_linger}"
            )
        q = self.quorum if self.quorum is not None else len(voters) // 2 + 1
        if not len(voters) // 2 < q <= len(voters):
            raise ConfigError(
                f"Config.quorum: {q} is not a majority of {len(voters)} voters (unsafe)"
            )
        if self.master_mode is MasterMode.FORCED and self.master not in voters:
            raise ConfigError("Config.master: forced mode needs master set to a voter name")
        if self.preferred and self.master not in voters:
            raise ConfigError("Config.master: preferred=True needs master set to a voter name")
        for name in ("max_batch_count", "max_batch_bytes", "max_queued"):
            if getattr(self, name) < 1:
                raise ConfigError(f"Config.{name}: must be >= 1")
        object.__setattr__(self, "sorted_voters", voters)
        object.__setattr__(self, "is_voter", self.me in voters)
        object.__setattr__(self, "rank", voters.index(self.me) if self.me in voters else -1)
        object.__setattr__(self, "quorum_size", q)
        object.__setattr__(self, "other_voters", tuple(v for v in voters if v != self.me))
        object.__setattr__(
            self,
            "peers",
            tuple(v for v in voters if v != self.me)
            + tuple(x for x in self.learners if x != self.me),
        )
        object.__setattr__(self, "member", self.me in voters or self.me in self.learners)
        d = self.clock_drift
        object.__setattr__(self, "leader_lease", self.lease_period * (1 - d) / (1 + d))

    def with_members(self, members: Membership) -> Config:
        """This node's configuration under the replicated ``members`` (see ``Membership``).

        The quorum becomes the majority of the new voters (an explicit ``quorum`` of the static
        file applies to the static membership only), and preferred mode ends if its master is
        no longer a voter.
        """
        preferred = self.preferred and self.master in members.voters
        return Config(
            me=self.me,
            voters=members.voters,
            learners=members.learners,
            quorum=None,
            lease_period=self.lease_period,
            master_mode=self.master_mode,
            master=self.master if preferred or self.master_mode is MasterMode.FORCED else None,
            preferred=preferred,
            max_batch_count=self.max_batch_count,
            max_batch_bytes=self.max_batch_bytes,
            max_queued=self.max_queued,
            clock_drift=self.clock_drift,
            batch_linger=self.batch_linger,
            outsider_ok=True,
        )


# ---------------------------------------------------------------------------------------------
# Values: what a slot holds.


@dataclass(frozen=True, slots=True, kw_only=True)
class MasterSet:
    """The lease value: ``node`` is master for one lease period from when it is applied."""

    node: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Batch:
    """Client updates, opaque to the core. ``NOP`` is the empty batch."""

    payloads: tuple[bytes, ...]
    sync: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Membership:
    """The replicated membership: chosen at slot i, it governs every slot after i.

    ``voters`` and ``learners`` are sorted and disjoint. ``addresses`` maps the members added
    at run time to an opaque address string the driver understands (members of the static
    configuration keep the addresses of their ``cluster.toml``); sorted by name.
    Consecutive memberships differ by one node (see ``core``, "Membership changes").
    """

    voters: tuple[str, ...]
    learners: tuple[str, ...] = ()
    addresses: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.voters:
            raise ConfigError("Membership.voters: at least one voter is required")
        if tuple(sorted(set(self.voters))) != self.voters:
            raise ConfigError(f"Membership.voters: not sorted and unique: {self.voters!r}")
        if tuple(sorted(set(self.learners))) != self.learners:
            raise ConfigError(f"Membership.learners: not sorted and unique: {self.learners!r}")
        if set(self.voters) & set(self.learners):
            raise ConfigError("Membership: a node cannot be both voter and learner")

    def address(self, name: str) -> str | None:
        for k, v in self.addresses:
            if k == name:
                return v
        return None


Value: TypeAlias = MasterSet | Batch | Membership
NOP = Batch(payloads=())


@dataclass(frozen=True, slots=True, kw_only=True)
class LogEntry:
    """Slot ``i`` holds ``value``, accepted under ballot ``n``."""

    i: int
    n: int
    value: Value


# ---------------------------------------------------------------------------------------------
# Peer messages.


@dataclass(frozen=True, slots=True, kw_only=True)
class Prepare:
    """Phase 1a. ``i`` is the sender's next slot (``applied_i + 1``); ``n < 0`` is a probe."""

    n: int
    i: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Promise:
    """Phase 1b. ``i`` is the promiser's next slot; ``accepted`` is its log entry there."""

    n: int
    i: int
    accepted: LogEntry | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Nak:
    """Refusal of ballot ``n``; the refuser reports its own ballot and next slot.

    ``rebuilding``: the refuser lost its durable state and is rebuilding (R9). Its ballot and
    slot then say nothing about what it once promised or accepted, so a rebuilding node that
    collects answers to its probes must not count this one as a witness of the history.
    """

    n: int
    their_n: int
    their_i: int
    rebuilding: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Accept:
    """Phase 2a."""

    n: int
    i: int
    value: Value


@dataclass(frozen=True, slots=True, kw_only=True)
class Accepted:
    """Phase 2b: the sender has made (i, n) durable."""

    n: int
    i: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Commit:
    """The leader's notice that slot ``i``, accepted under ballot ``n``, is chosen.

    Sent when the leader goes idle after a slot (under load the next ``Accept`` tells the same),
    so that followers and learners apply the leader's last slot at once instead of one slot
    behind until the next renewal.
    """

    n: int
    i: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PreVote:
    """ "Would you promise ballot ``n`` for slot ``i``?" A node that wants to run asks first,
    without raising any ballot, so that a node that cannot win (its peers still see a live
    lease, or it is behind) never deposes a healthy master (pre-vote, as in etcd raft)."""

    n: int
    i: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PreVoteOk:
    """ "Yes, I would promise ballot ``n``"; ``i`` is the answerer's next slot. Nothing is
    promised or persisted: the real ``Prepare`` still decides."""

    n: int
    i: int


Message: TypeAlias = Prepare | Promise | Nak | Accept | Accepted | Commit | PreVote | PreVoteOk


# ---------------------------------------------------------------------------------------------
# Recovery input.


@dataclass(frozen=True, slots=True, kw_only=True)
class Recovered:
    """What a node found on disk at start (rules R1-R3).

    ``last`` is the last log entry after torn-tail repair; ``applied_i`` the store's applied slot
    after replaying the log up to ``last.i - 1`` (or ``last.i`` on a single voter), -1 when
    empty; ``promised_n`` the persisted promise (0 when none); ``lease_holder`` the node named by
    the newest ``MasterSet`` the store applied, if known.
    """

    last: LogEntry | None = None
    applied_i: int = -1
    promised_n: int = 0
    lease_holder: str | None = None
    # R9: the node lost its durable state while the cluster has a history (decided by the
    # driver from the cluster identity), or had not finished rebuilding when it stopped. It
    # starts as a non-voter and becomes a voter only by the rebuild rule in ``core``.
    rebuilding: bool = False
    # The newest ``Membership`` the store applied (None: the static one is still in force).
    membership: Membership | None = None
    # The node joins a cluster that may already have a master (a founder that finished forming
    # after the others did): like a remembered lease (R2), it waits a lease period before it
    # may run, instead of a cold start's short delay that would depose a fresh master.
    quiet_start: bool = False


# ---------------------------------------------------------------------------------------------
# Events: inputs to ``step``.


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientRequest:
    rid: int
    payload: bytes
    sync: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Tick:
    """Time passed: fire every timer that is due at the step's ``now``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Receive:
    src: str
    msg: Message


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientBatch:
    requests: tuple[ClientRequest, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Persisted:
    """The ``Persist`` of slot ``i`` under ballot ``n`` is durable."""

    i: int
    n: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Applied:
    """The store applied slot ``i``; one opaque result per payload of the batch."""

    i: int
    results: tuple[object, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class CatchupDone:
    """The driver copied and applied every chosen slot up to ``applied_i`` from the source.

    ``last`` is the node's last log entry afterwards; ``lease_holder`` is the node named by the
    newest ``MasterSet`` among the slots *this transfer* applied (``None`` if it applied none):
    the node cannot tell how recent that lease is, so it counts it as starting now (R2).
    """

    applied_i: int
    last: LogEntry | None
    lease_holder: str | None = None
    # The store's membership after the transfer (None: the static one is still in force).
    membership: Membership | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CatchupFailed:
    source: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DropMaster:
    """Admin request: stop being master. Answered by ``Reply(rid, None)`` or ``Fail``."""

    rid: int


class MemberOp(Enum):
    ADD = "add"  # add as a learner
    PROMOTE = "promote"  # learner -> voter, once it has caught up
    REMOVE = "remove"  # voter or learner (the master included)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeMembership:
    """Admin request: change the membership by one node. Answered, once the new membership is
    chosen and applied, by ``Reply(rid, Membership)``, or by ``Fail``. ``address`` is the new
    node's (``ADD`` only)."""

    rid: int
    op: MemberOp
    node: str
    address: str = ""


Event: TypeAlias = (
    Tick
    | Receive
    | ClientBatch
    | Persisted
    | Applied
    | CatchupDone
    | CatchupFailed
    | DropMaster
    | ChangeMembership
)


# ---------------------------------------------------------------------------------------------
# Effects: outputs of ``step`` (see the effect contract in ``core``).


@dataclass(frozen=True, slots=True, kw_only=True)
class Send:
    to: str
    msg: Message


@dataclass(frozen=True, slots=True, kw_only=True)
class Broadcast:
    """Send to every other member, voters and learners (``Config.peers`` of the membership
    in force, ``core.effective_config``): learners ignore what is not for them, and a learner
    that is ahead tells a candidate behind it so (it may have applied a membership change the
    candidate has not)."""

    msg: Message


@dataclass(frozen=True, slots=True, kw_only=True)
class Persist:
    """Append ``entry`` to the log, or rewrite the last entry if it has the same slot."""

    entry: LogEntry
    sync: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class PersistPromise:
    """Make the promised ballot ``n`` durable (**[stronger]**)."""

    n: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Apply:
    """Apply chosen slot ``i`` to the store; answer with ``Applied(i, results)``."""

    i: int
    value: Value


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    rid: int
    result: object


@dataclass(frozen=True, slots=True, kw_only=True)
class Fail:
    rid: int
    code: FailCode


@dataclass(frozen=True, slots=True, kw_only=True)
class StartCatchup:
    """Fetch every chosen slot from ``from_i`` on from ``source``; answer ``CatchupDone``."""

    source: str
    from_i: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Rebuilt:
    """The node has finished rebuilding (R9): record durably that it is a voter again.

    Like ``PersistPromise``, a ``Send`` that follows it in the same list must wait until it is
    durable; the ``PersistPromise`` of the ballot floor comes just before it. If the node stops
    before it is durable, it restarts rebuilding (safe: it only delays the vote).
    """

    applied_i: int
    n: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RoleChanged:
    """For the driver's logs and metrics (the core does no logging)."""

    role: Role
    n: int
    master: str | None


Effect: TypeAlias = (
    Send
    | Broadcast
    | Persist
    | PersistPromise
    | Rebuilt
    | Apply
    | Reply
    | Fail
    | StartCatchup
    | RoleChanged
)
