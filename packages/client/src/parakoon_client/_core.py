"""What the blocking and the async client share: operations, routing and the retry bookkeeping.

Both clients are thin loops over this module and the codec. For every call they build an
:class:`Op` (the codec request plus its retry class and where it must go), start a
:class:`CallState` with :meth:`ClientCore.start_call`, and then repeat:

1. ``target = pinned node, or ClientCore.target(op.route)``, discovering the master first when the
   route is the master and none is known (:meth:`ClientCore.discovery_order`,
   :meth:`ClientCore.accept_master`);
2. send the request to ``target`` and read the answer, within
   :meth:`CallState.attempt_budget_secs`;
3. on a failure, :meth:`ClientCore.after_failure` says whether to drop the connection, what to
   raise, or how long to pause before step 1.

Nothing here does I/O: time comes in as ``now`` arguments and randomness from a
``random.Random`` the client owns (seedable, for tests). The rules of step 3 are
:mod:`parakoon_client.policy`; this module adds what depends on the client's state: which node is
master, which node serves relaxed reads, following a ``NotMaster`` redirect, and the call's
deadline.

Deadline rule: no new attempt starts later than ``retry_secs`` after the call began, and every
exchange (connect, send, receive) is bounded by ``timeout_secs``; the call as a whole is cut at
``retry_secs + timeout_secs``. So ``retry_secs=0`` means a single attempt, and a call never
takes longer than ``retry_secs + timeout_secs`` (plus scheduling noise).
"""

from __future__ import annotations

import enum
import json
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar, cast

from parakoon_client.codec import (
    CONSISTENT,
    NEED_DATA,
    NO_GUARANTEES,
    Assert,
    AssertExists,
    Confirm,
    Consistency,
    Consistent,
    CurrentState,
    Delete,
    DeletePrefix,
    ErrorResponse,
    Exists,
    ExpectProgressPossible,
    Get,
    GetKeyCount,
    GetTxid,
    MemberHook,
    MultiGet,
    MultiGetOption,
    NamedList,
    NeedData,
    Nop,
    Ping,
    PrefixKeys,
    Range,
    RangeEntries,
    Replace,
    Request,
    ResponseDecoder,
    RevRangeEntries,
    Sequence,
    Set,
    Statistics,
    TestAndSet,
    Update,
    UserFunction,
    Version,
    VersionInfo,
    WhoMaster,
    decode_response,
)
from parakoon_client.errors import (
    ArakoonError,
    ArakoonNotConnected,
    ArakoonProtocolError,
    ArakoonServerError,
    ArakoonTimeout,
    NotMaster,
    OutcomeUnknown,
    error_for_code,
)
from parakoon_client.policy import (
    COMMAND_RETRY,
    Backoff,
    Retry,
    Verdict,
    decide,
    makes_outcome_unknown,
)
from parakoon_client.sequence import BytesLike, as_bytes, as_optional_bytes, sequence_retry

R = TypeVar("R")

Address = tuple[str, int]

DEFAULT_TIMEOUT_SECS: Final = 10.0
DEFAULT_RETRY_SECS: Final = 30.0
# A NotMaster that names another node is followed at once, without a pause, this many times in
# a row; after that the pauses apply, so two nodes that name each other cannot make a hot loop.
REDIRECTS_WITHOUT_PAUSE_MAX: Final = 2
# Receive buffer size: responses to the common small requests arrive in one recv.
RECV_CHUNK_BYTES: Final = 256 * 1024


class Route(enum.Enum):
    """Where an operation is sent when the caller does not name a node."""

    MASTER = "master"  # writes, consistent reads, and the master's own view (txid, statistics)
    ANY = "any"  # relaxed reads and who_master: the preferred node, else the master, else any


@dataclass(frozen=True, slots=True, kw_only=True)
class Op(Generic[R]):
    """One operation: the codec request, its name for messages, its retry class and route."""

    name: str
    request: Request[R]
    retry: Retry
    route: Route
    is_write: bool = False


def _route_for(consistency: Consistency) -> Route:
    return Route.MASTER if isinstance(consistency, Consistent) else Route.ANY


def _read(name: str, request: Request[R], consistency: Consistency) -> Op[R]:
    return Op(name=name, request=request, retry=COMMAND_RETRY[name], route=_route_for(consistency))


