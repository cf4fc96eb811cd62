"""The node driver: feeds the pure Paxos core its events and carries out its effects.

The core (:mod:`parakoon_paxos`) decides; this module does. Everything here runs on the node's
one event loop, so a call to :meth:`Driver.handle` is atomic with respect to other tasks: it
steps the core and executes the resulting effects without awaiting. Work that must not block the
loop (WAL appends and their fsync) is handed to the :class:`Persister`, which runs it in a worker
thread and reports back.

Effect contract, as the core defines it (``parakoon_paxos.core``), and how we honour it:

* Effects are executed in list order.
* A ``Send``/``Broadcast``/``Reply``/``Fail`` that comes *after* a ``Persist`` or
  ``PersistPromise`` in the same list must not leave before that write is durable. We queue such
  effects behind the write in the persister; they run, in order, once the fsync that covers the
  write has returned. Effects before the first write run at once (a leader's ``Broadcast(Accept)``
  precedes its own ``Persist``, so followers start their fsync in parallel with the leader's).
* ``Persist`` is answered by ``Persisted``, ``Apply`` by ``Applied``. Applying is synchronous
  (the store is in memory), so ``Applied`` is fed back before the next effect is executed; slot
  order is therefore the order of the list.
* ``StartCatchup`` starts a background task that ends with ``CatchupDone``/``CatchupFailed``.
* ``Rebuilt`` (R9) is a durable write like ``PersistPromise``: the identity file records that
  the node votes again, in order with the log writes, before what follows it is sent.

While the node is still *founding* (no cluster history yet, see
:mod:`parakoon_node.runtime.identity`) the driver is ``held``: events are dropped, the core does
not run, and writes are refused.

Client requests: :meth:`Driver.submit_write` parks the caller on a :class:`Waiter` and hands the
request to the core in a ``ClientBatch`` (all requests that arrived in the same loop iteration go
together). The core answers with ``Reply`` (after the slot is chosen and applied) or ``Fail``.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, Protocol

import anyio
import structlog

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
    FailCode,
    LogEntry,
    MemberOp,
    Membership,
    Message,
    Persist,
    Persisted,
    PersistPromise,
    Rebuilt,
    Receive,
    Reply,
    Role,
    RoleChanged,
    Send,
    StartCatchup,
    Tick,
    Value,
)
from parakoon_paxos import core as paxos
from parakoon_paxos.contract import NOW, stage

from .stages import WriteStages
from .stages import clock as perf_clock

log = structlog.get_logger("parakoon.driver")


#: Log entries the persister may hold unwritten before client writes are refused (OVERLOADED).
PERSIST_BACKLOG_MAX = 10_000
#: A group commit (write + fdatasync) slower than this is logged as ``disk.slow_fsync``, at
#: most once per ``SLOW_FSYNC_LOG_EVERY_SECS``.
SLOW_FSYNC_SECS = 1.0
#: Bytes of client updates a node below its disk reserve still accepts per episode (see
#: Driver.refuse_entries): far below any sensible reserve, enough for a value in flight.
LOW_SPACE_ACCEPT_BUDGET = 1 << 20
SLOW_FSYNC_LOG_EVERY_SECS = 10.0

StepFn = Callable[[Config, Any, Event, float], tuple[Any, list[Effect]]]


class Transport(Protocol):
    """What the driver needs from the peer network."""

    def send(self, to: str, msg: Message) -> None: ...

    def broadcast(self, peers: Sequence[str], msg: Message) -> None: ...


class Applier(Protocol):
    """What the driver needs from the storage layer to apply chosen values."""

    def apply(self, i: int, value: Value) -> tuple[object, ...]: ...


class WriteLog(Protocol):
    """Durable writes the persister performs in a worker thread."""

    def append_entries(self, entries: Sequence[LogEntry]) -> None: ...

    def save_promise(self, n: int) -> None: ...

    def mark_rebuilt(self) -> None: ...


def _carries_client_data(msg: Accept) -> bool:
    """Whether an Accept holds client updates (as opposed to a lease renewal or a no-op)."""
    value = msg.value
    return isinstance(value, Batch) and bool(value.payloads)


class Waiter:
    """One parked client request, resolved once by ``Reply``, ``Fail`` or the write timeout.

    A plain asyncio future: the node always runs anyio on its asyncio backend (uvloop where
    available), and on the hot path of every write a future is several times cheaper than an
    ``anyio.Event`` plus a cancel scope for the timeout. Timeouts are swept by the ticker
    instead (:meth:`Driver.expire_waiters`), so awaiting needs no cancel scope at all.
    """

    __slots__ = (
        "deadline",
        "decoded",
        "failure",
        "future",
        "payload",
        "resolved_at",
        "result",
        "timed_out",
    )

    def __init__(self, deadline: float, payload: bytes = b"", decoded: object = None) -> None:
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.result: object = None
        self.failure: FailCode | None = None
        self.timed_out = False
        self.deadline = deadline
        self.payload = payload
        self.decoded = decoded
        self.resolved_at = 0.0  # perf_counter when answered with a result (write stages)

    def resolve(self, result: object) -> None:
        if not self.future.done():
            self.result = result
            self.resolved_at = perf_clock()
            self.future.set_result(None)

    def fail(self, code: FailCode) -> None:
        if not self.future.done():
            self.failure = code
            self.future.set_result(None)

    def expire(self) -> None:
        if not self.future.done():
            self.timed_out = True
            self.future.set_result(None)

    @property
    def done(self) -> bool:
        return self.future.done()

    async def wait(self) -> None:
        await self.future


#: The events after which a leader's batch linger may start (its deadline shows in
#: ``next_deadline`` once a slot is answered and requests are queued): the ticker is brought
#: forward after them.
_MAY_START_LINGER: Final = frozenset({Applied, ClientBatch})


@dataclass(slots=True)
class _WriteJob:
    """A run of durable writes followed by the effects that must wait for them."""

    entries: list[LogEntry] = field(default_factory=list)
    promise: int | None = None
    rebuilt: bool = False
    after: list[Effect] = field(default_factory=list)
    # perf_counter stamps for the write stages: handed to the persister, and the start and
    # end of the group commit that wrote it (in the writer thread).
    queued: float = 0.0
    began: float = 0.0
    ended: float = 0.0


class WriteAbandoned(Exception):
    """The node stops while a log write hangs: it no longer waits for it (see ``abandon``)."""


_Call = tuple[Callable[[], None], asyncio.AbstractEventLoop, asyncio.Future[None]]


class _WriterThread:
    """One long-lived thread that runs the persister's group commits.

    Why not ``anyio.to_thread.run_sync``: its hand-off (a capacity limiter, a worker picked
    from a pool, a cancel scope) measured about 80 us per call on this machine against about
    13 us for a queue and ``call_soon_threadsafe``, and every acknowledged write waits for two
    of them (the master's and a follower's). One thread also keeps the writes in order by
    construction.

    Cancelling the caller never abandons a write half-way (the wait is shielded), so a node
    whose disk hangs would wait for ever on its way out; ``abandon`` is the one way to stop
    waiting, for the shutdown only. The thread is a daemon, so the interpreter does not wait
    for it either (the kernel may still, for a write stuck in the device).
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pending: asyncio.Future[None] | None = None

    async def run(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the thread; return (or raise) once it has. Cancelling the caller
        does not abandon the call: the write goes on, and we wait for it (shielded)."""
        if self._thread is None or not self._thread.is_alive():
            # A thread of our own with a queue of its own: a thread left over from a stopped
            # run must never take (and reorder) a later write.
            self._calls = queue.SimpleQueue()
            self._thread = threading.Thread(
                target=self._work, args=(self._calls,), name=self._name, daemon=True
            )
            self._thread.start()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._pending = done
        self._calls.put((fn, loop, done))
        try:
            with anyio.CancelScope(shield=True):
                await done
        finally:
            self._pending = None

    def abandon(self) -> bool:
        """Stop waiting for the write under way (it raises ``WriteAbandoned`` to the caller);
        True if there was one. The write itself goes on, or hangs, in the thread."""
        pending = self._pending
        if pending is None or pending.done():
            return False
        pending.set_exception(WriteAbandoned("the node stopped while this log write hung"))
        self.stop()
        return True

    def stop(self) -> None:
        if self._thread is not None:
            self._calls.put(None)
            self._thread = None

    @staticmethod
    def _work(calls: queue.SimpleQueue[_Call | None]) -> None:
        while True:
            call = calls.get()
            if call is None:
                return
            fn, loop, done = call
            failure: BaseException | None = None
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 (handed to the awaiting task)
                failure = exc
            try:
                loop.call_soon_threadsafe(_settle, done, failure)
            except RuntimeError:
                if not loop.is_closed():
                    raise
                # The loop is gone (the node or a test ended): nobody waits for this answer.
            # Let go of the group commit (entries, payloads, held effects) while idle.
            del call, fn, loop, done, failure


def _settle(done: asyncio.Future[None], failure: BaseException | None) -> None:
    if done.done():
        return  # abandoned meanwhile
    if failure is None:
        done.set_result(None)
    else:
        done.set_exception(failure)


class Persister:
    """Group commit: every write queued while one fsync runs goes into the next one.

    Writes are executed strictly in the order they were queued. A job's ``after`` effects are
    handed back to the driver, in order, only when that job and every job before it is durable.
    """

    def __init__(self, log_writer: WriteLog, on_done: Callable[[_WriteJob], None]) -> None:
        self._writer = log_writer
        self._on_done = on_done
        self._jobs: deque[_WriteJob] = deque()
        self._wake = anyio.Event()
        self._closed = False
        # Held while writing; catch-up takes it to own the log. fast_acquire: taking it when
        # free does not yield to the loop first, one loop iteration less per group commit.
        self.lock = anyio.Lock(fast_acquire=True)
        self._progress = anyio.Event()  # set (and replaced) after each group commit
        # When the write under way started (None while idle): a disk that hangs shows here.
        self.busy_since: float | None = None
        self.queued_entries = 0  # log entries handed to us and not yet written
        self.fsyncs = 0
        self.fsync_observer: Callable[[float], None] | None = None
        self.slow_fsyncs = 0
        self._slow_logged_at = -SLOW_FSYNC_LOG_EVERY_SECS
        self._thread = _WriterThread("parakoon-wal-writer")
        self.abandoned = False  # see abandon()

    def submit(self, job: _WriteJob) -> None:
        job.queued = perf_clock()
        self._jobs.append(job)
        self.queued_entries += len(job.entries)
        self._wake.set()

    @property
    def idle(self) -> bool:
        return not self._jobs and not self.lock.locked()

    async def wait_idle(self) -> None:
        """Return once every write queued so far is done (bounded by the writes themselves).

        Catch-up calls this before it takes the log over: a ``Persist`` queued just before the
        core switched to catching up must land before the transfer moves the log past it.
        """
        while not self.idle:
            # Woken by the writer after each group commit; the bound covers the other way to
            # become idle, a catch-up releasing the lock without any write after it.
            with anyio.move_on_after(0.05):
                await self._progress.wait()

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    async def run(self) -> None:
        try:
            await self._run()
        except WriteAbandoned:
            return  # the node is going down; nothing that waits for that write was sent
        finally:
            self._thread.stop()

    def abandon(self) -> bool:
        """For the node's shutdown: stop waiting for a write that hangs (see
        ``_WriterThread.abandon``); True if one was under way. The log must not be closed then:
        the thread may still be inside it."""
        self.abandoned = self._thread.abandon()
        return self.abandoned

    async def _run(self) -> None:
        while True:
            if not self._jobs:
                if self._closed:
                    return
                self._wake = anyio.Event()
                await self._wake.wait()
                continue
            jobs = list(self._jobs)
            self._jobs.clear()
            async with self.lock:
                started = time.monotonic()
                self.busy_since = started
                try:
                    await self._thread.run(partial(self._write_all, jobs))
                finally:
                    self.busy_since = None
                elapsed = time.monotonic() - started
            self.queued_entries -= sum(len(job.entries) for job in jobs)
            self.fsyncs += 1
            if self.fsync_observer is not None:
                self.fsync_observer(elapsed)
            if elapsed >= SLOW_FSYNC_SECS:
                self._slow_fsync(elapsed, sum(len(job.entries) for job in jobs))
            for job in jobs:
                self._on_done(job)
            progress, self._progress = self._progress, anyio.Event()
            progress.set()

    def _slow_fsync(self, elapsed: float, entries: int) -> None:
        """Warn of a slow group commit: every write waits for it. At most once per
        ``SLOW_FSYNC_LOG_EVERY_SECS``, with how many were slow in between."""
        self.slow_fsyncs += 1
        now = time.monotonic()
        if now - self._slow_logged_at < SLOW_FSYNC_LOG_EVERY_SECS:
            return
        self._slow_logged_at = now
        log.warning(
            "disk.slow_fsync",
            secs=round(elapsed, 3),
            entries=entries,
            slow_so_far=self.slow_fsyncs,
            note="every acknowledged write waits for this; see parakoon_fsync_seconds",
        )

    def _write_all(self, jobs: list[_WriteJob]) -> None:
        # Runs in the writer thread; stamps the group commit's start and end on its jobs.
        began = perf_clock()
        try:
            self._write_jobs(jobs)
        finally:
            ended = perf_clock()
            for job in jobs:
                job.began, job.ended = began, ended

    def _write_jobs(self, jobs: list[_WriteJob]) -> None:
        # Consecutive entries are appended with one call (one fsync); a promise is saved in
        # order with them. A rewrite of the same slot within one call keeps only the newest
        # copy, which is what the log would return anyway.
        pending: list[LogEntry] = []
        for job in jobs:
            for entry in job.entries:
                if pending and pending[-1].i == entry.i:
                    pending[-1] = entry
                else:
                    pending.append(entry)
            if (job.promise is not None or job.rebuilt) and pending:
                self._writer.append_entries(pending)
                pending = []
            if job.promise is not None:
                self._writer.save_promise(job.promise)
            if job.rebuilt:
                self._writer.mark_rebuilt()
        if pending:
            self._writer.append_entries(pending)


@dataclass(slots=True)
class DriverCounters:
    steps: int = 0
    batches_proposed: int = 0
    requests_submitted: int = 0
    applied_slots: int = 0
    applied_updates: int = 0
    role_changes: int = 0


class Driver:
    """Owns the Paxos state of one node and executes the effects of every step."""

    def __init__(
        self,
        config: Config,
        state: Any,
        *,
        transport: Transport,
        applier: Applier,
        write_log: WriteLog,
        start_catchup: Callable[[str, int], None],
        clock: Callable[[], float] = time.monotonic,
        on_applied: Callable[[int], None] | None = None,
        step: StepFn = paxos.step,
    ) -> None:
        self.config = config
        self.state = state
        self._transport = transport
        self._applier = applier
        self._start_catchup = start_catchup
        self._clock = clock
        # The core's step function: the real one, or a scripted one in the driver's own tests.
        self._step = step
        self._on_applied = on_applied
        self.persister = Persister(write_log, self._write_done)
        self._waiters: dict[int, Waiter] = {}
        # Leader only: the store update of each payload we proposed, so that applying our own
        # batch does not decode what we encoded a moment ago. Keyed by the payload object's id;
        # the waiter keeps the object alive, and the entry goes when the waiter is settled.
        self.decoded: dict[int, Waiter] = {}
        self.write_timeout_secs = max(10.0, 5 * config.lease_period)
        self._rids = itertools.count(1)
        self._incoming: list[ClientRequest] = []
        self._batch_wake = anyio.Event()
        self._events: deque[Event] = deque()
        self._busy = False
        # The ticker's next wake-up, and how to bring it forward: a batch linger (a few ms)
        # starts on an Applied or a ClientBatch and must not wait for a ticker asleep until
        # its ceiling (L / 20).
        self._tick_at = float("inf")
        self._tick_wake = anyio.Event()
        self.counters = DriverCounters()
        self.batch_observer: Callable[[float], None] | None = None
        # Where a write's time goes (runtime/stages.py), and when the oldest request not yet
        # handed to the core was submitted.
        self.stages = WriteStages()
        self._first_submitted: float | None = None
        # Set by an Apply of one of our client slots: (when, requests), closed after Applied.
        self._apply_started: tuple[float, int] | None = None
        # True while the node is founding: the core does not run yet (see the module doc).
        self.held = False
        self.dropped_accepts = 0  # Accepts dropped while the persist backlog was full
        # Set (to the reason) while our disk is below its free-space reserve: Accepts are
        # dropped, so a follower never writes its filesystem full (the node stays up, serves
        # reads and catches up once space returns). See refuse_entries.
        self.refusing_entries: str | None = None
        self._low_space_budget = 0
        # The replicated membership last seen in the state, and who to tell when it changes.
        self._members: Membership | None = getattr(state, "members", None)
        self.on_members: Callable[[Membership], None] | None = None

    def refuse_entries(self, reason: str | None) -> None:
        """Start (with the reason) or stop dropping the master's client updates for lack of
        disk space. A low node still takes ``LOW_SPACE_ACCEPT_BUDGET`` bytes of them per
        episode: enough to finish a value already in flight. Without that, when every disk is
        low and one client update was accepted by some nodes but not chosen, every new leader
        must re-propose it, the others drop it, no leader ever gets its lease value chosen and
        the cluster flaps between elections (seen on real processes)."""
        if reason is not None and self.refusing_entries is None:
            self._low_space_budget = LOW_SPACE_ACCEPT_BUDGET
        self.refusing_entries = reason

    def _within_low_budget(self, msg: Accept) -> bool:
        """Whether a low node may still take this Accept (always for renewals and no-ops)."""
        if not _carries_client_data(msg):
            return True
        assert isinstance(msg.value, Batch)
        size = sum(len(payload) for payload in msg.value.payloads)
        if size > self._low_space_budget:
            return False
        self._low_space_budget -= size
        return True

    # ---------------------------------------------------------------- queries for the server

    def role(self) -> Role:
        return paxos.role(self.state)

    def master(self) -> str | None:
        return paxos.master(self.config, self.state, self._clock())

    def lease_valid(self) -> bool:
        return paxos.lease_valid(self.config, self.state, self._clock())

    def lease_remaining(self) -> float | None:
        """Seconds left of the lease of the master this node believes in (see ``master``), or
        None when it believes in none. Our own lease counts for the shorter ``leader_lease``
        (what ``lease_valid`` trusts); a foreign one for ``lease_period`` from when we applied
        it (what our election guard waits out)."""
        config, now = self.config, self._clock()
        state: paxos.State = self.state
        if paxos.lease_valid(config, state, now):
            assert isinstance(state, paxos.Leader)
            return max(0.0, state.my_lease_start + config.leader_lease - now)
        if paxos.master(config, state, now) is None:
            return None
        return max(0.0, state.lease_start + config.lease_period - now)

    def applied_i(self) -> int:
        return paxos.applied_i(self.state)

    def effective_config(self) -> Config:
        """The configuration under the replicated membership in force (``cluster.toml``'s
        until one was applied)."""
        # (The driver's own tests script the core: their states need not be core states.)
        conf: Config | None = getattr(self.state, "conf", None)
        return conf or self.config

    def membership(self) -> Membership | None:
        return self._members

    # ---------------------------------------------------------------- event intake

    def handle(self, event: Event) -> None:
        """Step the core with ``event`` and execute the effects (re-entrancy safe)."""
        if self.held:
            if isinstance(event, ClientBatch):
                for req in event.requests:
                    waiter = self._waiters.pop(req.rid, None)
                    if waiter is not None:
                        waiter.fail(FailCode.NOT_MASTER)
            return
        if (
            isinstance(event, Receive)
            and isinstance(event.msg, Accept)
            and (
                self.persister.queued_entries >= PERSIST_BACKLOG_MAX
                or (self.refusing_entries is not None and not self._within_low_budget(event.msg))
            )
        ):
            # Our disk is not keeping up (or hangs, or is nearly full): accepting more would
            # only queue memory or fill it. Dropping a message is always safe in Paxos; we
            # catch up once the disk is back. A nearly full disk still takes the master's lease
            # renewals and no-ops (a few dozen bytes each, within the reserve): when every disk
            # is low at once, the master refuses client writes and the cluster stays readable
            # instead of losing its master.
            self.dropped_accepts += 1
            return
        if isinstance(event, Receive) and isinstance(event.msg, Accepted):
            self.stages.accepted_by_peer(event.msg.i, event.msg.n)
        self._events.append(event)
        if self._busy:
            return  # the outer call's loop will pick it up
        self._busy = True
        try:
            while self._events:
                ev = self._events.popleft()
                self.state, effects = self._step(self.config, self.state, ev, self._clock())
                self.counters.steps += 1
                if effects:
                    self._execute(effects)
                if type(ev) is Applied and self._apply_started is not None:
                    # The core took Applied and its replies went out: the slot is answered.
                    started, requests = self._apply_started
                    self._apply_started = None
                    self.stages.add("apply", perf_clock() - started, requests)
                if self.config.batch_linger > 0 and type(ev) in _MAY_START_LINGER:
                    self._wake_ticker_by_deadline()
                members = getattr(self.state, "members", None)
                if members is not self._members:
                    self._members = members
                    if members is not None and self.on_members is not None:
                        self.on_members(members)
        finally:
            self._busy = False

    def _wake_ticker_by_deadline(self) -> None:
        """Bring the ticker forward when the core's next deadline (a batch linger's end) is
        sooner than the ticker's own wake-up."""
        deadline = paxos.next_deadline(self.config, self.state)
        if deadline is not None and deadline < self._tick_at:
            self._tick_wake.set()

    def _execute(self, effects: Sequence[Effect]) -> None:
        """Run ``effects`` by the contract of :func:`parakoon_paxos.contract.stage`.

        Writes go to the persister in jobs (one group commit may cover several); an effect held
        behind a write joins the job of the last write before it, and runs when that job is
        durable (jobs complete in order, so every earlier write is durable then too).
        """
        job: _WriteJob | None = None
        for staged in stage(effects):
            effect = staged.effect
            if staged.write != NOW:
                job = self._open_job(job)
                match effect:
                    case Persist(entry=entry):
                        job.entries.append(entry)
                    case PersistPromise(n=n):
                        job.promise = n
                    case Rebuilt(applied_i=i, n=n):
                        job.rebuilt = True
                        log.info("rebuild.done", applied_i=i, ballot=n)
                    case _:
                        raise AssertionError(f"not a write: {effect!r}")
            elif staged.after != NOW:
                assert job is not None, "a held effect with no write before it"
                job.after.append(effect)
            else:
                self._run_effect(effect)
        if job is not None:
            self.persister.submit(job)

    def _open_job(self, job: _WriteJob | None) -> _WriteJob:
        """The job a write joins: the current one, unless effects already wait behind it (they
        must not wait for this write too) or it ends with a promise (kept in order)."""
        if job is not None and not job.after and job.promise is None and not job.rebuilt:
            return job
        if job is not None:
            self.persister.submit(job)
        return _WriteJob()

    def _run_effect(self, effect: Effect) -> None:
        match effect:
            case Send(to=to, msg=msg):
                self._transport.send(to, msg)
            case Broadcast(msg=msg):
                if isinstance(msg, Accept) and _carries_client_data(msg):
                    assert isinstance(msg.value, Batch)
                    self.stages.proposed(msg.i, msg.n, len(msg.value.payloads))
                self._transport.broadcast(self.effective_config().peers, msg)
            case Apply(i=i, value=value):
                self._apply_started = self.stages.applying(i)
                results = self._applier.apply(i, value)
                self.counters.applied_slots += 1
                self.counters.applied_updates += len(results)
                # Applied goes to the front: it answers this very Apply, before later events.
                self._events.appendleft(Applied(i=i, results=results))
                if self._on_applied is not None:
                    self._on_applied(i)
            case Reply(rid=rid, result=result):
                waiter = self._waiters.pop(rid, None)
                if waiter is not None:
                    self.decoded.pop(id(waiter.payload), None)
                    waiter.resolve(result)
            case Fail(rid=rid, code=code):
                waiter = self._waiters.pop(rid, None)
                if waiter is not None:
                    self.decoded.pop(id(waiter.payload), None)
                    waiter.fail(code)
            case StartCatchup(source=source, from_i=from_i):
                log.info("catchup.start", source=source, from_i=from_i)
                self._start_catchup(source, from_i)
            case RoleChanged():
                self.counters.role_changes += 1
                self.stages.forget_proposals()
                log.info(
                    "role.changed",
                    role=effect.role.value,
                    ballot=effect.n,
                    master=effect.master,
                    applied_i=self.applied_i(),
                )
            case Persist() | PersistPromise() | Rebuilt():
                raise AssertionError("writes are queued by _execute")
            case _:
                raise AssertionError(f"unknown effect {effect!r}")

    def _write_done(self, job: _WriteJob) -> None:
        if job.entries:
            self.stages.persisted(job.queued, job.began, job.ended)
        for entry in job.entries:
            self.handle(Persisted(i=entry.i, n=entry.n))
        for effect in job.after:
            self._run_effect(effect)

    # ---------------------------------------------------------------- client requests

    def submit_write(self, payload: bytes, *, sync: bool = False, decoded: object = None) -> Waiter:
        """Queue one client update for the next batch; return its waiter (not yet resolved).

        ``decoded`` is the store's form of ``payload`` when the caller has it: applying the
        batch on this node then skips decoding the payload again.
        """
        waiter = Waiter(self._clock() + self.write_timeout_secs, payload, decoded)
        if self.persister.queued_entries >= PERSIST_BACKLOG_MAX:
            # Our disk is not keeping up (or hangs): refuse quickly rather than queue memory
            # without bound; the client retries (or another node takes over, see Node).
            waiter.fail(FailCode.OVERLOADED)
            return waiter
        rid = next(self._rids)
        self._waiters[rid] = waiter
        if decoded is not None:
            self.decoded[id(payload)] = waiter
        if not self._incoming:
            self._first_submitted = perf_clock()
        self._incoming.append(ClientRequest(rid=rid, payload=payload, sync=sync))
        self.counters.requests_submitted += 1
        self._batch_wake.set()
        return waiter

    def take_decoded(self, payload: bytes) -> object:
        """The store update registered for this very payload object, or None."""
        waiter = self.decoded.pop(id(payload), None)
        if waiter is None or waiter.payload is not payload:
            return None
        return waiter.decoded

    def expire_waiters(self) -> None:
        """Answer, as timed out, every waiter past its deadline (oldest first: rids grow)."""
        now = self._clock()
        while self._waiters:
            rid = next(iter(self._waiters))
            waiter = self._waiters[rid]
            if waiter.deadline > now:
                return
            del self._waiters[rid]
            self.decoded.pop(id(waiter.payload), None)
            waiter.expire()

    def change_membership(self, op: MemberOp, node: str, address: str = "") -> Waiter:
        """Ask the core for one membership change; the waiter resolves with the new
        ``Membership`` once it is chosen and applied, or fails (``FailCode``)."""
        rid = next(self._rids)
        waiter = Waiter(self._clock() + self.write_timeout_secs)
        self._waiters[rid] = waiter
        self.handle(ChangeMembership(rid=rid, op=op, node=node, address=address))
        return waiter

    async def drop_master(self) -> Waiter:
        rid = next(self._rids)
        waiter = Waiter(self._clock() + self.write_timeout_secs)
        self._waiters[rid] = waiter
        self.handle(DropMaster(rid=rid))
        return waiter

    async def run_batcher(self) -> None:
        """Hand every request that arrived since the last round to the core as one batch."""
        while True:
            await self._batch_wake.wait()
            self._batch_wake = anyio.Event()
            # Let the other client tasks that are ready in this loop iteration add theirs.
            await anyio.lowlevel.checkpoint()
            if not self._incoming:
                continue
            requests = tuple(self._incoming)
            self._incoming.clear()
            self.counters.batches_proposed += 1
            if self.batch_observer is not None:
                self.batch_observer(len(requests))
            self.stages.batch_to_core(self._first_submitted, len(requests))
            self._first_submitted = None
            self.handle(ClientBatch(requests=requests))

    async def run_ticker(self) -> None:
        """Feed ``Tick`` at the core's next deadline (bounded so timers never starve)."""
        floor = 0.001
        ceiling = max(0.005, self.config.lease_period / 20)
        woken_at: float | None = None  # the wake-up planned before an early wake
        while True:
            deadline = paxos.next_deadline(self.config, self.state)
            now = self._clock()
            if woken_at is None:
                # The floor keeps a deadline already past from spinning the ticker.
                delay = ceiling if deadline is None else min(ceiling, max(floor, deadline - now))
            else:
                # Woken for a nearer deadline (a batch linger): sleep until exactly then, and
                # never past the wake-up planned before (a wake must not postpone a tick).
                until = woken_at if deadline is None else min(woken_at, deadline)
                delay = max(0.0, until - now)
            self._tick_at = now + delay
            woken_at = None
            with anyio.move_on_after(delay):
                await self._tick_wake.wait()
                woken_at = self._tick_at
            self._tick_wake = anyio.Event()
            self._tick_at = float("inf")
            if woken_at is not None:
                continue
            self.handle(Tick())
            self.expire_waiters()

    # ---------------------------------------------------------------- catch-up results

    def release(self, state: Any) -> None:
        """The node has an identity now: start the core from ``state``."""
        self.state = state
        self.held = False
        log.info("driver.released", role=self.role().value, applied_i=self.applied_i())

    def catchup_done(
        self,
        applied_i: int,
        last: LogEntry | None,
        holder: str | None,
        membership: Membership | None = None,
    ) -> None:
        log.info("catchup.done", applied_i=applied_i, last_i=None if last is None else last.i)
        self.handle(
            CatchupDone(applied_i=applied_i, last=last, lease_holder=holder, membership=membership)
        )

    def catchup_failed(self, source: str, why: str) -> None:
        log.warning("catchup.failed", source=source, reason=why)
        self.handle(CatchupFailed(source=source))

    def fail_all_waiters(self, code: FailCode) -> None:
        for waiter in self._waiters.values():
            waiter.fail(code)
        self._waiters.clear()
        self.decoded.clear()
