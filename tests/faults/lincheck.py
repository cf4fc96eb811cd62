"""A linearizability checker for histories of single-key register operations.

Theory of operation
-------------------

A history is a set of operations, each with the time its client invoked it (``t_call``), the time
the answer arrived (``t_return``) and what the answer was. The history is *linearizable* when every
operation can be given one instant between its call and its return, such that running the
operations one by one in the order of those instants, on one register per key that starts empty,
gives exactly the answers the clients saw (Herlihy & Wing, 1990).

The search is the one of Wing & Gong (1993) with the improvements that Lowe (2017) and the
Porcupine checker describe:

* **Partition by key.** Every operation here touches one key, and registers on different keys are
  independent, so a history is linearizable iff each key's sub-history is. Each key is searched on
  its own, which keeps the search space per key small.
* **Events in time order.** Calls and returns become one list sorted by time. At equal times a call
  sorts before a return, so two operations that touch at one instant count as concurrent (the
  checker never claims an order the clock could not see).
* **Depth-first search with backtracking.** Walking the list, the search tries to linearize the
  next call whose model step accepts the recorded answer; it then removes that operation's call
  and return from the list and starts over at the head. Reaching a *return* means that operation
  should already have happened: the search undoes the most recent choice and tries the next call.
  An empty undo stack at that point proves that no linearization exists.
* **Memoisation.** A configuration is (the set of linearized operations, the register's state).
  The search never expands the same configuration twice: it led nowhere the first time. The set is
  a Python ``int`` used as a bitmask, the state is ``bytes | None``, so the pair is hashable.

Unknown outcomes
----------------

A write whose answer never came (the connection broke after the request left, the call timed out,
or the node said ``E_NO_LONGER_MASTER``) may have taken effect or not, and may take effect long
after the client gave up: a new master can still choose a value an old one proposed. Such an
operation gets ``t_return = +inf`` and an unconstrained answer. The search may linearize it at any
instant after its call; "it never happened" is the same as linearizing it after every other
operation, where nobody can observe it. When only such operations are left, the search succeeds.

Three exact reductions keep unknown operations from blowing up the search (each removes only
configurations from which a better one is tried anyway, so verdicts do not change; the unit tests
compare the search with a brute-force enumeration to keep that honest):

* **U1**: an unknown operation whose step changes nothing (a test-and-set whose expected value
  does not match) is never placed; not placing it is the same.
* **U2**: a blind write never directly follows an unknown operation: the unknown one's effect
  would vanish unseen, and the same write placed without it reaches a configuration with more
  options left. (Configurations therefore also record whether the last operation placed had an
  unknown outcome: the two kinds are explored differently.)
* **Dominance**: a configuration that failed and had used a *subset* of the unknown operations
  that another one with the same completed operations and the same state has used, proves that
  the other one fails too (see ``_dominated``). Completed operations are tried before unknown
  ones so that failures are found with few unknown ones used.

Values are also made canonical: a written value that no operation ever observes (no read or
test-and-set answered it, no operation expects it) behaves like every other such value, so all
of them become one marker and the memo merges the configurations that differ only there.

A write that failed with a *definite* error (``E_NOT_MASTER`` before it was proposed, a refused
connection) had no effect; the checker drops it (outcome ``FAILED``). Reads that fail are dropped
too: a read has no effect, and a failed one observed nothing.

The register model
------------------

``get`` answers the value or not-found (``None``). ``set`` writes. ``test_and_set`` answers the
value before the call and writes ``wanted`` exactly when that value equals ``expected`` (``None``
on either side means "absent"; a ``None`` wanted deletes; TEST_AND_SET in protocol §8, and
protocol §11 rule 8). ``cas`` is the single-key sequence
``[Assert(key, expected), Set(key, new)]``: it either succeeds and writes ``new``, or fails with
``E_ASSERTION_FAILED`` and writes nothing. That failure is still an observation (the value was not
``expected`` at the instant the sequence was applied), so it is recorded as a completed operation
with ``result=False``.

Bounds
------

The search is exponential in the worst case (many concurrent or unknown operations on one key).
``steps_max`` bounds the number of search steps per key and ``deadline`` (a ``time.monotonic()``
instant) bounds the whole check. Running out of either gives the verdict ``UNKNOWN``, which is
reported distinctly from ``VIOLATION``: we could not decide, which is not the same as "wrong".
"""

from __future__ import annotations

import enum
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import assert_never

