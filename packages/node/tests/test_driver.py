"""The driver alone, with fakes for its transport, applier and log and a scripted core.

It executes effects by ``parakoon_paxos.contract.stage``: what follows a durable write in the
same list waits for it. These tests hold the log's write (a real worker thread blocked on an
event) and look at what has left meanwhile.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import anyio
import pytest

from parakoon_node.runtime.driver import Driver
from parakoon_paxos import (
    NOP,
    Accept,
    Applied,
    Apply,
    Batch,
    Broadcast,
    ClientBatch,
    Config,
    Effect,
    Event,
    Leader,
    LogEntry,
    Message,
    Persist,
    Persisted,
    PersistPromise,
    Prepare,
    Promise,
    Receive,
    Recovered,
    Reply,
    Send,
    Value,
    initial_state,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the driver's waiters are asyncio futures


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Message]] = []

    def send(self, to: str, msg: Message) -> None:
        self.sent.append((to, msg))

    def broadcast(self, peers: Sequence[str], msg: Message) -> None:
        self.sent.extend((p, msg) for p in peers)


class FakeLog:
    """An in-memory log whose writes block until ``gate`` is set (they run in a thread)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.done: list[str] = []

    def append_entries(self, entries: Sequence[LogEntry]) -> None:
        self.gate.wait(10)
        self.done.extend(f"entry {e.i}" for e in entries)

    def save_promise(self, n: int) -> None:
        self.gate.wait(10)
        self.done.append(f"promise {n}")

    def mark_rebuilt(self) -> None:
        self.done.append("rebuilt")


class FakeApplier:
    def __init__(self) -> None:
        self.applied: list[int] = []

    def apply(self, i: int, value: Value) -> tuple[object, ...]:
        self.applied.append(i)
        return ()


class Script:
    """A scripted core: the effects to return for each kind of event, and what it saw."""

    def __init__(self, plan: dict[type, Any]) -> None:
        self.plan = plan
        self.seen: list[Event] = []

    def __call__(self, config: Config, state: Any, event: Event, now: float) -> Any:
        self.seen.append(event)
        make = self.plan.get(type(event))
        return state, ([] if make is None else make(event))


def make_driver(script: Script) -> tuple[Driver, FakeTransport, FakeLog, FakeApplier]:
    transport, wlog, applier = FakeTransport(), FakeLog(), FakeApplier()
    config = Config(me="n0", voters=("n0", "n1", "n2"), lease_period=1.0)
    driver = Driver(
        config,
        None,
        transport=transport,
        applier=applier,
        write_log=wlog,
        start_catchup=lambda source, i: None,
        step=script,
    )
    return driver, transport, wlog, applier


async def eventually(check: Any, what: str) -> None:
    with anyio.fail_after(5):
        while not check():
            await anyio.sleep(0.005)


async def test_a_promise_leaves_only_once_its_ballot_is_durable() -> None:
    promise = Promise(n=5, i=0, accepted=None)
    script = Script({Receive: lambda ev: [PersistPromise(n=5), Send(to="n1", msg=promise)]})
    driver, transport, wlog, _ = make_driver(script)
    async with anyio.create_task_group() as tg:
        tg.start_soon(driver.persister.run)
        driver.handle(Receive(src="n1", msg=Prepare(n=5, i=0)))
        await anyio.sleep(0.05)
        assert transport.sent == [], "the Promise left before its ballot was durable"
        wlog.gate.set()
        await eventually(lambda: transport.sent, "the promise")
        assert wlog.done == ["promise 5"]
        assert transport.sent == [("n1", promise)]
        driver.persister.close()