def _write(name: str, request: Request[R], retry: Retry | None = None) -> Op[R]:
    chosen = COMMAND_RETRY[name] if retry is None else retry
    return Op(name=name, request=request, retry=chosen, route=Route.MASTER, is_write=True)


def _info(name: str, request: Request[R], route: Route = Route.MASTER) -> Op[R]:
    return Op(name=name, request=request, retry=COMMAND_RETRY[name], route=route)


# --- Operation builders: one per public method, shared by both clients. ---------------------


def op_get(key: BytesLike, consistency: Consistency) -> Op[bytes]:
    return _read("get", Get(key=as_bytes(key), consistency=consistency), consistency)


def op_exists(key: BytesLike, consistency: Consistency) -> Op[bool]:
    return _read("exists", Exists(key=as_bytes(key), consistency=consistency), consistency)


def op_set(key: BytesLike, value: BytesLike) -> Op[None]:
    return _write("set", Set(key=as_bytes(key), value=as_bytes(value)))


def op_confirm(key: BytesLike, value: BytesLike) -> Op[None]:
    return _write("confirm", Confirm(key=as_bytes(key), value=as_bytes(value)))


def op_delete(key: BytesLike) -> Op[None]:
    return _write("delete", Delete(key=as_bytes(key)))


def op_range(
    first: BytesLike | None,
    last: BytesLike | None,
    *,
    first_inclusive: bool,
    last_inclusive: bool,
    max_keys: int,
    consistency: Consistency,
) -> Op[list[bytes]]:
    request = Range(
        first=as_optional_bytes(first),
        first_inclusive=first_inclusive,
        last=as_optional_bytes(last),
        last_inclusive=last_inclusive,
        max_keys=max_keys,
        consistency=consistency,
    )
    return _read("range", request, consistency)


def op_range_entries(
    first: BytesLike | None,
    last: BytesLike | None,
    *,
    first_inclusive: bool,
    last_inclusive: bool,
    max_keys: int,
    consistency: Consistency,
) -> Op[list[tuple[bytes, bytes]]]:
    request = RangeEntries(
        first=as_optional_bytes(first),
        first_inclusive=first_inclusive,
        last=as_optional_bytes(last),
        last_inclusive=last_inclusive,
        max_keys=max_keys,
        consistency=consistency,
    )
    return _read("range_entries", request, consistency)


def op_rev_range_entries(
    first: BytesLike | None,
    last: BytesLike | None,
    *,
    first_inclusive: bool,
    last_inclusive: bool,
    max_keys: int,
    consistency: Consistency,
) -> Op[list[tuple[bytes, bytes]]]:
    request = RevRangeEntries(
        first=as_optional_bytes(first),
        first_inclusive=first_inclusive,
        last=as_optional_bytes(last),
        last_inclusive=last_inclusive,
        max_keys=max_keys,
        consistency=consistency,
    )
    return _read("rev_range_entries", request, consistency)


def op_prefix(prefix: BytesLike, max_keys: int, consistency: Consistency) -> Op[list[bytes]]:
    request = PrefixKeys(prefix=as_bytes(prefix), max_keys=max_keys, consistency=consistency)
    return _read("prefix", request, consistency)


def op_multi_get(keys: Iterable[BytesLike], consistency: Consistency) -> Op[list[bytes]]:
    request = MultiGet(keys=tuple(as_bytes(k) for k in keys), consistency=consistency)
    return _read("multi_get", request, consistency)


def op_multi_get_option(
    keys: Iterable[BytesLike], consistency: Consistency
) -> Op[list[bytes | None]]:
    request = MultiGetOption(keys=tuple(as_bytes(k) for k in keys), consistency=consistency)
    return _read("multi_get_option", request, consistency)


def op_test_and_set(
    key: BytesLike, expected: BytesLike | None, wanted: BytesLike | None
) -> Op[bytes | None]:
    request = TestAndSet(
        key=as_bytes(key), expected=as_optional_bytes(expected), wanted=as_optional_bytes(wanted)
    )
    return _write("test_and_set", request)


def op_replace(key: BytesLike, wanted: BytesLike | None) -> Op[bytes | None]:
    return _write("replace", Replace(key=as_bytes(key), wanted=as_optional_bytes(wanted)))


