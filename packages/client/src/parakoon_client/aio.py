# unasync: begin async-only
# The one copy of the client logic: ``blocking.py`` is generated from this file by
# ``packages/client/scripts/unasync.py`` (``--check``, run by CI, fails when it is stale). Lines
# between "unasync: begin async-only" and "unasync: end" are left out of the blocking client;
# lines between "unasync: begin sync-only" and "unasync: end" are comments here, code there.
# unasync: end
# unasync: begin sync-only
# """The blocking client: plain sockets, one request at a time.
#
# :class:`Client` talks to an Arakoon-protocol cluster (parakoon or Arakoon itself). It keeps one
# TCP connection per node it has needed, usually just the master's; each request is one
# ``sendall`` of the codec's bytes (the prologue rides along with the first request of a
# connection) and one or more ``recv`` into the codec's response decoder.
#
# Routing and retries are those of :mod:`parakoon_client._core` and :mod:`parakoon_client.policy`:
# writes and consistent reads go to the master, found with ``who_master`` and followed on
# ``NotMaster``; relaxed reads go to the preferred node (else the master, else any node); transient
# failures are retried with exponential back-off and jitter until ``retry_secs`` have passed;
# writes that may have been applied and are not safe to repeat raise
# :class:`~parakoon_client.errors.OutcomeUnknown`. Every connect, send and receive is bounded by
# ``timeout_secs``.
#
# A :class:`Client` is not thread-safe: use one per thread (they are cheap).
# """
# unasync: end
# unasync: begin async-only
"""The async client: the same operations as :class:`~parakoon_client.blocking.Client`, on anyio.

:class:`AsyncClient` runs on asyncio and trio alike. Routing, retries and the deadline rule are
shared with the blocking client (:mod:`parakoon_client._core`), and so is this very code: the
blocking client is generated from it. Only the I/O differs: connections are anyio socket streams
(:mod:`parakoon_client.aio_connection`), every exchange runs under ``anyio.fail_after``, pauses
use ``anyio.sleep``.

Concurrency: one instance holds at most one connection per node and the protocol answers one
request at a time per connection, so calls on one instance are **serialized by a lock**: tasks
may share an instance safely, but they take turns. For parallel load, give each task its own
``AsyncClient`` (one connection each); they are cheap.

Cancellation: a call cancelled while its request is in flight closes that connection (a late
answer would otherwise be read as the answer to the next request); the next call reconnects.
"""
# unasync: end

from __future__ import annotations

import contextlib
import random
import ssl
import types
from collections.abc import Awaitable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final, TypeVar, cast, overload

import anyio

from parakoon_client._core import (
    DEFAULT_RETRY_SECS,
    DEFAULT_TIMEOUT_SECS,
    Address,
    CallState,
    ClientCore,
    Members,
    Op,
    connection_survives,
    member_address,
    op_assert,
    op_assert_exists,
    op_confirm,
    op_current_state,
    op_delete,
    op_delete_prefix,
    op_exists,
    op_expect_progress_possible,
    op_for_request,
    op_get,
    op_get_key_count,
    op_get_txid,
    op_member_change,
    op_members,
    op_multi_get,
    op_multi_get_option,
    op_nop,
    op_ping,
    op_prefix,
    op_range,
    op_range_entries,
    op_replace,
    op_rev_range_entries,
    op_sequence,
    op_set,
    op_statistics,
    op_test_and_set,
    op_user_function,
    op_version,
    op_who_master,
    parse_members,
    server_error,
)
from parakoon_client.aio_connection import AsyncConnection
from parakoon_client.codec import (
    CONSISTENT,
    AnyRequest,
    AtLeast,
    Consistency,
    ErrorResponse,
    MemberHook,
    NamedList,
    Request,
    Update,
    VersionInfo,
    WhoMaster,
    encode_prologue,
    encode_request,
)
from parakoon_client.config import client_ssl_context, load_cluster_nodes
from parakoon_client.errors import ArakoonError, ArakoonProtocolError, NoMasterFound, NotMaster
from parakoon_client.policy import Backoff, Retry
from parakoon_client.sequence import BytesLike, SequenceBuilder

