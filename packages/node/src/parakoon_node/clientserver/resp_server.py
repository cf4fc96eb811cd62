"""The Redis port: RESP on ``redis_port``, served over the same :class:`Backend` as the Arakoon
port (``docs/redis.md`` is the user's view; ``resp_commands`` holds the command semantics).

Rules of this file
------------------

* One task per connection; commands are answered strictly in order. Commands already buffered
  (a pipeline) are answered one after another and their replies sent together, at the latest
  when ``FLUSH_BYTES`` of replies are waiting or the buffer runs dry, so a pipelining client
  gets few large writes and a client that never reads holds at most one batch (``send`` waits
  while the transport is above its high-water mark).
* Malformed input closes only that connection: the codec's ``RemoteProtocolError`` carries
  Redis's ``-ERR Protocol error: ...`` reply, which is sent (after the replies before it)
  before the close. Any other failure of one connection is logged and closes that connection.
* The bounds are the Arakoon port's: the codec's ``Limits`` for sizes and argument counts,
  ``max_client_connections`` for this port's connections (counted apart from the Arakoon
  port's: each port has that many), ``client_request_timeout_secs`` for a command trickling
  in or a reply not taken, and ``client_idle_timeout_secs`` for an idle connection (one
  sweeper task, no timer per command). A connection over the limit gets
  ``-ERR max number of clients reached`` and is closed, as Redis does.
* Reads and writes go through :meth:`Backend.check_read` and :meth:`Backend.write`, exactly as
  on the Arakoon port: a consistent read is served only by the master with a valid lease, a
  write is answered once chosen and applied. A connection that sent READONLY reads with "no
  guarantees" on any node, but its write-flagged commands read consistently all the same
  (``_read_consistency``), and a combined batch always reads consistently. A data command
  (or a MULTI/EXEC transaction) runs on a ``resp_commands.View`` after one ``check_read``
  with no await in between, and its writes
  become one update: asserts on what was read, then the final writes (``resp_commands``). An
  assert that fails at apply means the keys changed meanwhile: the commands run again, at most
  ``RETRIES_MAX`` times. Commands that read and write (``rmw``) hold a lock on their keys while
  they do, so Redis clients of one node do not make each other retry; those of one key are
  also combined into batches (:meth:`RespServer._combined`), one consensus round per batch.
* A follower (or a master without a lease) answers ``-READONLY ...`` naming the master's Redis
  address; with no master known it answers ``-MASTERDOWN ...``. The route clients take to the
  master is in docs/redis.md.
* Shutdown: a new connection gets ``-ERR ... shutting down`` and is closed; an open one is
  closed, unanswered, at its next command. A command already running is answered.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Final

import anyio
import anyio.abc
import structlog

import parakoon_kv as kv
from parakoon_client.codec import (
    CONSISTENT,
    DEFAULT_LIMITS,
    NEED_DATA,
    NO_GUARANTEES,
    Consistency,
    Limits,
    RemoteProtocolError,
    UAssert,
    Update,
    USequence,
    USet,
)
from parakoon_client.resp import (
    NULL,
    OK,
    Array,
    Bulk,
    Command,
    CommandDecoder,
    Error,
    Integer,
    Map,
    NullArray,
    Reply,
    SimpleString,
    compile_glob,
    encode_reply,
    literal_prefix,
    reply_bytes,
)

from .backend import Backend, BackendError, GoingDown, NoLongerMaster, NotMaster, TooLarge
from .resp_commands import (
    COMMANDS,
    NOT_AN_INTEGER,
    SYNTAX,
    UNSUPPORTED,
    CommandSpec,
    ReplyTooLarge,
    ValueTooLarge,
    View,
    parse_int64,
    pattern_error,
)
from .server import ClientStream, _peer_name, default_max_connections, run_listener

log = structlog.get_logger("parakoon.redis")

REDIS_COMPATIBLE_VERSION: Final = "7.0.0"
"""What INFO and HELLO report as redis_version: the Redis release whose commands we follow."""
RECEIVE_BYTES: Final = 65536
FLUSH_BYTES: Final = 64 * 1024
"""Replies of a pipeline are sent once this many bytes are waiting (or no command is left)."""
RETRIES_MAX: Final = 16
"""Runs of one command or transaction whose asserts failed at apply, before giving up."""
SCAN_CURSORS_MAX: Final = 4096
"""SCAN cursors the node remembers; the oldest is forgotten first."""
SCAN_CURSOR_BYTES_MAX: Final = 16 * 1024 * 1024
"""Most bytes of resume keys the cursor table holds; the oldest cursors go first beyond it."""
SCAN_COUNT_MAX: Final = 100_000
QUEUED_COMMANDS_MAX: Final = 100_000
"""Most commands one MULTI may queue (their arguments also count against max_request_bytes)."""
WATCHED_KEYS_MAX: Final = 10_000
"""Most keys one connection may WATCH at once (their bytes also count against
max_request_bytes)."""
ARG_OVERHEAD_BYTES: Final = 64
"""What one argument costs in memory beyond its bytes (a ``bytes`` object's header, its slot
in a tuple), counted when queued or watched arguments are held: a million empty arguments are
not free."""
SWEEP_SECS: Final = 0.5
LINGER_SECS: Final = 1.0
_QUEUED: Final = SimpleString(text="QUEUED")
_PONG: Final = SimpleString(text="PONG")
_NOT_IN_MULTI: Final = frozenset({"exec", "discard", "multi", "watch", "quit"})
_SCAN_TYPES: Final = frozenset({b"string", b"list", b"set", b"zset", b"hash", b"stream"})


class _Contention(Exception):
    """RETRIES_MAX runs in a row found their keys changed before the apply."""


_ONE_COMMANDS_FAULT: Final = (TooLarge, kv.KvError)
"""Failures of a combined batch that may be one command's doing and leave nothing applied: the
batch is then run again one command at a time (:meth:`RespServer._lead`)."""


class _Session:
    """One connection's state: what CLIENT, HELLO, READONLY and MULTI/WATCH set."""

    __slots__ = (
        "busy_since",
        "cancel",
        "dirty",
        "id",
        "last",
        "multi",
        "name",
        "peer",
        "protocol",
        "queued_bytes",
        "readonly",
        "sending_since",
        "watched",
        "watched_bytes",
    )

    def __init__(self, id: int, peer: str, now: float, cancel: anyio.CancelScope) -> None:
        self.id = id
        self.peer = peer
        self.name: bytes | None = None
        self.protocol = 2
        self.readonly = False
        self.multi: list[tuple[CommandSpec, tuple[bytes, ...]]] | None = None
        self.dirty = False  # a command queued in MULTI was refused: EXEC aborts
        self.queued_bytes = 0
        # Watched keys -> digest of the value seen (None: absent). A digest, not the value, so
        # that watching large values holds little memory; EXEC asserts the value it reads
        # again, which equals the watched one whenever the digests agree.
        self.watched: dict[bytes, bytes | None] = {}
        self.watched_bytes = 0  # the watched keys' bytes, with ARG_OVERHEAD_BYTES each
        self.last = now
        self.busy_since: float | None = None
        self.sending_since: float | None = None
        self.cancel = cancel

    def describe(self) -> str:
        name = "" if self.name is None else self.name.decode("utf-8", "replace")
        return f"id={self.id} addr={self.peer} name={name} db=0 resp={self.protocol}"