def op_delete_prefix(prefix: BytesLike) -> Op[int]:
    return _write("delete_prefix", DeletePrefix(prefix=as_bytes(prefix)))


def op_sequence(updates: Iterable[Update], *, synced: bool) -> Op[None]:
    frozen = tuple(updates)
    name = "synced_sequence" if synced else "sequence"
    return _write(name, Sequence(updates=frozen, synced=synced), sequence_retry(frozen))


def op_assert(key: BytesLike, expected: BytesLike | None, consistency: Consistency) -> Op[None]:
    request = Assert(
        key=as_bytes(key), expected=as_optional_bytes(expected), consistency=consistency
    )
    return _read("assert_", request, consistency)


def op_assert_exists(key: BytesLike, consistency: Consistency) -> Op[None]:
    request = AssertExists(key=as_bytes(key), consistency=consistency)
    return _read("assert_exists", request, consistency)


def op_user_function(name: str, argument: BytesLike | None) -> Op[bytes | None]:
    request = UserFunction(name=name, argument=as_optional_bytes(argument))
    return _write("user_function", request)


def op_nop() -> Op[None]:
    return _write("nop", Nop())


def op_get_key_count() -> Op[int]:
    return _info("get_key_count", GetKeyCount())


def op_who_master() -> Op[str | None]:
    return _info("who_master", WhoMaster(), Route.ANY)


def op_expect_progress_possible() -> Op[bool]:
    return _info("expect_progress_possible", ExpectProgressPossible())


def op_statistics() -> Op[NamedList]:
    return _info("statistics", Statistics())


def op_version() -> Op[VersionInfo]:
    return _info("version", Version())


def op_current_state() -> Op[str]:
    return _info("current_state", CurrentState())


def op_get_txid() -> Op[Consistency]:
    return _info("get_txid", GetTxid())


def op_ping(client_id: str, cluster_id: str) -> Op[str]:
    return _info("ping", Ping(client_id=client_id, cluster_id=cluster_id))


@dataclass(frozen=True, slots=True, kw_only=True)
class Members:
    """A cluster's membership as one node knows it (``members()`` and the member changes).

    ``addresses`` maps the members added at run time to their client address ``(host, port)``;
    members of the cluster file keep the addresses the client was given. ``master`` is the
    node the answering node believes holds the lease, if any.
    """

    voters: tuple[str, ...]
    learners: tuple[str, ...]
    addresses: Mapping[str, Address]
    master: str | None
    replicated: bool