async def test_the_driver_holds_a_reply_behind_its_write() -> None:
    entry = LogEntry(i=0, n=3, value=NOP)

    def on_batch(ev: Event) -> list[Effect]:
        assert isinstance(ev, ClientBatch)
        return [Persist(entry=entry), Reply(rid=ev.requests[0].rid, result="ok")]

    driver, _, wlog, _ = make_driver(Script({ClientBatch: on_batch}))
    async with anyio.create_task_group() as tg:
        tg.start_soon(driver.persister.run)
        tg.start_soon(driver.run_batcher)
        waiter = driver.submit_write(b"payload")
        await anyio.sleep(0.05)
        assert not waiter.future.done(), "the client was answered before the write was durable"
        wlog.gate.set()
        await waiter.wait()
        assert waiter.result == "ok" and wlog.done == ["entry 0"]
        tg.cancel_scope.cancel()


async def test_effects_before_the_first_write_and_applies_run_at_once() -> None:
    entry = LogEntry(i=1, n=3, value=NOP)
    accept = Accept(n=3, i=1, value=NOP)
    script = Script(
        {
            Receive: lambda ev: [
                Broadcast(msg=accept),
                Persist(entry=entry),
                Apply(i=0, value=NOP),
            ]
        }
    )
    driver, transport, wlog, applier = make_driver(script)
    async with anyio.create_task_group() as tg:
        tg.start_soon(driver.persister.run)
        driver.handle(Receive(src="n1", msg=Prepare(n=-1, i=0)))
        # The leader's Accept goes out with its own write still under way; applying a chosen
        # slot does not wait either, and Applied comes back to the core before anything else.
        assert ("n1", accept) in transport.sent and ("n2", accept) in transport.sent
        assert applier.applied == [0]
        assert isinstance(script.seen[-1], Applied)
        wlog.gate.set()
        await eventually(lambda: wlog.done, "the write")
        driver.persister.close()