class _Waiter:
    """One command waiting in :meth:`RespServer._combined`: for its reply, or to lead."""

    __slots__ = ("args", "done", "error", "lead", "reply", "spec")

    def __init__(self, spec: CommandSpec, args: tuple[bytes, ...]) -> None:
        self.spec = spec
        self.args = args
        self.done = anyio.Event()
        self.reply: Reply | None = None
        self.error: Exception | None = None
        self.lead: list[_Waiter] | None = None  # set: lead this batch (it starts with self)

    def result(self) -> Reply:
        if self.error is not None:
            raise self.error
        assert self.reply is not None
        return self.reply


class _KeyLocks:
    """Per-key locks, held only while someone holds or waits for them (so bounded by the
    connections). Keys are taken in sorted order, so two holders never wait for each other."""

    def __init__(self) -> None:
        self._locks: dict[bytes, tuple[anyio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, keys: Iterable[bytes]) -> AsyncIterator[None]:
        wanted = sorted(set(keys))
        for key in wanted:
            lock, users = self._locks.get(key) or (anyio.Lock(), 0)
            self._locks[key] = (lock, users + 1)
        taken: list[anyio.Lock] = []
        try:
            for key in wanted:
                lock = self._locks[key][0]
                await lock.acquire()
                taken.append(lock)
            yield
        finally:
            for lock in taken:
                lock.release()
            for key in wanted:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


class RespServer:
    """Serves the Redis protocol for one backend. Start it with :func:`serve_redis`.

    ``redis_address`` maps a node name to the ``host:port`` of its Redis port (None if it has
    none); it names the master in the errors of a follower and in INFO replication.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        redis_address: Callable[[str], str | None] = lambda _name: None,
        limits: Limits = DEFAULT_LIMITS,
        max_connections: int | None = None,
        request_timeout_secs: float = 30.0,
        idle_timeout_secs: float = 900.0,
        version: str = "",
    ) -> None:
        self.backend = backend
        self.redis_address = redis_address
        self.limits = limits
        self.max_connections = (
            default_max_connections() if max_connections is None else max_connections
        )
        self.request_timeout_secs = request_timeout_secs
        self.idle_timeout_secs = idle_timeout_secs
        self.version = version
        self.port: int | None = None
        self.started = time.monotonic()
        self._sessions: dict[int, _Session] = {}
        self._next_id = 1
        self._locks = _KeyLocks()
        self._combining: dict[bytes, list[_Waiter]] = {}  # key -> commands waiting to lead
        self._cursors: OrderedDict[int, bytes] = OrderedDict()
        self._cursor_bytes = 0
        # Cursor numbers start from the clock, so a cursor from before a restart is not taken
        # for one of this run.
        self._next_cursor = time.time_ns() % (1 << 62) + 1
        self.protocol_errors = 0
        self.refused = 0
        self.commands = 0
        self.retries = 0

    @property
    def open_connections(self) -> int:
        return len(self._sessions)

    # ---------------------------------------------------------------- connections

    async def handle_connection(self, stream: ClientStream) -> None:
        """Serve one accepted connection until it closes. Never raises (except cancellation)."""
        peer = _peer_name(stream)
        try:
            if self.backend.going_down or len(self._sessions) >= self.max_connections:
                self.refused += 1
                why = (
                    "ERR the node is shutting down"
                    if self.backend.going_down
                    else "ERR max number of clients reached"
                )
                await stream.send(encode_reply(Error(message=why)))
                await self._linger(stream)
                return
            with anyio.CancelScope() as scope:
                session = _Session(self._next_id, peer, time.monotonic(), scope)
                self._next_id += 1
                self._sessions[session.id] = session
                try:
                    await self._converse(stream, session)
                finally:
                    del self._sessions[session.id]
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream):
            pass
        except OSError as exc:
            log.info("redis.io_error", peer=peer, error=str(exc))
        except Exception as exc:  # one connection's bug closes that connection only
            log.exception("redis.connection_failed", peer=peer, error=repr(exc))
        finally:
            with anyio.CancelScope(shield=True):
                await stream.aclose()

    async def _linger(self, stream: ClientStream) -> None:
        """Half-close and drain briefly, so the last reply is not lost to a reset."""
        try:
            await stream.send_eof()
            with anyio.move_on_after(LINGER_SECS):
                drained = 0
                while drained < self.limits.max_request_bytes:
                    drained += len(await stream.receive(RECEIVE_BYTES))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError):
            pass

    def sweep(self, now: float) -> None:
        """Close every connection past one of its timeouts (see the file rules)."""
        for session in list(self._sessions.values()):
            if session.sending_since is not None:
                if now - session.sending_since <= self.request_timeout_secs:
                    continue
                why = f"replies not taken by the client within {self.request_timeout_secs:g} s"
            elif session.busy_since is not None:
                if now - session.busy_since <= self.request_timeout_secs:
                    continue
                why = f"a command still incomplete after {self.request_timeout_secs:g} s"
            elif self.idle_timeout_secs > 0 and now - session.last > self.idle_timeout_secs:
                why = f"no command for {self.idle_timeout_secs:g} s"
            else:
                continue
            log.info("redis.timed_out", peer=session.peer, reason=why)
            session.cancel.cancel()

    async def run_sweeper(self) -> None:
        while True:
            await anyio.sleep(SWEEP_SECS)
            self.sweep(time.monotonic())

    async def _converse(self, stream: ClientStream, session: _Session) -> None:
        decoder = CommandDecoder(self.limits)
        out: list[bytes] = []
        pending = 0

        async def flush() -> None:
            nonlocal pending
            if out:
                data = b"".join(out)
                out.clear()
                pending = 0
                session.sending_since = time.monotonic()
                await stream.send(data)
                session.sending_since = None

        while True:
            try:
                event = decoder.next_event()
            except RemoteProtocolError as exc:
                self.protocol_errors += 1
                log.info("redis.protocol_error", peer=session.peer, reason=exc.reason)
                if exc.response is not None:
                    out.append(exc.response)
                await flush()
                await self._linger(stream)
                return
            if event is NEED_DATA:
                await flush()
                try:
                    data = await stream.receive(RECEIVE_BYTES)
                except anyio.EndOfStream:
                    return
                decoder.feed(data)
                if session.busy_since is None:
                    session.busy_since = time.monotonic()
                continue
            session.busy_since = None if decoder.buffered_bytes == 0 else time.monotonic()
            session.last = time.monotonic()
            if self.backend.going_down:
                return
            self.commands += 1
            reply, close = await self.answer(session, event)
            size = reply_bytes(reply, session.protocol)
            if size > self.limits.max_request_bytes:
                # Data commands are refused before they write (_attempt); this catches the
                # rest, so that no reply is ever built past the bound.
                reply = Error(message=str(ReplyTooLarge(size, self.limits.max_request_bytes)))
            encoded = encode_reply(reply, session.protocol)
            out.append(encoded)
            pending += len(encoded)
            if close:
                await flush()
                await self._linger(stream)
                return
            if pending >= FLUSH_BYTES:
                await flush()

    # ---------------------------------------------------------------- commands

    async def answer(self, session: _Session, command: Command) -> tuple[Reply, bool]:
        """The reply to one command and whether to close the connection after it. Never
        raises (except cancellation)."""
        try:
            return await self._dispatch(session, command)
        except NotMaster as exc:
            return self._not_master(exc.master), False
        except GoingDown:
            return Error(message="ERR the node is shutting down"), True
        except NoLongerMaster:
            message = (
                "ERR mastership was lost while the write was in flight: it may or may not "
                "have been applied"
            )
            return Error(message=message), False
        except BackendError as exc:
            return Error(message="ERR " + exc.message.decode("utf-8", "replace")), False
        except kv.KvError as exc:
            return Error(message=f"ERR {type(exc).__name__}: {exc}"), False
        except (ValueTooLarge, ReplyTooLarge) as exc:
            return Error(message=str(exc)), False
        except _Contention:
            message = (
                f"ERR the keys changed under {RETRIES_MAX} runs in a row (too much "
                "contention); nothing was written"
            )
            return Error(message=message), False
        except Exception as exc:  # a bug: answer an error, close that connection
            log.exception("redis.command_failed", command=command.name, error=repr(exc))
            return Error(message="ERR internal error; see the node's log"), True

    def _not_master(self, master: str | None) -> Error:
        if master is None:
            return Error(
                message="MASTERDOWN no master is known right now (an election may be under "
                "way); retry shortly"
            )
        address = self.redis_address(master)
        where = f"{address} ({master})" if address else f"{master} (it has no redis_port)"
        return Error(
            message=f"READONLY You can't write against a read only replica. This node "
            f"serves writes and consistent reads only as master; the master is {where}"
        )

    async def _dispatch(self, session: _Session, command: Command) -> tuple[Reply, bool]:
        args = command.args
        name = command.name
        spec = COMMANDS.get(name)
        if spec is None:
            if session.multi is not None:
                session.dirty = True
            return _unknown(args, name), False
        if not spec.arity_ok(len(args)):
            if session.multi is not None:
                session.dirty = True
            return _wrong_arity(name), False
        if session.multi is not None and name not in _NOT_IN_MULTI:
            size = sum(len(a) + ARG_OVERHEAD_BYTES for a in args)
            if (
                len(session.multi) >= QUEUED_COMMANDS_MAX
                or session.queued_bytes + size > self.limits.max_request_bytes
            ):
                session.dirty = True
                return Error(
                    message=f"ERR transaction too large: at most {QUEUED_COMMANDS_MAX} commands "
                    f"and {self.limits.max_request_bytes} bytes of arguments "
                    f"(max_request_bytes; each argument counts {ARG_OVERHEAD_BYTES} bytes more) "
                    "per MULTI"
                ), False
            session.multi.append((spec, args))
            session.queued_bytes += size
            return _QUEUED, False
        match name:
            case "quit":
                return OK, True
            case "multi":
                if session.multi is not None:
                    return Error(message="ERR MULTI calls can not be nested"), False
                session.multi = []
                session.dirty = False
                session.queued_bytes = 0
                return OK, False
            case "discard":
                if session.multi is None:
                    return Error(message="ERR DISCARD without MULTI"), False
                session.multi = None
                session.watched, session.watched_bytes = {}, 0
                return OK, False
            case "exec":
                return await self._exec(session), False
            case "watch":
                if session.multi is not None:
                    return Error(message="ERR WATCH inside MULTI is not allowed"), False
                await self.backend.check_read(NO_GUARANTEES if session.readonly else CONSISTENT)
                store = self.backend.store
                if len(session.watched) + len(args) - 1 > WATCHED_KEYS_MAX:
                    return Error(
                        message=f"ERR too many watched keys: at most {WATCHED_KEYS_MAX} per "
                        "connection"
                    ), False
                new = [k for k in dict.fromkeys(args[1:]) if k not in session.watched]
                size = session.watched_bytes + sum(len(k) + ARG_OVERHEAD_BYTES for k in new)
                if size > self.limits.max_request_bytes:
                    return Error(
                        message=f"ERR watched keys too large: at most "
                        f"{self.limits.max_request_bytes} bytes of keys per connection "
                        f"(max_request_bytes; each key counts {ARG_OVERHEAD_BYTES} bytes more)"
                    ), False
                for key in new:
                    session.watched[key] = _digest(store.get_option(key))
                session.watched_bytes = size
                return OK, False
            case "unwatch":
                session.watched, session.watched_bytes = {}, 0
                return OK, False
            case "get":
                # The hot read, without a View: check, then read with no await in between.
                await self.backend.check_read(NO_GUARANTEES if session.readonly else CONSISTENT)
                value = self.backend.store.get_option(args[1])
                return (NULL if value is None else Bulk(value=value)), False
            case "set" if len(args) == 3:
                # The hot write: nothing read, so nothing to assert or retry.
                if len(args[2]) >= self.limits.max_value_bytes:
                    raise ValueTooLarge(args[1], len(args[2]), self.limits.max_value_bytes)
                result = await self.backend.write(USet(key=args[1], value=args[2]))
                if isinstance(result, kv.KvError):
                    raise result
                return OK, False
            case _ if spec.handler is None and name != "scan":
                # Connection and server commands read no keys: no consistency check.
                return self._execute(session, None, spec, args), False
            case _ if spec.locks_keys(args) and spec.last_key == 1:
                return await self._combined(session, spec, args), False
            case _:
                replies = await self._run(session, [(spec, args)], watched=None)
                assert replies is not None
                return replies[0], False

    async def _exec(self, session: _Session) -> Reply:
        if session.multi is None:
            return Error(message="ERR EXEC without MULTI")
        queued, dirty, watched = session.multi, session.dirty, session.watched
        session.multi, session.dirty, session.watched = None, False, {}
        session.watched_bytes = 0
        if dirty:
            return Error(message="EXECABORT Transaction discarded because of previous errors.")
        replies = await self._run(session, queued, watched=watched)
        if replies is None:
            return NullArray()
        return Array(items=tuple(replies))

    async def _combined(
        self, session: _Session, spec: CommandSpec, args: tuple[bytes, ...]
    ) -> Reply:
        """A read-modify-write command of one key (INCR, APPEND, SETNX, ...), combined with
        the others that arrive for the same key while one batch is in consensus.

        Flat combining: the first caller for a key leads. It runs its batch (at first itself)
        as one update, then hands the commands that queued meanwhile to the first of them,
        which leads the next batch. Each command keeps its own reply, computed in arrival order
        on one view, so a batch is the same as those commands one after another, and a hot
        counter costs one consensus round per batch instead of one per INCR. A leader runs its
        batch even if its own connection is cancelled meanwhile (shielded; bounded by the
        write timeout), so the others are never left waiting.
        """
        key = args[1]
        me = _Waiter(spec, args)
        queue = self._combining.get(key)
        if queue is None:
            self._combining[key] = []
            batch = [me]
        else:
            queue.append(me)
            try:
                await me.done.wait()
            except anyio.get_cancelled_exc_class():
                if me.lead is not None:
                    with anyio.CancelScope(shield=True):
                        await self._lead(session, key, me.lead)
                elif me in queue:
                    queue.remove(me)
                raise
            if me.lead is None:
                return me.result()
            batch = me.lead
        with anyio.CancelScope(shield=True):
            await self._lead(session, key, batch)
        return me.result()

    async def _lead(self, session: _Session, key: bytes, batch: list[_Waiter]) -> None:
        """Run ``batch`` as one update, answer its waiters, and hand on the lead."""
        try:
            async with self._locks.hold([key]):
                try:
                    await self._run_batch(session, batch)
                except _ONE_COMMANDS_FAULT:
                    if len(batch) == 1:
                        raise
                    # The batch failed as a whole with nothing of it applied (too large to
                    # replicate, or refused by the store): one command may be the cause, so
                    # they run one by one and only the culprit fails. NoLongerMaster and the
                    # like are not retried: their outcome is unknown, or they fail all alike.
                    for waiter in batch:
                        await self._run_batch(session, [waiter], catch=True)
        except Exception as exc:  # noqa: BLE001 (each waiter re-raises it in answer(), which maps or logs it)
            for waiter in batch:
                waiter.error = exc
        for waiter in batch[1:]:
            waiter.done.set()
        queue = self._combining[key]
        if queue:
            following = list(queue)
            queue.clear()
            following[0].lead = following
            following[0].done.set()
        else:
            del self._combining[key]

    async def _run_batch(
        self, session: _Session, batch: list[_Waiter], *, catch: bool = False
    ) -> None:
        """Run ``batch`` (its key's lock held) and set each waiter's reply; with ``catch``, a
        failure is set as every waiter's error rather than raised."""
        try:
            # A batch mixes connections, READONLY ones among them: it reads consistently
            # whatever the leader's connection is (its commands all write anyway).
            replies = await self._attempt(
                session, [(w.spec, w.args) for w in batch], None, readonly=False, isolate=True
            )
        except Exception as exc:
            if not catch:
                raise
            for waiter in batch:
                waiter.error = exc
            return
        assert replies is not None
        for waiter, reply in zip(batch, replies, strict=True):
            waiter.reply = reply

    async def _run(
        self,
        session: _Session,
        commands: list[tuple[CommandSpec, tuple[bytes, ...]]],
        *,
        watched: dict[bytes, bytes | None] | None,
    ) -> list[Reply] | None:
        """Run ``commands`` as one atomic step (see the file rules); None if a watched key
        changed. Raises BackendError (not master, ...) and _Contention."""
        rmw_keys = [
            key for spec, args in commands if spec.locks_keys(args) for key in spec.keys(args)
        ]
        readonly = session.readonly
        if not rmw_keys:
            return await self._attempt(session, commands, watched, readonly=readonly)
        if watched:
            rmw_keys.extend(watched)
        async with self._locks.hold(rmw_keys):
            return await self._attempt(session, commands, watched, readonly=readonly)

    async def _attempt(
        self,
        session: _Session,
        commands: list[tuple[CommandSpec, tuple[bytes, ...]]],
        watched: dict[bytes, bytes | None] | None,
        *,
        readonly: bool,
        isolate: bool = False,
    ) -> list[Reply] | None:
        """The runs of :meth:`_run` (with its locks held, if any). ``readonly``: the commands
        come from a READONLY connection (see :func:`_read_consistency`). ``isolate``: the
        commands are independent one-key commands of different clients (:meth:`_combined`), so
        a value that is too large fails that command only (it raises before it changed the
        view)."""
        consistency = _read_consistency(readonly, commands)
        for attempt in range(RETRIES_MAX):
            if attempt:
                self.retries += 1
            await self.backend.check_read(consistency)
            store = self.backend.store
            current = {k: store.get_option(k) for k in watched or ()}
            if watched and any(_digest(current[k]) != v for k, v in watched.items()):
                return None
            view = View(store, self.limits.max_value_bytes, self.limits.max_list_items)
            if isolate:
                replies = [self._isolated(session, view, spec, args) for spec, args in commands]
            else:
                replies = [self._execute(session, view, spec, args) for spec, args in commands]
                # The replies hold references to the store's values, not copies, so summing
                # them here (before the write) costs no memory; encoding them would.
                size = sum(reply_bytes(r, session.protocol) for r in replies)
                if size > self.limits.max_request_bytes:
                    raise ReplyTooLarge(size, self.limits.max_request_bytes)
            if not view.overlay:
                return replies
            asserts: dict[bytes, Update] = {}
            if watched:
                asserts = {k: UAssert(key=k, expected=v) for k, v in current.items()}
            for update in view.asserts():
                asserts[update.key] = update  # type: ignore[union-attr]
            updates = [*asserts.values(), *view.writes()]
            update = updates[0] if len(updates) == 1 else USequence(updates=tuple(updates))
            result = await self.backend.write(update)
            if isinstance(result, kv.AssertionFailed):
                continue
            if isinstance(result, kv.KvError):
                raise result
            return replies
        raise _Contention()

    def _isolated(
        self, session: _Session, view: View, spec: CommandSpec, args: tuple[bytes, ...]
    ) -> Reply:
        try:
            return self._execute(session, view, spec, args)
        except ValueTooLarge as exc:
            return Error(message=str(exc))

    def _execute(
        self, session: _Session, view: View | None, spec: CommandSpec, args: tuple[bytes, ...]
    ) -> Reply:
        """One command, with no await: a data command on ``view``, or a connection or server
        command (``view`` may then be None)."""
        if view is not None and spec.handler is not None:
            return spec.handler(view, args)
        match spec.name:
            case "scan" if view is not None:
                return self._scan(view, args)
            case "ping":
                if len(args) > 2:
                    return _wrong_arity("ping")
                return _PONG if len(args) == 1 else Bulk(value=args[1])
            case "unwatch":
                # Queued inside MULTI, as Redis does; EXEC has used the watched keys by now.
                return OK
            case "echo":
                return Bulk(value=args[1])
            case "select":
                index = parse_int64(args[1])
                if index is None:
                    return NOT_AN_INTEGER
                if index != 0:
                    return Error(message="ERR DB index is out of range")
                return OK
            case "readonly":
                session.readonly = True
                return OK
            case "readwrite":
                session.readonly = False
                return OK
            case "info":
                return Bulk(value=self._info(args[1:]).encode())
            case "client":
                return self._client(session, args)
            case "hello":
                return self._hello(session, args)
            case "command":
                return _command(args)
            case "config":
                return self._config(args)
        raise AssertionError(f"unhandled command {spec.name}")

    # ---------------------------------------------------------------- server commands

    def _scan(self, view: View, args: tuple[bytes, ...]) -> Reply:
        cursor = parse_int64(args[1])
        if cursor is None or cursor < 0:
            return Error(message="ERR invalid cursor")
        pattern: bytes | None = None
        count = 10
        wanted_type: bytes | None = None
        i = 2
        while i < len(args):
            option = args[i].upper()
            if i + 1 >= len(args):
                return SYNTAX
            value = args[i + 1]
            if option == b"MATCH":
                refused = pattern_error("SCAN MATCH", value)
                if refused is not None:
                    return refused
                pattern = value
            elif option == b"COUNT":
                number = parse_int64(value)
                if number is None:
                    return NOT_AN_INTEGER
                if number < 1:
                    return SYNTAX
                count = min(number, SCAN_COUNT_MAX)
            elif option == b"TYPE":
                wanted_type = value.lower()
            else:
                return SYNTAX
            i += 2
        if wanted_type is not None and wanted_type not in _SCAN_TYPES:
            return Error(message=f"ERR unknown type name '{wanted_type.decode('latin-1')}'")
        if cursor == 0:
            start, inclusive = b"", True
        else:
            resume = self._cursors.get(cursor)
            if resume is None:
                return Error(
                    message=f"ERR invalid cursor: {cursor} is unknown here (cursors live on "
                    f"the node that gave them, for its newest {SCAN_CURSORS_MAX} scans)"
                )
            start, inclusive = resume, False
        prefix = b"" if pattern is None else literal_prefix(pattern)
        if prefix > start:
            start, inclusive = prefix, True
        keys = view.store.range(start, inclusive, None, False, count)
        done = len(keys) < count or not keys[-1].startswith(prefix)
        matches = compile_glob(pattern) if pattern is not None else None
        found = [
            key
            for key in keys
            if key.startswith(prefix)
            and (matches is None or matches(key))
            and (wanted_type is None or wanted_type == b"string")
        ]
        next_cursor = 0
        if not done:
            next_cursor = self._next_cursor
            self._next_cursor += 1
            self._cursors[next_cursor] = keys[-1]
            self._cursor_bytes += len(keys[-1])
            while (
                len(self._cursors) > SCAN_CURSORS_MAX or self._cursor_bytes > SCAN_CURSOR_BYTES_MAX
            ):
                self._cursor_bytes -= len(self._cursors.popitem(last=False)[1])
        cursor_reply = Bulk(value=b"%d" % next_cursor)
        return Array(items=(cursor_reply, Array(items=tuple(Bulk(value=k) for k in found))))

    def _role(self) -> tuple[str, str | None]:
        """("master" | "slave", the master's name or None)."""
        master = self.backend.who_master()
        role = "master" if master == self.backend.node_name else "slave"
        return role, master

    def _info(self, sections: tuple[bytes, ...]) -> str:
        wanted = {s.decode("latin-1").lower() for s in sections} or {"default"}
        everything = bool(wanted & {"all", "everything", "default"})
        out: list[str] = []
        if everything or "server" in wanted:
            out += [
                "# Server",
                f"redis_version:{REDIS_COMPATIBLE_VERSION}",
                "redis_mode:standalone",
                f"parakoon_version:{self.version}",
                f"parakoon_node:{self.backend.node_name}",
                f"process_id:{os.getpid()}",
                f"tcp_port:{self.port}",
                f"uptime_in_seconds:{int(time.monotonic() - self.started)}",
                "",
            ]
        if everything or "clients" in wanted:
            out += [
                "# Clients",
                f"connected_clients:{len(self._sessions)}",
                f"maxclients:{self.max_connections}",
                "",
            ]
        if everything or "replication" in wanted:
            role, master = self._role()
            out += ["# Replication", f"role:{role}"]
            if role == "slave":
                address = None if master is None else self.redis_address(master)
                host, _, port = (address or "").rpartition(":")
                out += [
                    f"master_host:{host}",
                    f"master_port:{port}",
                    f"master_link_status:{'down' if master is None else 'up'}",
                ]
            out += [f"parakoon_master:{master or ''}", ""]
        if everything or "keyspace" in wanted:
            out += ["# Keyspace"]
            count = self.backend.store.key_count()
            if count:
                out.append(f"db0:keys={count},expires=0,avg_ttl=0")
            out.append("")
        return "\r\n".join(out)

    def _client(self, session: _Session, args: tuple[bytes, ...]) -> Reply:
        sub = args[1].decode("latin-1").lower()
        match sub, len(args):
            case "setname", 3:
                name = args[2]
                if any(c < 0x21 or c > 0x7E for c in name):
                    return Error(
                        message="ERR Client names cannot contain spaces, newlines or special "
                        "characters."
                    )
                session.name = name or None
                return OK
            case "getname", 2:
                return NULL if session.name is None else Bulk(value=session.name)
            case "id", 2:
                return Integer(value=session.id)
            case "setinfo", 4:
                return OK
            case "info", 2:
                return Bulk(value=(session.describe() + "\n").encode())
            case "list", _:
                lines = "".join(s.describe() + "\n" for s in self._sessions.values())
                return Bulk(value=lines.encode())
            case (("setname" | "getname" | "id" | "setinfo" | "info"), _):
                return _wrong_arity(f"client|{sub}")
        return Error(
            message=f"ERR unknown subcommand '{args[1].decode('latin-1')}'. Try CLIENT HELP."
        )

    def _hello(self, session: _Session, args: tuple[bytes, ...]) -> Reply:
        protocol = session.protocol
        if len(args) > 1:
            version = parse_int64(args[1])
            if version is None:
                return Error(message="ERR Protocol version is not an integer or out of range")
            if version not in (2, 3):
                return Error(message="NOPROTO unsupported protocol version")
            protocol = version
        i = 2
        name: bytes | None = session.name
        while i < len(args):
            option = args[i].upper()
            if option == b"AUTH" and i + 2 < len(args):
                return Error(message="ERR AUTH is not supported: parakoon has no users")
            if option == b"SETNAME" and i + 1 < len(args):
                name = args[i + 1]
                i += 2
                continue
            return Error(message=f"ERR Syntax error in HELLO option '{args[i].decode('latin-1')}'")
        session.protocol = protocol
        session.name = name or None
        role, _ = self._role()
        return Map(
            pairs=(
                (Bulk(value=b"server"), Bulk(value=b"redis")),
                (Bulk(value=b"version"), Bulk(value=REDIS_COMPATIBLE_VERSION.encode())),
                (Bulk(value=b"proto"), Integer(value=protocol)),
                (Bulk(value=b"id"), Integer(value=session.id)),
                (Bulk(value=b"mode"), Bulk(value=b"standalone")),
                (Bulk(value=b"role"), Bulk(value=b"master" if role == "master" else b"replica")),
                (Bulk(value=b"modules"), Array(items=())),
            )
        )

    def _config(self, args: tuple[bytes, ...]) -> Reply:
        sub = args[1].decode("latin-1").lower()
        if sub != "get":
            return Error(
                message=f"ERR CONFIG {sub.upper()} is not supported: parakoon is configured "
                "through cluster.toml"
            )
        known = {
            b"databases": b"1",
            b"save": b"",
            b"appendonly": b"no",
            b"maxclients": b"%d" % self.max_connections,
        }
        pairs: dict[bytes, bytes] = {}
        for pattern in args[2:]:
            refused = pattern_error("CONFIG GET", pattern)
            if refused is not None:
                return refused
            matches = compile_glob(pattern.lower())
            pairs.update((k, v) for k, v in known.items() if matches(k))
        return Map(pairs=tuple((Bulk(value=k), Bulk(value=v)) for k, v in pairs.items()))


def _read_consistency(
    readonly: bool, commands: list[tuple[CommandSpec, tuple[bytes, ...]]]
) -> Consistency:
    """How ``commands`` read: with no guarantees only if the connection sent READONLY and
    every command only reads. A write-flagged command reads consistently even then, also when
    it ends up writing nothing (SETNX of an existing key, INCR of a non-number): its answer
    must come from the master's state, so a follower answers it with -READONLY naming the
    master, as a Redis replica answers a write on a READONLY connection."""
    if readonly and not any("write" in spec.flags for spec, _ in commands):
        return NO_GUARANTEES
    return CONSISTENT


def _digest(value: bytes | None) -> bytes | None:
    """What WATCH keeps of a value: a 16-byte BLAKE2b digest (None for an absent key)."""
    return None if value is None else hashlib.blake2b(value, digest_size=16).digest()


def _unknown(args: tuple[bytes, ...], name: str) -> Error:
    typed = args[0].decode("utf-8", "replace")[:128]
    why = UNSUPPORTED.get(name)
    if why is not None:
        return Error(message=f"ERR unknown command '{typed}': not supported by parakoon ({why})")
    # Redis's wording, with the first arguments (at most about 128 bytes of them).
    shown = ""
    for arg in args[1:]:
        if len(shown) >= 128:
            break
        shown += "'" + arg.decode("utf-8", "replace")[: 128 - len(shown)] + "' "
    return Error(message=f"ERR unknown command '{typed}', with args beginning with: {shown}")


def _wrong_arity(name: str) -> Error:
    return Error(message=f"ERR wrong number of arguments for '{name}' command")


def _command_info(spec: CommandSpec) -> Reply:
    return Array(
        items=(
            Bulk(value=spec.name.encode()),
            Integer(value=spec.arity),
            Array(items=tuple(SimpleString(text=f) for f in spec.flags)),
            Integer(value=spec.first_key),
            Integer(value=spec.last_key),
            Integer(value=spec.key_step),
            Array(items=()),
            Array(items=()),
            Array(items=()),
            Array(items=()),
        )
    )


def _command(args: tuple[bytes, ...]) -> Reply:
    if len(args) == 1:
        return Array(items=tuple(_command_info(spec) for spec in COMMANDS.values()))
    sub = args[1].decode("latin-1").lower()
    match sub:
        case "count":
            return Integer(value=len(COMMANDS))
        case "info":
            names = (a.decode("latin-1").lower() for a in args[2:])
            specs = (COMMANDS.get(n) for n in names)
            return Array(items=tuple(NULL if s is None else _command_info(s) for s in specs))
        case "docs":
            # Answered as a Redis 6 server answers it: redis-cli then builds its hints from its
            # own help table and COMMAND, which is what we want (we have no docs to add).
            return Error(message="ERR unknown subcommand 'DOCS'. Try COMMAND HELP.")
        case "list":
            return Array(items=tuple(Bulk(value=n.encode()) for n in COMMANDS))
        case "getkeys" if len(args) >= 3:
            spec = COMMANDS.get(args[2].decode("latin-1").lower())
            if spec is None or not spec.arity_ok(len(args) - 2):
                return Error(message="ERR Invalid command specified")
            return Array(items=tuple(Bulk(value=k) for k in spec.keys(args[2:])))
    return Error(message=f"ERR unknown subcommand '{args[1].decode('latin-1')}'. Try COMMAND HELP.")


async def serve_redis(
    backend: Backend,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    redis_address: Callable[[str], str | None] = lambda _name: None,
    limits: Limits = DEFAULT_LIMITS,
    max_connections: int | None = None,
    request_timeout_secs: float = 30.0,
    idle_timeout_secs: float = 900.0,
    version: str = "",
    tls: Callable[[], ssl.SSLContext] | None = None,
    handshake_timeout_secs: float = 10.0,
    task_status: anyio.abc.TaskStatus[RespServer] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host:port`` and serve the Redis protocol until cancelled.

    With ``tls`` (the context for each new connection, as for the Arakoon port) every
    connection starts with a TLS handshake bounded by ``handshake_timeout_secs``: with
    ``tls_service`` on, the Redis port must not be the one way in without a certificate.

    Start it with ``server = await tg.start(serve_redis, backend, ...)``: readiness is reported
    once the socket listens. Raises ``OSError`` if the port cannot be bound; nothing a client
    does ends the service.
    """
    server = RespServer(
        backend,
        redis_address=redis_address,
        limits=limits,
        max_connections=max_connections,
        request_timeout_secs=request_timeout_secs,
        idle_timeout_secs=idle_timeout_secs,
        version=version,
    )
    await run_listener(
        server,
        host=host,
        port=port,
        tls=tls,
        handshake_timeout_secs=handshake_timeout_secs,
        event="redis.listening",
        task_status=task_status,
    )