#: Search steps allowed per key before the verdict becomes UNKNOWN.
STEPS_MAX_PER_KEY_DEFAULT = 2_000_000
#: How many operations a violation report lists around the point where the search got stuck.
CONTEXT_OPS_MAX_DEFAULT = 24

INFINITY = math.inf


class OpKind(enum.Enum):
    GET = "get"
    SET = "set"
    TEST_AND_SET = "test_and_set"
    CAS = "cas"


class Outcome(enum.Enum):
    """What the client learned about an operation.

    ``OK``: the server gave the operation's answer (for ``cas`` that includes the assertion
    failure). ``FAILED``: a definite error, no effect (the checker drops it). ``UNKNOWN``: the
    operation may or may not have taken effect (its return time is then +inf).
    """

    OK = "ok"
    FAILED = "failed"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True, kw_only=True)
class Operation:
    """One client operation on one key, as the workload recorded it.

    Arguments per kind: ``set`` uses ``value``; ``test_and_set`` uses ``expected`` and ``value``
    (the wanted value, ``None`` deletes); ``cas`` uses ``expected`` and ``value`` (the new value);
    ``get`` uses neither. ``result``: ``get`` the value read or ``None`` for not-found;
    ``test_and_set`` the value before the call; ``cas`` whether it was applied; ``set`` ``None``.
    ``detail`` says in words what happened (an error code, "timeout") for reports only.
    """

    op_id: int
    client: int
    kind: OpKind
    key: bytes
    value: bytes | None = None
    expected: bytes | None = None
    t_call: float
    t_return: float
    outcome: Outcome
    result: bytes | bool | None = None
    detail: str = ""

    def __post_init__(self) -> None:
        if self.outcome is Outcome.UNKNOWN and self.t_return != INFINITY:
            raise ValueError(f"op {self.op_id}: an unknown outcome must have t_return=+inf")
        if self.outcome is not Outcome.UNKNOWN and not self.t_call <= self.t_return < INFINITY:
            raise ValueError(
                f"op {self.op_id}: t_call={self.t_call} t_return={self.t_return} out of order"
            )
        if (
            self.kind is OpKind.CAS
            and self.outcome is Outcome.OK
            and not isinstance(self.result, bool)
        ):
            raise ValueError(f"op {self.op_id}: a completed cas needs a bool result")