R = TypeVar("R")

_WHO_MASTER: Final = WhoMaster()
_WHO_MASTER_BYTES: Final = encode_request(_WHO_MASTER)


class AsyncSequenceContext(SequenceBuilder):
    """A :class:`SequenceBuilder` that sends its sequence when its ``async with`` block ends.

    Nothing is sent when the block raises, nor for a builder used without ``async with``.
    """

    __slots__ = ("_client", "_synced")

    def __init__(self, client: AsyncClient, *, synced: bool) -> None:
        super().__init__()
        self._client = client
        self._synced = synced

    async def __aenter__(self) -> AsyncSequenceContext:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        if exc_type is None:
            await self._client._run(op_sequence(self.updates, synced=self._synced))  # noqa: SLF001 (the client's own sequence builder)


class AsyncClient:
    """Async Arakoon-protocol client for one cluster (anyio: asyncio or trio).

    ``nodes`` maps node names to ``(host, client_port)``. ``timeout_secs`` bounds every connect,
    send and receive; no retry starts later than ``retry_secs`` after the call began (so a call
    ends within ``retry_secs + timeout_secs``; ``retry_secs=0`` means one attempt).
    ``consistency`` is the default for reads (``CONSISTENT``, ``NO_GUARANTEES`` or
    ``AtLeast(stamp)``); relaxed reads go to ``preferred_node`` when given. ``seed`` makes the
    jitter and node choices repeatable. ``ssl_context`` (see :mod:`parakoon_client.tls`) makes
    every connection TLS; unless its ``verify_mode`` is ``CERT_NONE``, each node's certificate
    must name that node (common name or DNS subjectAltName).

    Every method raises :class:`~parakoon_client.errors.ArakoonError` subclasses only (and
    ``ValueError``/``TypeError`` for arguments that cannot be sent, such as an unknown node
    name). Keys and values are ``bytes`` (``str`` is accepted and sent as UTF-8); answers are
    ``bytes``. Use ``async with AsyncClient(...) as client`` (or ``await client.aclose()``);
    for concurrency, see the module docstring.
    """

    def __init__(
        self,
        cluster_id: str,
        nodes: Mapping[str, Address],
        *,
        timeout_secs: float = DEFAULT_TIMEOUT_SECS,
        retry_secs: float = DEFAULT_RETRY_SECS,
        consistency: Consistency = CONSISTENT,
        preferred_node: str | None = None,
        backoff: Backoff | None = None,
        seed: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._ssl_context = ssl_context
        self._core = ClientCore(
            cluster_id,
            nodes,
            timeout_secs=timeout_secs,
            retry_secs=retry_secs,
            consistency=consistency,
            preferred_node=preferred_node,
            backoff=backoff,
            rng=random.Random(seed),
        )
        self._prologue = encode_prologue(cluster_id)
        self._connections: dict[str, AsyncConnection] = {}
        # unasync: begin async-only
        self._lock: anyio.Lock | None = None
        # unasync: end

    @classmethod
    def from_config(
        cls,
        path: str | Path,
        node: str | None = None,
        *,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
        tls_ca_cert: str | Path | None = None,
        **kwargs: Any,
    ) -> AsyncClient:
        """A client for the cluster described by ``path`` (a ``cluster.toml``).

        ``node`` becomes the preferred node for relaxed reads; ``kwargs`` are passed on. With
        ``[cluster] tls_service = true`` in the file, connections are TLS, verified against
        ``tls_ca_cert`` (default: the file's ``tls_ca_cert``), presenting ``tls_cert`` and
        ``tls_key`` if given (see :func:`parakoon_client.config.client_ssl_context`). Raises
        :class:`~parakoon_client.config.ConfigError` for an unusable file.
        """
        view = load_cluster_nodes(path)
        if "ssl_context" not in kwargs:
            kwargs["ssl_context"] = client_ssl_context(
                view, cert=tls_cert, key=tls_key, ca_cert=tls_ca_cert
            )
        return cls(view.cluster_id, view.nodes, preferred_node=node, **kwargs)

    # --- lifecycle ----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close every connection. The client may be used again (it reconnects)."""
        connections = list(self._connections.values())
        self._connections.clear()
        for conn in connections:
            await conn.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def cluster_id(self) -> str:
        return self._core.cluster_id

    @property
    def nodes(self) -> Mapping[str, Address]:
        return types.MappingProxyType(self._core.nodes)

    @property
    def master(self) -> str | None:
        """The master as last found (``None`` until needed, or after it failed)."""
        return self._core.master

    @property
    def connected_nodes(self) -> list[str]:
        """Names of the nodes this client holds an open connection to."""
        return sorted(self._connections)

    # --- the loop -----------------------------------------------------------------------------

    async def call(self, request: Request[R], *, node: str | None = None) -> R:
        """Send any codec request with the client's routing and retry rules; return its result.

        With ``node`` the request goes to that node only: no discovery, no redirects (a
        ``NotMaster`` is raised), but reconnects and retries of transient failures still apply.
        """
        return await self._run(op_for_request(request), node)

    # unasync: begin async-only
    async def _run(self, op: Op[R], node: str | None = None) -> R:
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            return await self._run_locked(op, node)

    # unasync: end
    async def _run_locked(self, op: Op[R], node: str | None = None) -> R:
        core = self._core
        payload = encode_request(cast(AnyRequest, op.request))
        call = core.start_call(op, pinned=node, now=anyio.current_time())
        # Before a write that must not be repeated, make sure the connection was not closed
        # while idle (a restarted node): sending on it would make the outcome unknown.
        check_idle = op.retry is not Retry.ALWAYS
        while True:
            target = node
            try:
                if target is None:
                    target = core.target(op.route)
                    if target is None:
                        target = await self._discover(call)
                return await self._exchange(
                    target, op.request, payload, call, check_idle=check_idle
                )
            except ArakoonError as error:
                hint = error.master if isinstance(error, NotMaster) else None
                if hint is not None and hint not in core.nodes and node is None and target:
                    # Redirected to a member this client does not know (added at run time):
                    # learn the membership from the node that named it, then follow.
                    await self._drop(target)
                    await self._learn_members(target, call)
                action = core.after_failure(call, target, error, now=anyio.current_time())
                if action.drop and target is not None:
                    await self._drop(target)
                if action.error is error:
                    raise
                if action.error is not None:
                    raise action.error from error
            await anyio.sleep(action.delay_secs)

    async def _exchange(
        self,
        target: str,
        request: Request[R],
        payload: bytes,
        call: CallState,
        *,
        check_idle: bool,
    ) -> R:
        conn = self._connections.get(target)
        if conn is not None and (conn.busy or (check_idle and conn.looks_closed())):
            await self._drop(target)
            conn = None
        budget = call.require_budget_secs(anyio.current_time(), target)
        if conn is None:
            conn = await AsyncConnection.open(
                target, self._core.nodes[target], self._prologue, budget, self._ssl_context
            )
            self._connections[target] = conn
            budget = call.require_budget_secs(anyio.current_time(), target, connected=True)
        event = await conn.exchange(request, payload, budget)
        if isinstance(event, ErrorResponse):
            raise server_error(event)
        result: R = event
        return result

    async def _drop(self, node: str) -> None:
        conn = self._connections.pop(node, None)
        if conn is not None:
            await conn.aclose()

    async def _ask_who_master(self, node: str, call: CallState) -> str | None:
        try:
            return await self._exchange(
                node, _WHO_MASTER, _WHO_MASTER_BYTES, call, check_idle=False
            )
        except ArakoonError as error:
            if not connection_survives(error):
                await self._drop(node)
            raise

    async def _learn_members(self, node: str, call: CallState) -> None:
        op = op_members()
        try:
            text = await self._exchange(
                node,
                op.request,
                encode_request(cast(MemberHook, op.request)),
                call,
                check_idle=False,
            )
        except ArakoonError as error:
            if not connection_survives(error):
                await self._drop(node)
            return
        with contextlib.suppress(ArakoonError):
            self._core.learn_members(parse_members(text))

    async def _discover(self, call: CallState) -> str:
        """Find the master: a node names it, and it names itself (protocol §6)."""
        core = self._core
        failures: list[str] = []
        for name in core.discovery_order():
            try:
                answer = await self._ask_who_master(name, call)
            except ArakoonError as exc:
                failures.append(f"{name}: {exc}")
                continue
            if answer is None:
                failures.append(f"{name} knows no master")
                continue
            if answer not in core.nodes:
                # A member added at run time: learn the membership from the node that named it.
                await self._learn_members(name, call)
            if answer not in core.nodes:
                failures.append(f"{name} names {answer!r}, which is not a node of this client")
                continue
            if answer != name:
                try:
                    confirmed = await self._ask_who_master(answer, call)
                except ArakoonError as exc:
                    failures.append(f"{name} names {answer}, which fails: {exc}")
                    continue
                if confirmed != answer:
                    failures.append(f"{name} names {answer}, but {answer} names {confirmed}")
                    continue
            core.accept_master(answer)
            keep = {answer, core.preferred_node}
            for other in [n for n in self._connections if n not in keep]:
                await self._drop(other)
            return answer
        raise NoMasterFound("no master found: " + "; ".join(failures))

    # --- reads --------------------------------------------------------------------------------

    def _c(self, consistency: Consistency | None) -> Consistency:
        return self._core.consistency if consistency is None else consistency

    async def get(self, key: BytesLike, *, consistency: Consistency | None = None) -> bytes:
        """The value of ``key``. Raises ``NotFound`` if it is absent."""
        return await self._run(op_get(key, self._c(consistency)))

    async def exists(self, key: BytesLike, *, consistency: Consistency | None = None) -> bool:
        """Whether ``key`` is present."""
        return await self._run(op_exists(key, self._c(consistency)))

    async def range(
        self,
        first: BytesLike | None = None,
        last: BytesLike | None = None,
        *,
        first_inclusive: bool = True,
        last_inclusive: bool = True,
        max_keys: int = -1,
        consistency: Consistency | None = None,
    ) -> list[bytes]:
        """Keys between ``first`` and ``last`` (None: unbounded), ascending, at most
        ``max_keys`` of them (the smallest; negative: all)."""
        return await self._run(
            op_range(
                first,
                last,
                first_inclusive=first_inclusive,
                last_inclusive=last_inclusive,
                max_keys=max_keys,
                consistency=self._c(consistency),
            )
        )

    async def range_entries(
        self,
        first: BytesLike | None = None,
        last: BytesLike | None = None,
        *,
        first_inclusive: bool = True,
        last_inclusive: bool = True,
        max_keys: int = -1,
        consistency: Consistency | None = None,
    ) -> list[tuple[bytes, bytes]]:
        """``(key, value)`` pairs between ``first`` and ``last``, ascending (as :meth:`range`)."""
        return await self._run(
            op_range_entries(
                first,
                last,
                first_inclusive=first_inclusive,
                last_inclusive=last_inclusive,
                max_keys=max_keys,
                consistency=self._c(consistency),
            )
        )

    async def rev_range_entries(
        self,
        first: BytesLike | None = None,
        last: BytesLike | None = None,
        *,
        first_inclusive: bool = True,
        last_inclusive: bool = True,
        max_keys: int = -1,
        consistency: Consistency | None = None,
    ) -> list[tuple[bytes, bytes]]:
        """Pairs from ``first`` (the upper bound) down to ``last``, descending; at most
        ``max_keys`` (the largest)."""
        return await self._run(
            op_rev_range_entries(
                first,
                last,
                first_inclusive=first_inclusive,
                last_inclusive=last_inclusive,
                max_keys=max_keys,
                consistency=self._c(consistency),
            )
        )

    async def prefix(
        self, prefix: BytesLike, max_keys: int = -1, *, consistency: Consistency | None = None
    ) -> list[bytes]:
        """Keys starting with ``prefix``, ascending, at most ``max_keys`` (negative: all)."""
        return await self._run(op_prefix(prefix, max_keys, self._c(consistency)))

    async def multi_get(
        self, keys: Iterable[BytesLike], *, consistency: Consistency | None = None
    ) -> list[bytes]:
        """The values of ``keys``, in their order. Raises ``NotFound`` if any is absent."""
        return await self._run(op_multi_get(keys, self._c(consistency)))

    async def multi_get_option(
        self, keys: Iterable[BytesLike], *, consistency: Consistency | None = None
    ) -> list[bytes | None]:
        """The values of ``keys``, in their order, ``None`` for an absent key."""
        return await self._run(op_multi_get_option(keys, self._c(consistency)))

    async def assert_(
        self,
        key: BytesLike,
        expected: BytesLike | None,
        *,
        consistency: Consistency | None = None,
    ) -> None:
        """Raise ``AssertionFailed`` unless ``key`` holds ``expected`` (None: is absent)."""
        await self._run(op_assert(key, expected, self._c(consistency)))

    async def assert_exists(
        self, key: BytesLike, *, consistency: Consistency | None = None
    ) -> None:
        """Raise ``AssertionFailed`` unless ``key`` exists."""
        await self._run(op_assert_exists(key, self._c(consistency)))

    async def get_key_count(self) -> int:
        """The number of keys in the store (asks the master)."""
        return await self._run(op_get_key_count())

    # --- writes -------------------------------------------------------------------------------

    async def set(self, key: BytesLike, value: BytesLike) -> None:
        """Store ``value`` under ``key``. Retried on transient failures (idempotent)."""
        await self._run(op_set(key, value))

    async def confirm(self, key: BytesLike, value: BytesLike) -> None:
        """Like :meth:`set`, but no consensus round when ``key`` already holds ``value``."""
        await self._run(op_confirm(key, value))

    async def delete(self, key: BytesLike) -> None:
        """Remove ``key``. Raises ``NotFound`` if absent, or ``OutcomeUnknown`` if it became
        absent while an earlier attempt's outcome was unknown."""
        await self._run(op_delete(key))

    async def test_and_set(
        self, key: BytesLike, expected: BytesLike | None, wanted: BytesLike | None
    ) -> bytes | None:
        """If ``key`` holds ``expected`` (None: absent), set it to ``wanted`` (None: delete).

        Returns the value before the call: the swap happened exactly when it equals
        ``expected``. Never repeated once sent (``OutcomeUnknown`` instead).
        """
        return await self._run(op_test_and_set(key, expected, wanted))

    async def replace(self, key: BytesLike, wanted: BytesLike | None) -> bytes | None:
        """Set ``key`` to ``wanted`` (None: delete); returns the previous value."""
        return await self._run(op_replace(key, wanted))

    async def delete_prefix(self, prefix: BytesLike) -> int:
        """Remove every key starting with ``prefix``; returns how many were removed."""
        return await self._run(op_delete_prefix(prefix))

    async def user_function(self, name: str, argument: BytesLike | None = None) -> bytes | None:
        """Run the server-side function ``name`` as a replicated update; returns its result."""
        return await self._run(op_user_function(name, argument))

    async def nop(self) -> None:
        """Run an empty update through consensus (checks that the master makes progress)."""
        await self._run(op_nop())

    @overload
    def sequence(self, updates: None = None, *, synced: bool = False) -> AsyncSequenceContext: ...

    @overload
    def sequence(self, updates: Iterable[Update], *, synced: bool = False) -> Awaitable[None]: ...

    def sequence(
        self, updates: Iterable[Update] | None = None, *, synced: bool = False
    ) -> AsyncSequenceContext | Awaitable[None]:
        """Apply updates atomically, in order.

        ``await client.sequence(updates)`` sends the given updates now; ``async with
        client.sequence() as seq: seq.set(...)`` sends what the block added when it ends without
        an exception. ``synced`` asks the node to sync its log before answering (SYNCED_SEQUENCE).
        """
        if updates is None:
            return AsyncSequenceContext(self, synced=synced)
        return self._run(op_sequence(updates, synced=synced))

    @overload
    def synced_sequence(self, updates: None = None) -> AsyncSequenceContext: ...

    @overload
    def synced_sequence(self, updates: Iterable[Update]) -> Awaitable[None]: ...

    def synced_sequence(
        self, updates: Iterable[Update] | None = None
    ) -> AsyncSequenceContext | Awaitable[None]:
        """:meth:`sequence` with ``synced=True``."""
        return (
            self.sequence(updates, synced=True)
            if updates is not None
            else self.sequence(synced=True)
        )

    # --- cluster information ------------------------------------------------------------------

    # --- membership (parakoon) ------------------------------------------------------------

    async def members(self, *, node: str | None = None) -> Members:
        """The membership in force, from any node (or ``node``); the client also learns the
        members added at run time and forgets the removed ones."""
        members = parse_members(await self._run(op_members(), node))
        self._core.learn_members(members)
        return members

    async def member_add(
        self, name: str, *, host: str, messaging_port: int, client_port: int
    ) -> Members:
        """Add ``name`` as a learner (start its node next, then ``member_promote`` it)."""
        address = member_address(host, messaging_port, client_port)
        return await self._member_change("add", name, address)

    async def member_promote(self, name: str) -> Members:
        """Make a learner that has caught up a voter (``ArakoonBadInput`` while it has not)."""
        return await self._member_change("promote", name)

    async def member_remove(self, name: str) -> Members:
        """Remove a voter or learner, the master included."""
        return await self._member_change("remove", name)

    async def _member_change(self, op: str, name: str, address: str = "") -> Members:
        members = parse_members(await self._run(op_member_change(op, name, address)))
        self._core.learn_members(members)
        return members

    async def who_master(self, *, node: str | None = None) -> str | None:
        """The master as ``node`` (default: the read node) sees it, or ``None``."""
        return await self._run(op_who_master(), node)

    async def expect_progress_possible(self, *, node: str | None = None) -> bool:
        """Whether the node (default: the master) sees a quorum able to make progress."""
        return await self._run(op_expect_progress_possible(), node)

    async def statistics(self, *, node: str | None = None) -> NamedList:
        """The node's statistics tree (protocol §10; ``StatisticsReport.from_tree`` reads it)."""
        return await self._run(op_statistics(), node)

    async def version(self, *, node: str | None = None) -> VersionInfo:
        """The node's version."""
        return await self._run(op_version(), node)

    async def current_state(self, *, node: str | None = None) -> str:
        """The node's consensus state, as text (informational)."""
        return await self._run(op_current_state(), node)

    async def ping(self, client_id: str = "parakoon-client", *, node: str | None = None) -> str:
        """The node's ``"Arakoon <version>"`` greeting."""
        return await self._run(op_ping(client_id, self._core.cluster_id), node)

    async def get_txid(self, *, node: str | None = None) -> AtLeast:
        """The node's (default: the master's) last applied transaction, as ``AtLeast(stamp)``.

        Read-your-writes: after a write, pass ``client.get_txid()`` as the ``consistency`` of
        a read on any node; that node answers only once it has applied the write.
        """
        value = await self._run(op_get_txid(), node)
        if isinstance(value, AtLeast):
            return value
        raise ArakoonProtocolError(f"get_txid answered {value!r}, expected an AtLeast stamp")