async def test_a_hung_disk_shows_and_bounds_what_waits_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While the log's write hangs, ``busy_since`` says since when (the node's disk watch steps
    down on it), and once the backlog reaches its bound new client writes are refused at once
    (OVERLOADED) instead of queueing memory for ever."""
    from parakoon_node.runtime import driver as driver_module
    from parakoon_paxos import FailCode

    monkeypatch.setattr(driver_module, "PERSIST_BACKLOG_MAX", 3)
    slots = iter(range(100))
    script = Script({Receive: lambda ev: [Persist(entry=LogEntry(i=next(slots), n=3, value=NOP))]})
    driver, _, wlog, _ = make_driver(script)
    async with anyio.create_task_group() as tg:
        tg.start_soon(driver.persister.run)
        for _ in range(4):
            driver.handle(Receive(src="n1", msg=Prepare(n=-1, i=0)))
            await anyio.sleep(0.01)
        assert driver.persister.busy_since is not None, "the hung write is visible"
        assert driver.persister.queued_entries == 4
        waiter = driver.submit_write(b"x")
        assert waiter.failure is FailCode.OVERLOADED
        # A follower's side of the same bound: Accepts are dropped (Paxos tolerates it).
        seen = len(script.seen)
        driver.handle(Receive(src="n1", msg=Accept(n=3, i=9, value=NOP)))
        assert len(script.seen) == seen and driver.dropped_accepts == 1
        wlog.gate.set()
        await eventually(lambda: driver.persister.queued_entries == 0, "the backlog")
        await eventually(lambda: driver.persister.busy_since is None, "idle again")
        assert driver.submit_write(b"y").failure is None
        tg.cancel_scope.cancel()


async def test_the_write_stages_follow_one_client_write_through_the_master() -> None:
    """One write through a scripted master: every stage the driver measures is counted once
    (``respond`` is the service's), and the stages that nest add up (commit covers replicate;
    nothing is negative)."""
    from parakoon_paxos import Accepted, Batch

    batch = Batch(payloads=(b"payload",))
    accept = Accept(n=3, i=0, value=batch)

    rids: list[int] = []

    def on_batch(ev: Event) -> list[Effect]:
        assert isinstance(ev, ClientBatch)
        rids.extend(r.rid for r in ev.requests)
        return [Broadcast(msg=accept), Persist(entry=LogEntry(i=0, n=3, value=batch))]

    script = Script(
        {
            ClientBatch: on_batch,
            Receive: lambda ev: [Apply(i=0, value=batch)],
            Applied: lambda ev: [Reply(rid=rids[0], result=None)],
        }
    )
    driver, _, wlog, _ = make_driver(script)
    wlog.gate.set()
    async with anyio.create_task_group() as tg:
        tg.start_soon(driver.persister.run)
        tg.start_soon(driver.run_batcher)
        waiter = driver.submit_write(b"payload")
        await eventually(lambda: wlog.done, "the master's own write")
        await anyio.sleep(0.01)
        driver.handle(Receive(src="n1", msg=Accepted(n=3, i=0)))
        await waiter.wait()
        tg.cancel_scope.cancel()
    counts, sums = driver.stages.counts, driver.stages.sums
    for stage in ("batching", "slot_wait", "persist_queue", "fsync", "persist_return"):
        assert counts[stage] == 1, stage
    assert counts["replicate"] == counts["commit"] == counts["apply"] == 1
    assert all(seconds >= 0 for seconds in sums.values()), sums
    assert sums["commit"] >= sums["replicate"] >= 0.01  # the Accepted came 10 ms later
    assert waiter.resolved_at > 0


async def test_a_failed_log_write_stops_the_persister_with_its_error() -> None:
    """The writer thread hands a write's exception back: the node then stops (a log that failed
    to write cannot be trusted), it must not carry on as if the write were durable."""

    class BrokenLog(FakeLog):
        def append_entries(self, entries: Sequence[LogEntry]) -> None:
            raise OSError(5, "Input/output error")

    transport, applier = FakeTransport(), FakeApplier()
    script = Script({Receive: lambda ev: [Persist(entry=LogEntry(i=0, n=3, value=NOP))]})
    driver = Driver(
        Config(me="n0", voters=("n0", "n1", "n2"), lease_period=1.0),
        None,
        transport=transport,
        applier=applier,
        write_log=BrokenLog(),
        start_catchup=lambda source, i: None,
        step=script,
    )
    driver.handle(Receive(src="n1", msg=Prepare(n=-1, i=0)))
    with pytest.raises(OSError, match="Input/output error"), anyio.fail_after(5):
        await driver.persister.run()


async def test_cancelling_the_persister_waits_for_the_write_under_way() -> None:
    """A group commit is never abandoned half-way: cancelling the persister while the thread
    writes returns only once the write is done."""
    script = Script({Receive: lambda ev: [Persist(entry=LogEntry(i=0, n=3, value=NOP))]})
    driver, _, wlog, _ = make_driver(script)
    driver.handle(Receive(src="n1", msg=Prepare(n=-1, i=0)))
    async with anyio.create_task_group() as tg:
        tg.start_soon(driver.persister.run)
        await eventually(lambda: driver.persister.busy_since is not None, "the write")
        tg.cancel_scope.cancel()
        threading.Timer(0.1, wlog.gate.set).start()
    assert wlog.done == ["entry 0"]


def test_write_stages_count_requests_across_split_batches_and_ignore_other_ballots() -> None:
    """The master's stages are means per request: a batch of 5 the core proposes over two
    slots (3 + 2) counts 5 waits; an acknowledgement for another ballot is not ours."""
    from parakoon_node.runtime.stages import WriteStages

    stages = WriteStages()
    stages.batch_to_core(None, 5)
    stages.proposed(10, 7, 3)
    stages.proposed(11, 7, 2)
    assert stages.counts["slot_wait"] == 5
    stages.accepted_by_peer(10, 4)  # an older ballot's ack for the same slot
    assert stages.counts["replicate"] == 0
    stages.accepted_by_peer(10, 7)
    stages.accepted_by_peer(10, 7)  # the second follower: the first one closed it
    assert stages.counts["replicate"] == 3
    applying = stages.applying(10)
    assert applying is not None and applying[1] == 3
    assert stages.counts["commit"] == 3
    assert stages.applying(99) is None  # not ours (a follower, or a re-proposed slot)
    stages.forget_proposals()
    assert stages.applying(11) is None


async def test_a_stopping_node_can_abandon_a_write_that_hangs() -> None:
    """A disk that hangs must not keep the node from exiting: ``abandon`` ends the persister
    at once, without reporting the write as durable (and says there was one)."""
    script = Script({Receive: lambda ev: [Persist(entry=LogEntry(i=0, n=3, value=NOP))]})
    driver, _, wlog, _ = make_driver(script)
    driver.handle(Receive(src="n1", msg=Prepare(n=-1, i=0)))
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(driver.persister.run)
            await eventually(lambda: driver.persister.busy_since is not None, "the write")
            assert driver.persister.abandon()
    assert driver.persister.abandoned
    assert not any(isinstance(ev, Persisted) for ev in script.seen), "reported as durable"
    assert not driver.persister.abandon(), "nothing left to abandon"
    wlog.gate.set()  # let the thread finish its write and exit


class SlowLog(FakeLog):
    """Every write takes ``secs``: a slot of a one-voter cluster lasts about that long."""

    def __init__(self, secs: float) -> None:
        super().__init__()
        self.secs = secs
        self.gate.set()

    def append_entries(self, entries: Sequence[LogEntry]) -> None:
        time.sleep(self.secs)
        super().append_entries(entries)


class BatchApplier(FakeApplier):
    def apply(self, i: int, value: Value) -> tuple[object, ...]:
        self.applied.append(i)
        return (None,) * len(value.payloads) if isinstance(value, Batch) else ()


async def test_the_ticker_ends_a_batch_linger_on_time() -> None:
    """The real core, one voter, 40 ms slots, a 20 ms linger (half the slot) under a lease of
    8 s, whose ticker would otherwise sleep up to L / 20 = 400 ms. Two writes share a slot; a
    third comes alone after their answers: the core holds it for the other client, which
    never comes, and the ticker must wake for the linger's end (its deadline appears only on
    that request's ClientBatch), not at its own next wake-up."""
    # (It reads the driver's ``_tick_at``: when the ticker plans to wake is what is tested.)
    config = Config(me="n0", voters=("n0",), lease_period=8.0, batch_linger=0.05)
    state = initial_state(config, Recovered(), time.monotonic(), seed=1)
    driver = Driver(
        config,
        state,
        transport=FakeTransport(),
        applier=BatchApplier(),
        write_log=SlowLog(0.04),
        start_catchup=lambda source, i: None,
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(driver.persister.run)
        tg.start_soon(driver.run_batcher)
        tg.start_soon(driver.run_ticker)
        await eventually(driver.lease_valid, "the lease of the one voter")

        def idle() -> bool:  # the lease and the Nop after it are chosen: nothing in flight
            st = driver.state
            return isinstance(st, Leader) and st.prop is None and st.applied_i >= 1

        await eventually(idle, "an idle leader")
        first = [driver.submit_write(b"a"), driver.submit_write(b"b")]
        for waiter in first:
            await waiter.wait()
        answered = time.monotonic()
        third = driver.submit_write(b"c")
        # The batcher hands it over; the core holds it.
        await eventually(lambda: driver.state.queue.size == 1, "the lone write held")
        held = driver.state
        assert held.prop is None and held.queue.size == 1 and held.expect == 2
        # The ticker now plans to wake by the linger's end (it was asleep until later).
        assert driver._tick_at <= held.linger_until + 0.001, (driver._tick_at, held.linger_until)
        await third.wait()
        took = time.monotonic() - answered
        tg.cancel_scope.cancel()
    # About 20 ms of linger and a 40 ms slot; without the wake, up to 400 ms.
    assert took < 0.3, f"the lone write took {took * 1000:.0f} ms"