def parse_members(text: str) -> Members:
    """The JSON answer of the ``parakoon.member`` hook; ``ArakoonProtocolError`` if it is not
    one."""
    try:
        obj = json.loads(text)
        addresses: dict[str, Address] = {}
        for name, address in obj.get("addresses", {}).items():
            a = json.loads(address)
            addresses[str(name)] = (str(a["host"]), int(a["client_port"]))
        return Members(
            voters=tuple(str(v) for v in obj["voters"]),
            learners=tuple(str(v) for v in obj["learners"]),
            addresses=addresses,
            master=obj.get("master"),
            replicated=bool(obj.get("replicated", False)),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ArakoonProtocolError(f"not a membership answer: {text[:200]!r} ({exc})") from None


def op_members() -> Op[str]:
    request = MemberHook(request=json.dumps({"op": "list"}), consistency=NO_GUARANTEES)
    return Op(name="members", request=request, retry=Retry.ALWAYS, route=Route.ANY)


def op_member_change(op: str, node: str, address: str = "") -> Op[str]:
    """Add (as a learner), promote or remove one node: through the master, never repeated once
    sent (a second ``add`` of the same node is refused)."""
    text = json.dumps({"op": op, "node": node, "address": address})
    request = MemberHook(request=text, consistency=CONSISTENT)
    return Op(
        name=f"member_{op}", request=request, retry=Retry.UNTIL_SENT, route=Route.MASTER,
        is_write=True,
    )  # fmt: skip


def member_address(host: str, messaging_port: int, client_port: int) -> str:
    """The address string a node keeps for a member it added (see parakoon_node)."""
    return json.dumps(
        {"host": host, "messaging_port": messaging_port, "client_port": client_port},
        sort_keys=True,
    )


def op_for_request(request: Request[R]) -> Op[R]:
    """A generic operation for any codec request (used by ``call``).

    Requests with a consistency argument are routed by it; the class-W writes of the protocol go
    to the master and are never repeated once sent, except the idempotent ones of
    :data:`~parakoon_client.policy.COMMAND_RETRY`; everything else (class A and the
    administrative commands) goes to the master and is treated like a read.
    """
    name = _REQUEST_NAMES.get(type(request), type(request).__name__)
    consistency = getattr(request, "consistency", None)
    if isinstance(request, Sequence):
        return cast("Op[R]", _write(name, request, sequence_retry(request.updates)))
    if type(request) in _WRITE_TYPES:
        return _write(name, request, COMMAND_RETRY.get(name, Retry.UNTIL_SENT))
    retry = COMMAND_RETRY.get(name, Retry.ALWAYS)
    if consistency is not None:
        return Op(name=name, request=request, retry=retry, route=_route_for(consistency))
    route = Route.ANY if isinstance(request, WhoMaster) else Route.MASTER
    return Op(name=name, request=request, retry=retry, route=route)


_REQUEST_NAMES: Final[dict[type, str]] = {
    Get: "get",
    Exists: "exists",
    Set: "set",
    Confirm: "confirm",
    Delete: "delete",
    Range: "range",
    RangeEntries: "range_entries",
    RevRangeEntries: "rev_range_entries",
    PrefixKeys: "prefix",
    MultiGet: "multi_get",
    MultiGetOption: "multi_get_option",
    TestAndSet: "test_and_set",
    Replace: "replace",
    DeletePrefix: "delete_prefix",
    Sequence: "sequence",
    Assert: "assert_",
    AssertExists: "assert_exists",
    UserFunction: "user_function",
    Nop: "nop",
    GetKeyCount: "get_key_count",
    WhoMaster: "who_master",
    ExpectProgressPossible: "expect_progress_possible",
    Statistics: "statistics",
    Version: "version",
    CurrentState: "current_state",
    GetTxid: "get_txid",
    Ping: "ping",
}
_WRITE_TYPES: Final = frozenset(
    {Set, Confirm, Delete, TestAndSet, Replace, DeletePrefix, UserFunction, Nop}
)


def server_error(response: ErrorResponse) -> ArakoonServerError:
    """The exception for an error response (the message decoded as UTF-8, errors replaced)."""
    return error_for_code(int(response.code), response.text)


# --- Per-call bookkeeping. --------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class CallState:
    """The retry state of one call (mutable, owned by the loop running the call)."""

    op: Op[Any]
    pinned: str | None
    retry_deadline: float  # no attempt starts after this
    deadline: float  # no exchange runs past this
    timeout_secs: float
    attempt: int = 0
    redirects: int = 0
    # The first error after which a write may have been applied, if any.
    unknown: ArakoonError | None = None

    def attempt_budget_secs(self, now: float) -> float:
        """Time the next exchange may take: ``timeout_secs``, cut at the call's deadline."""
        return min(self.timeout_secs, self.deadline - now)

    def require_budget_secs(self, now: float, target: str, *, connected: bool = False) -> float:
        """:meth:`attempt_budget_secs`; raises ``ArakoonTimeout`` (nothing sent) if none is left."""
        budget = self.attempt_budget_secs(now)
        if budget <= 0:
            after = " after connecting" if connected else ""
            raise ArakoonTimeout(
                f"{self.op.name}: no time left to ask {target}{after}",
                node=target,
                request_sent=False,
            )
        return budget


@dataclass(frozen=True, slots=True, kw_only=True)
class AfterFailure:
    """What the loop does after a failed attempt.

    ``drop`` says whether the connection to the node that failed must be closed (the server
    closed it, or its stream can no longer be trusted). Then either ``error`` is raised
    (``from`` the attempt's error when it is a different exception), or the loop pauses
    ``delay_secs`` and tries again.
    """

    drop: bool
    error: ArakoonError | None = None
    delay_secs: float = 0.0


class AnswerReader(Generic[R]):
    """The answer to one request, from the chunks a connection receives (both clients' loop).

    :meth:`feed` returns the result (or ``ErrorResponse``) once the answer is complete, else
    ``NEED_DATA``; it raises ``ArakoonProtocolError`` for bytes after the answer and lets the
    codec's ``RemoteProtocolError`` through for a malformed one.
    """

    __slots__ = ("_decoder", "_node", "_request", "_where")

    def __init__(self, request: Request[R], where: str, node: str) -> None:
        self._request = request
        self._where = where
        self._node = node
        self._decoder: ResponseDecoder[R] | None = None

    def feed(self, chunk: bytes) -> R | ErrorResponse | NeedData:
        decoder = self._decoder
        if decoder is None:
            # Fast path: a small answer arrives whole in the first chunk.
            decoded = decode_response(self._request, chunk)
            if decoded is not NEED_DATA:
                event, used = decoded
                if used != len(chunk):
                    raise self._trailing(len(chunk) - used)
                return event
            decoder = self._decoder = ResponseDecoder(self._request)
        decoder.feed(chunk)
        complete = decoder.next_event()
        if complete is not NEED_DATA and decoder.trailing_data:
            raise self._trailing(len(decoder.trailing_data))
        return complete

    def closed_error(self, *, fresh_connection: bool) -> ArakoonNotConnected:
        """The error for the peer closing the connection before the answer was complete."""
        hint = (
            " (a node closes a new connection silently when the cluster id is wrong)"
            if fresh_connection and self._decoder is None
            else ""
        )
        return ArakoonNotConnected(
            f"{self._where} closed the connection before answering{hint}",
            node=self._node,
            request_sent=True,
        )

    def _trailing(self, count: int) -> ArakoonProtocolError:
        return ArakoonProtocolError(
            f"{self._where} sent {count} bytes after the end of its answer", node=self._node
        )


def connect_failure(node: str, where: str, exc: OSError, budget_secs: float) -> ArakoonError:
    """The error for a connect to ``where`` that failed with ``exc`` (a timeout or refusal)."""
    if isinstance(exc, TimeoutError):
        return ArakoonTimeout(
            f"connecting to {where} took more than {budget_secs:.3g} s", node=node
        )
    return ArakoonNotConnected(f"cannot connect to {where}: {exc.strerror or exc}", node=node)


def connection_survives(error: ArakoonError) -> bool:
    """Whether the connection can carry the next request after ``error``."""
    return isinstance(error, ArakoonServerError) and not error.closes_connection


class ClientCore:
    """The routing state of one client: master, read node, timing settings and jitter source.

    Not thread-safe; each client instance owns one and uses it from one call at a time.
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
        rng: random.Random | None = None,
    ) -> None:
        if not cluster_id:
            raise ValueError("cluster_id must not be empty")
        if not nodes:
            raise ValueError("a client needs at least one node")
        if not timeout_secs > 0:
            raise ValueError(f"timeout_secs must be > 0, got {timeout_secs}")
        if not retry_secs >= 0:
            raise ValueError(f"retry_secs must be >= 0, got {retry_secs}")
        if preferred_node is not None and preferred_node not in nodes:
            raise ValueError(f"preferred_node {preferred_node!r} is not one of {sorted(nodes)}")
        self.cluster_id = cluster_id
        self.nodes: dict[str, Address] = {
            name: (host, port) for name, (host, port) in nodes.items()
        }
        self.timeout_secs = float(timeout_secs)
        self.retry_secs = float(retry_secs)
        self.consistency = consistency
        self.preferred_node = preferred_node
        self.backoff = backoff if backoff is not None else Backoff()
        self.rng = rng if rng is not None else random.Random()
        self.master: str | None = None
        self._read_node: str | None = None

    # --- routing ------------------------------------------------------------------------------

    def check_node(self, node: str) -> str:
        """``node`` if the client knows it; raises ``ValueError`` naming the known nodes."""
        if node not in self.nodes:
            raise ValueError(f"unknown node {node!r}; the cluster has {sorted(self.nodes)}")
        return node

    def target(self, route: Route) -> str | None:
        """The node to send to, or ``None`` when the master must be discovered first."""
        if route is Route.MASTER:
            if self.master is None and len(self.nodes) == 1:
                # A single-node cluster skips the master check (protocol §5): no discovery needed.
                self.master = next(iter(self.nodes))
            return self.master
        return self.read_node()

    def read_node(self) -> str:
        """The node for relaxed reads: the preferred node, else the master, else a random one.

        Once chosen it stays until it fails (:meth:`after_failure` moves on to the next node).
        """
        if self._read_node is None:
            if self.preferred_node is not None:
                self._read_node = self.preferred_node
            elif self.master is not None:
                self._read_node = self.master
            else:
                self._read_node = self.rng.choice(sorted(self.nodes))
        return self._read_node

    def discovery_order(self) -> list[str]:
        """The nodes to ask ``who_master``, in a fresh random order (spreads the load)."""
        names = sorted(self.nodes)
        self.rng.shuffle(names)
        return names

    def learn_members(self, members: Members) -> list[str]:
        """Add the members the client did not know (with their client addresses) and forget the
        nodes a replicated membership no longer lists; returns the names added."""
        added = [n for n, a in members.addresses.items() if n not in self.nodes]
        for name in added:
            self.nodes[name] = members.addresses[name]
        if members.replicated:
            current = set(members.voters) | set(members.learners)
            for name in [n for n in self.nodes if n not in current]:
                if len(self.nodes) > 1:
                    del self.nodes[name]
                    if self.preferred_node == name:
                        self.preferred_node = None
                    if self.master == name:
                        self.master = None
                    if self._read_node == name:
                        self._read_node = None
        return added

    def accept_master(self, name: str) -> None:
        """Record ``name`` as master (it named itself when asked)."""
        self.master = self.check_node(name)

    def _next_read_node(self, failed: str) -> None:
        names = sorted(self.nodes)
        self._read_node = names[(names.index(failed) + 1) % len(names)]

    # --- calls --------------------------------------------------------------------------------

    def start_call(self, op: Op[Any], *, pinned: str | None, now: float) -> CallState:
        """The state of a new call started at ``now`` (``pinned``: the caller named a node)."""
        if pinned is not None:
            self.check_node(pinned)
        return CallState(
            op=op,
            pinned=pinned,
            retry_deadline=now + self.retry_secs,
            deadline=now + self.retry_secs + self.timeout_secs,
            timeout_secs=self.timeout_secs,
        )

    def after_failure(
        self, call: CallState, target: str | None, error: ArakoonError, *, now: float
    ) -> AfterFailure:
        """Update the routing state after ``error`` from ``target`` and say what to do next.

        ``target`` is ``None`` when the attempt failed before a node was chosen (discovery).
        """
        op = call.op
        drop = target is not None and not connection_survives(error)
        verdict = decide(op.retry, error, outcome_unknown_before=call.unknown is not None)
        if call.pinned is not None and isinstance(error, NotMaster):
            # The caller chose the node: following a redirect would go behind their back.
            verdict = Verdict.RAISE
        if verdict is Verdict.OUTCOME_UNKNOWN:
            cause = call.unknown if call.unknown is not None else error
            return AfterFailure(drop=drop, error=OutcomeUnknown(op.name, cause))
        if verdict is Verdict.RAISE:
            return AfterFailure(drop=drop, error=error)
        if op.is_write and call.unknown is None and makes_outcome_unknown(error):
            call.unknown = error
        delay = self._delay_secs(call, target, error)
        if verdict is Verdict.REDISCOVER and call.pinned is None:
            self._forget(target, error, op.route)
        if now + delay > call.retry_deadline:
            if call.unknown is not None:
                return AfterFailure(drop=drop, error=OutcomeUnknown(op.name, call.unknown))
            return AfterFailure(drop=drop, error=error)
        return AfterFailure(drop=drop, delay_secs=delay)

    def _delay_secs(self, call: CallState, target: str | None, error: ArakoonError) -> float:
        if (
            call.pinned is None
            and isinstance(error, NotMaster)
            and error.master in self.nodes
            and error.master != target
            and call.redirects < REDIRECTS_WITHOUT_PAUSE_MAX
        ):
            call.redirects += 1
            return 0.0
        call.redirects = 0
        delay = self.backoff.delay_secs(call.attempt, self.rng.random())
        call.attempt += 1
        return delay

    def _forget(self, target: str | None, error: ArakoonError, route: Route) -> None:
        if isinstance(error, NotMaster):
            hint = error.master
            self.master = hint if hint in self.nodes and hint != target else None
        elif target is not None and target == self.master:
            self.master = None
        if route is Route.ANY and target is not None and target == self._read_node:
            self._next_read_node(target)