class Verdict(enum.Enum):
    LINEARIZABLE = "linearizable"
    VIOLATION = "violation"
    #: The search ran out of steps or time before it could decide.
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyReport:
    key: bytes
    verdict: Verdict
    ops: int
    steps: int
    #: For a violation: the operations around the point where the search got stuck.
    context: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckReport:
    verdict: Verdict
    keys: tuple[KeyReport, ...]
    elapsed_secs: float

    def describe(self) -> str:
        """A summary line per verdict and the context of every key that is not linearizable."""
        counts = {v: sum(1 for k in self.keys if k.verdict is v) for v in Verdict}
        ops = sum(k.ops for k in self.keys)
        steps = sum(k.steps for k in self.keys)
        lines = [
            f"lincheck: {self.verdict.value}: {len(self.keys)} keys, {ops} ops, {steps} steps, "
            f"{self.elapsed_secs:.2f}s; "
            + ", ".join(f"{v.value}={n}" for v, n in counts.items() if n)
        ]
        for k in self.keys:
            if k.verdict is not Verdict.LINEARIZABLE:
                lines.append(k.context or f"key {k.key!r}: {k.verdict.value}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The model


def step(state: bytes | None, op: Operation) -> tuple[bool, bytes | None]:
    """Apply ``op`` to a register holding ``state``: (does its answer fit, the state after)."""
    known = op.outcome is Outcome.OK
    match op.kind:
        case OpKind.GET:
            return (op.result == state, state)
        case OpKind.SET:
            return (True, op.value)
        case OpKind.TEST_AND_SET:
            if known and op.result != state:
                return (False, state)
            return (True, op.value if state == op.expected else state)
        case OpKind.CAS:
            matches = state == op.expected
            if known and op.result is not matches:
                return (False, state)
            return (True, op.value if matches else state)
        case _:
            assert_never(op.kind)


# ---------------------------------------------------------------------------------------------
# The search


def check_history(
    ops: Iterable[Operation],
    *,
    initial: dict[bytes, bytes | None] | None = None,
    steps_max_per_key: int = STEPS_MAX_PER_KEY_DEFAULT,
    time_budget_secs: float = 60.0,
    context_ops_max: int = CONTEXT_OPS_MAX_DEFAULT,
    t0: float | None = None,
) -> CheckReport:
    """Check a whole history, key by key. Keys start absent unless ``initial`` says otherwise.

    Operations with outcome ``FAILED`` are dropped, and so are ``get`` operations whose outcome
    is not ``OK``. The verdict is VIOLATION if any key has one, else UNKNOWN if any key ran out
    of its budget, else LINEARIZABLE. Keys are checked in order of their name, every key even
    after a violation, as long as the time budget lasts. Reports show times relative to ``t0``
    (default: each key's first call).
    """
    started = time.monotonic()
    deadline = started + time_budget_secs
    by_key: dict[bytes, list[Operation]] = defaultdict(list)
    for op in ops:
        by_key[op.key].append(op)
    start_states = initial or {}
    reports = []
    for key in sorted(by_key):
        reports.append(
            check_key(
                key,
                by_key[key],
                initial=start_states.get(key),
                steps_max=steps_max_per_key,
                deadline=deadline,
                context_ops_max=context_ops_max,
                t0=t0,
            )
        )
    verdicts = {r.verdict for r in reports}
    if Verdict.VIOLATION in verdicts:
        verdict = Verdict.VIOLATION
    elif Verdict.UNKNOWN in verdicts:
        verdict = Verdict.UNKNOWN
    else:
        verdict = Verdict.LINEARIZABLE
    return CheckReport(
        verdict=verdict, keys=tuple(reports), elapsed_secs=time.monotonic() - started
    )


def relevant(ops: Iterable[Operation]) -> list[Operation]:
    """The operations the search must place: no definite failures, no reads that failed."""
    return [
        op
        for op in ops
        if op.outcome is not Outcome.FAILED
        and not (op.kind is OpKind.GET and op.outcome is not Outcome.OK)
    ]


def check_key(
    key: bytes,
    history: Sequence[Operation],
    *,
    initial: bytes | None = None,
    steps_max: int = STEPS_MAX_PER_KEY_DEFAULT,
    deadline: float = INFINITY,
    context_ops_max: int = CONTEXT_OPS_MAX_DEFAULT,
    t0: float | None = None,
) -> KeyReport:
    """Search for a linearization of one key's operations (see the module docstring)."""
    ops = relevant(history)
    for op in ops:
        if op.key != key:
            raise ValueError(f"op {op.op_id} is on key {op.key!r}, not {key!r}")
    n = len(ops)
    canon = _Canon(ops)
    start_state = canon.value(initial)
    # Per operation, what the model step needs, with values in canonical form.
    kinds = [op.kind for op in ops]
    known = [op.outcome is Outcome.OK for op in ops]
    writes = [canon.value(op.value) for op in ops]
    expects = [canon.value(op.expected) for op in ops]
    results = [canon.result(op.result) for op in ops]
    unknown = [op.t_return == INFINITY for op in ops]
    blind = [op.kind is OpKind.SET for op in ops]
    unknown_mask = sum(1 << i for i in range(n) if unknown[i])
    finite_mask = ((1 << n) - 1) & ~unknown_mask

    # The event list: entry 0 is the head sentinel, entries 1..2n the calls and returns in time
    # order; NIL ends the list. prv/nxt are the links; removed entries keep theirs, so that
    # undoing removals in reverse order (a stack) restores the list exactly.
    events = sorted(
        [(op.t_call, 0, i) for i, op in enumerate(ops)]
        + [(op.t_return, 1, i) for i, op in enumerate(ops)]
    )
    nil = -1
    size = 2 * n + 1
    nxt = [k + 1 for k in range(size)]
    nxt[-1] = nil
    prv = [k - 1 for k in range(size)]
    is_call = [False] * size
    op_of = [0] * size
    return_of = [0] * size
    call_entry = [0] * n
    for entry, (_, is_return, i) in enumerate(events, start=1):
        op_of[entry] = i
        if is_return:
            return_of[call_entry[i]] = entry
        else:
            is_call[entry] = True
            call_entry[i] = entry
    finite_left = n - sum(unknown)

    def lift(call: int) -> None:
        nxt[prv[call]] = nxt[call]
        if nxt[call] != nil:
            prv[nxt[call]] = prv[call]
        ret = return_of[call]
        nxt[prv[ret]] = nxt[ret]
        if nxt[ret] != nil:
            prv[nxt[ret]] = prv[ret]

    def unlift(call: int) -> None:
        ret = return_of[call]
        nxt[prv[ret]] = ret
        if nxt[ret] != nil:
            prv[nxt[ret]] = ret
        nxt[prv[call]] = call
        if nxt[call] != nil:
            prv[nxt[call]] = call

    # A configuration: (linearized set as a bitmask, state, whether the last operation placed
    # had an unknown outcome). The flag is part of it because rule U2 below limits what may
    # follow such an operation, so the two kinds of configuration are explored differently.
    Config = tuple[int, bytes | None, bool]
    state = start_state
    linearized = 0
    after_unknown = False
    seen: set[Config] = set()
    # Configurations whose every continuation failed, by (finite part, state, flag): the
    # unknown operations each had used. See _dominated.
    failed: dict[Config, list[int]] = defaultdict(list)
    stack: list[tuple[int, bytes | None, bool]] = []
    # The deepest partial linearization found, for the violation report.
    best_order: tuple[int, ...] = ()
    best_state = start_state
    best_stuck = -1
    steps = 0
    entry = nxt[0]
    # Among the calls that may go next, completed operations are tried before unknown ones
    # (two passes over the same stretch of the list): most unknown writes never took effect,
    # and a failed configuration that used fewer of them prunes more (see _dominated).
    unknown_pass = False
    while finite_left > 0:
        steps += 1
        if steps > steps_max or (steps % 4096 == 0 and time.monotonic() > deadline):
            return KeyReport(
                key=key,
                verdict=Verdict.UNKNOWN,
                ops=n,
                steps=steps,
                context=f"key {key!r}: undecided after {steps} steps ({n} ops, "
                f"{n - finite_mask.bit_count()} unknown); deepest partial linearization "
                f"placed {len(best_order)} ops",
            )
        if is_call[entry]:
            i = op_of[entry]
            # Rule U2: an unknown operation immediately followed by a blind write was pointless;
            # the same write without it (tried from the parent) reaches a better configuration.
            if unknown[i] is unknown_pass and not (after_unknown and blind[i]):
                fits, after = _apply(kinds[i], state, writes[i], expects[i], results[i], known[i])
                # Rule U1: an unknown operation that changes nothing need not be placed at all.
                if fits and not (unknown[i] and after == state):
                    config = (linearized | (1 << i), after, unknown[i])
                    if config not in seen and not (
                        unknown_mask and _dominated(failed, config, finite_mask, unknown_mask)
                    ):
                        seen.add(config)
                        stack.append((entry, state, after_unknown))
                        linearized, state, after_unknown = config
                        lift(entry)
                        if not unknown[i]:
                            finite_left -= 1
                        entry = nxt[0]
                        unknown_pass = False
                        continue
            entry = nxt[entry]
        elif not unknown_pass:
            unknown_pass = True
            entry = nxt[0]
        else:
            # The deepest point of the search is always right before a backtrack; remember it
            # (and the operation whose return stopped it) for the violation report.
            if len(stack) > len(best_order) or best_stuck < 0:
                best_order = tuple(op_of[e] for e, _, _ in stack)
                best_state = state
                best_stuck = op_of[entry]
            if not stack:
                return KeyReport(
                    key=key,
                    verdict=Verdict.VIOLATION,
                    ops=n,
                    steps=steps,
                    context=_violation_context(
                        key, ops, initial, best_order, best_state, best_stuck, context_ops_max, t0
                    ),
                )
            if unknown_mask:
                failed[(linearized & finite_mask, state, after_unknown)].append(
                    linearized & unknown_mask
                )
            entry, state, after_unknown = stack.pop()
            i = op_of[entry]
            linearized &= ~(1 << i)
            unlift(entry)
            if not unknown[i]:
                finite_left += 1
            unknown_pass = unknown[i]
            entry = nxt[entry]
    return KeyReport(key=key, verdict=Verdict.LINEARIZABLE, ops=n, steps=steps)


def _apply(
    kind: OpKind,
    state: bytes | None,
    write: bytes | None,
    expected: bytes | None,
    result: bytes | bool | None,
    known: bool,
) -> tuple[bool, bytes | None]:
    """``step`` on canonical values (the search's inner loop)."""
    if kind is OpKind.GET:
        return (result == state, state)
    if kind is OpKind.SET:
        return (True, write)
    if kind is OpKind.TEST_AND_SET:
        if known and result != state:
            return (False, state)
        return (True, write if state == expected else state)
    matches = state == expected
    if known and result is not matches:
        return (False, state)
    return (True, write if matches else state)


class _Canon:
    """Canonical values: every value that no operation can tell apart from another one.

    A register's state matters to an operation only through equality with a value that the
    operation carries: a read's answer, a test-and-set's answer, an expected value. A written
    value that is none of these is never *observed*; two states holding such values behave
    the same under every operation. Mapping them all to one marker merges configurations that
    differ only there, which is exact and keeps the memo small when most writes go unread.
    """

    def __init__(self, ops: Sequence[Operation]) -> None:
        observed: set[bytes] = set()
        for op in ops:
            for v in (op.expected, op.result if op.outcome is Outcome.OK else None):
                if isinstance(v, bytes):
                    observed.add(v)
        self.observed = observed
        marker = b"<a value no operation observed>"
        while marker in observed:
            marker += b"!"
        self.marker = marker

    def value(self, v: bytes | None) -> bytes | None:
        if v is None or v in self.observed:
            return v
        return self.marker

    def result(self, r: bytes | bool | None) -> bytes | bool | None:
        return self.value(r) if isinstance(r, bytes) else r


def _dominated(
    failed: dict[tuple[int, bytes | None, bool], list[int]],
    config: tuple[int, bytes | None, bool],
    finite_mask: int,
    unknown_mask: int,
) -> bool:
    """Whether a configuration that failed already had every option this one has.

    Dominance: take two configurations with the same completed operations linearized, the same
    state and the same flag, where the first has used a subset of the unknown operations the
    second has used. Any way to finish from the second also finishes from the first (an unknown
    operation still unused can be placed whenever it is needed, and unused ones never block,
    since their returns lie at +inf). So once the first has failed, the second must fail too.
    """
    linearized, state, flag = config
    used = linearized & unknown_mask
    return any(
        earlier & ~used == 0 for earlier in failed.get((linearized & finite_mask, state, flag), ())
    )


# ---------------------------------------------------------------------------------------------
# Reports


def describe_op(op: Operation, t0: float = 0.0) -> str:
    """One line: client, id, call, answer and the interval relative to ``t0``."""
    match op.kind:
        case OpKind.GET:
            call = f"get({op.key!r})"
        case OpKind.SET:
            call = f"set({op.key!r}, {op.value!r})"
        case OpKind.TEST_AND_SET:
            call = f"test_and_set({op.key!r}, expected={op.expected!r}, wanted={op.value!r})"
        case OpKind.CAS:
            call = f"cas({op.key!r}, expected={op.expected!r}, new={op.value!r})"
        case _:
            assert_never(op.kind)
    match op.outcome:
        case Outcome.OK:
            answer = "-> " + ("ok" if op.kind is OpKind.SET else repr(op.result))
        case Outcome.FAILED:
            answer = "-> failed"
        case Outcome.UNKNOWN:
            answer = "-> unknown"
        case _:
            assert_never(op.outcome)
    if op.detail:
        answer += f" ({op.detail})"
    end = "inf" if op.t_return == INFINITY else f"{op.t_return - t0:.4f}"
    return f"[{op.t_call - t0:.4f}, {end}] c{op.client} #{op.op_id} {call} {answer}"


def _violation_context(
    key: bytes,
    ops: Sequence[Operation],
    initial: bytes | None,
    best_order: tuple[int, ...],
    best_state: bytes | None,
    stuck: int,
    context_ops_max: int,
    t0: float | None,
) -> str:
    """Explain where the search got stuck: the deepest partial linearization, the completed
    operation that could not be placed after it, and the operations whose intervals surround
    that one."""
    if t0 is None:
        t0 = min((op.t_call for op in ops), default=0.0)
    lines = [f"key {key!r}: NOT linearizable ({len(ops)} ops, initial state {initial!r})"]
    lines.append(
        f"  deepest partial linearization places {len(best_order)} ops, ending in state "
        f"{best_state!r}; its last steps:"
    )
    lines.extend("    " + describe_op(ops[i], t0) for i in best_order[-5:])
    s = ops[stuck]
    lines.append("  completed operation that cannot be placed after it:")
    lines.append("    " + describe_op(s, t0))
    # The window: from a little before the last placed operations up to the stuck one's return,
    # so that the reader sees the writes that the stuck answer contradicts.
    recent = [ops[i].t_call for i in best_order[-3:]]
    start = min([s.t_call, *recent])
    window = [
        op
        for op in sorted(ops, key=lambda o: o.t_call)
        if op.t_call <= s.t_return and op.t_return >= start
    ]
    lines.append(
        f"  operations overlapping [{start - t0:.4f}, {s.t_return - t0:.4f}]"
        f" ({len(window)}, at most {context_ops_max} shown):"
    )
    lines.extend("    " + describe_op(op, t0) for op in window[-context_ops_max:])
    return "\n".join(lines)
