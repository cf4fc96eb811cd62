"""What the Redis port's data commands mean, over the store and Arakoon's update language.

Theory of operation
-------------------

Every data command (GET, SET, INCR, DEL, KEYS, ...) is a function of a :class:`View` and the
command's arguments that returns the command's reply. The view reads the store and records, for
each key it read, what it saw; writes go into an overlay (so a later command of the same
transaction sees them). Nothing here awaits, so a command (or
a whole MULTI/EXEC transaction, run command after command on one view) sees one instant of
the store.

The server then turns the view into one Arakoon update (``resp_server.RespServer._attempt``)::

    USequence(asserts on every key read, as read) + (the final value of every key written)

and gets it chosen and applied through the same ``Backend.write`` as the Arakoon port. If a
key changed between the read and the apply, an assert fails, the store rolls the sequence
back, and the server runs the commands again on a fresh view (a bounded number of times).
That is how INCR, APPEND, SETNX, GETSET, MSETNX, DEL's count and whole transactions are
atomic: optimistic concurrency, with the check done by the replicated state machine itself.
The update carries the *new value*, not "add 1", so replaying the log (or a follower
applying it) gives the same bytes on every node whatever the order of retries was; the
store needs no new update type and the WAL no new record. A command that only reads
produces no update and is answered from the consistent read alone.

Only each written key's *final* value goes into the update (``View.writes``): a batch of 50
INCRs of one key, or a transaction that appends to a key ten times, carries one set, so the
update stays as small as the data it leaves behind. A key that ends up deleted is written as
``UReplace(key, None)``, which never fails, rather than ``UDelete``, which fails on a missing key.

A key whose existence is all a command needs (DEL, EXISTS-free paths, SETNX) is asserted with
``UAssertExists`` or ``UAssert(key, None)`` rather than with its whole value, so a DEL of a
large value does not send the value back through consensus.

Replies and error texts follow Redis's documentation (``docs/redis.md`` lists the deviations).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import parakoon_kv as kv
from parakoon_client.codec import UAssert, UAssertExists, Update, UReplace, USet
from parakoon_client.resp import (
    GLOB_PATTERN_BYTES_MAX,
    NULL,
    OK,
    Array,
    Bulk,
    Error,
    Integer,
    Reply,
    SimpleString,
    compile_glob,
    literal_prefix,
)

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
_INT_TEXT: Final = re.compile(rb"-?(0|[1-9][0-9]{0,19})")

NOT_AN_INTEGER: Final = Error(message="ERR value is not an integer or out of range")
OVERFLOW: Final = Error(message="ERR increment or decrement would overflow")
SYNTAX: Final = Error(message="ERR syntax error")
NO_EXPIRY: Final = "keys never expire in parakoon"


def parse_int64(text: bytes) -> int | None:
    """A signed 64-bit integer written as Redis accepts it (no blanks, no '+', no leading
    zeros), or None."""
    if _INT_TEXT.fullmatch(text) is None or text == b"-0":
        return None
    value = int(text)
    if value < INT64_MIN or value > INT64_MAX:
        return None
    return value


def pattern_error(command: str, pattern: bytes) -> Error | None:
    """The error for a glob pattern too long to match (None if it is fine): the matcher takes
    time in proportion to the pattern's length for every key, on the node's event loop."""
    if len(pattern) <= GLOB_PATTERN_BYTES_MAX:
        return None
    return Error(
        message=f"ERR {command} pattern of {len(pattern)} bytes is too long: at most "
        f"{GLOB_PATTERN_BYTES_MAX} bytes"
    )


class ReplyTooLarge(Exception):
    """A reply (or the replies of one transaction) would take more than ``max_request_bytes``:
    the bound on what one connection makes the node build in memory, and what the Arakoon
    port's own clients accept as one response. Raised before anything is written."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"ERR reply of {size} bytes is too large: at most {limit} bytes "
            "(max_request_bytes); ask for fewer or smaller values at a time"
        )


class ValueTooLarge(Exception):
    """A command would store a value of ``max_value_bytes`` or more (the Arakoon port's limit
    on a stored value, so that every value one port writes the other can serve)."""

    def __init__(self, key: bytes, size: int, limit: int) -> None:
        super().__init__(
            f"ERR value of {size} bytes for key {key[:60]!r} is too large: values must be "
            f"shorter than {limit} bytes (max_value_bytes)"
        )


class View:
    """The store as one command (or transaction) sees it: reads recorded, writes overlaid.

    ``reads`` maps each key read from the store to what the read relied on: the value (bytes),
    absence (None), or mere existence (``True``). ``overlay`` maps each key written to its
    value now (None: deleted).
    """

    __slots__ = ("keys_max", "overlay", "reads", "store", "value_bytes_max")

    def __init__(
        self, store: kv.Store, value_bytes_max: int = 1 << 62, keys_max: int = 1 << 62
    ) -> None:
        self.store = store
        self.value_bytes_max = value_bytes_max
        self.keys_max = keys_max  # most keys KEYS lists (max_list_items): SCAN pages the rest
        self.overlay: dict[bytes, bytes | None] = {}
        self.reads: dict[bytes, bytes | bool | None] = {}

    def get(self, key: bytes) -> bytes | None:
        if key in self.overlay:
            return self.overlay[key]
        value = self.store.get_option(key)
        self.reads[key] = value  # a value read supersedes an existence read
        return value

    def exists(self, key: bytes) -> bool:
        if key in self.overlay:
            return self.overlay[key] is not None
        if key in self.reads:
            return self.reads[key] is not None
        found = self.store.exists(key)
        self.reads[key] = True if found else None
        return found

    def set(self, key: bytes, value: bytes) -> None:
        """Raises :class:`ValueTooLarge` (the whole command or transaction is refused)."""
        if len(value) >= self.value_bytes_max:
            raise ValueTooLarge(key, len(value), self.value_bytes_max)
        self.overlay[key] = value

    def delete(self, key: bytes) -> bool:
        """Delete ``key`` if it exists; whether it did."""
        if not self.exists(key):
            return False
        self.overlay[key] = None
        return True

    def keys(self, prefix: bytes, max: int = -1) -> list[bytes]:
        """The keys starting with ``prefix``, ascending, overlay included (not asserted: see
        docs/redis.md, KEYS inside MULTI). With ``max >= 0``, those of the store are cut at
        ``max`` (the overlay may add some): a caller asks for one more than it takes, to know
        there were too many."""
        found = self.store.prefix_keys(prefix, max)
        if not self.overlay:
            return found
        merged = set(found)
        for key, value in self.overlay.items():
            if key.startswith(prefix):
                if value is None:
                    merged.discard(key)
                else:
                    merged.add(key)
        return sorted(merged)

    def key_count(self) -> int:
        count = self.store.key_count()
        for key, value in self.overlay.items():
            before = self.store.exists(key)
            count += (value is not None) - before
        return count

    def writes(self) -> list[Update]:
        """The final state of every key written, in the order they were first written."""
        return [
            USet(key=key, value=value) if value is not None else UReplace(key=key, wanted=None)
            for key, value in self.overlay.items()
        ]

    def asserts(self) -> list[Update]:
        """One assert per key read from the store, checking what the read relied on."""
        out: list[Update] = []
        for key, seen in self.reads.items():
            if seen is True:
                out.append(UAssertExists(key=key))
            else:
                out.append(UAssert(key=key, expected=seen))  # type: ignore[arg-type]
        return out


Handler = Callable[[View, tuple[bytes, ...]], Reply]


def _get(view: View, args: tuple[bytes, ...]) -> Reply:
    value = view.get(args[1])
    return NULL if value is None else Bulk(value=value)


def _set(view: View, args: tuple[bytes, ...]) -> Reply:
    key, value = args[1], args[2]
    nx = xx = get = False
    for option in args[3:]:
        word = option.upper()
        if word == b"NX" and not xx:
            nx = True
        elif word == b"XX" and not nx:
            xx = True
        elif word == b"GET":
            get = True
        elif word in (b"EX", b"PX", b"EXAT", b"PXAT", b"KEEPTTL"):
            return Error(message=f"ERR SET {word.decode()} is not supported: {NO_EXPIRY}")
        else:
            return SYNTAX
    if not (nx or xx or get):
        view.set(key, value)
        return OK
    old = view.get(key) if get else None
    present = old is not None if get else view.exists(key)
    if (nx and present) or (xx and not present):
        return Bulk(value=old) if old is not None else NULL
    view.set(key, value)
    if get:
        return NULL if old is None else Bulk(value=old)
    return OK


def _setnx(view: View, args: tuple[bytes, ...]) -> Reply:
    if view.exists(args[1]):
        return Integer(value=0)
    view.set(args[1], args[2])
    return Integer(value=1)


def _getset(view: View, args: tuple[bytes, ...]) -> Reply:
    old = view.get(args[1])
    view.set(args[1], args[2])
    return NULL if old is None else Bulk(value=old)


def _getdel(view: View, args: tuple[bytes, ...]) -> Reply:
    old = view.get(args[1])
    if old is None:
        return NULL
    view.delete(args[1])
    return Bulk(value=old)


def _mget(view: View, args: tuple[bytes, ...]) -> Reply:
    values = (view.get(key) for key in args[1:])
    return Array(items=tuple(NULL if v is None else Bulk(value=v) for v in values))


def _mset(view: View, args: tuple[bytes, ...]) -> Reply:
    for i in range(1, len(args), 2):
        view.set(args[i], args[i + 1])
    return OK


def _msetnx(view: View, args: tuple[bytes, ...]) -> Reply:
    if any(view.exists(args[i]) for i in range(1, len(args), 2)):
        return Integer(value=0)
    _mset(view, args)
    return Integer(value=1)


def _del(view: View, args: tuple[bytes, ...]) -> Reply:
    return Integer(value=sum(view.delete(key) for key in args[1:]))


def _exists(view: View, args: tuple[bytes, ...]) -> Reply:
    return Integer(value=sum(view.exists(key) for key in args[1:]))


def _append(view: View, args: tuple[bytes, ...]) -> Reply:
    value = (view.get(args[1]) or b"") + args[2]
    view.set(args[1], value)
    return Integer(value=len(value))


def _strlen(view: View, args: tuple[bytes, ...]) -> Reply:
    value = view.get(args[1])
    return Integer(value=0 if value is None else len(value))


def _add(view: View, key: bytes, delta: int) -> Reply:
    old = view.get(key)
    current = 0 if old is None else parse_int64(old)
    if current is None:
        return NOT_AN_INTEGER
    new = current + delta
    if new < INT64_MIN or new > INT64_MAX:
        return OVERFLOW
    view.set(key, b"%d" % new)
    return Integer(value=new)


def _incr(view: View, args: tuple[bytes, ...]) -> Reply:
    return _add(view, args[1], 1)


def _decr(view: View, args: tuple[bytes, ...]) -> Reply:
    return _add(view, args[1], -1)


def _incrby(view: View, args: tuple[bytes, ...]) -> Reply:
    delta = parse_int64(args[2])
    if delta is None:
        return NOT_AN_INTEGER
    return _add(view, args[1], delta)


def _decrby(view: View, args: tuple[bytes, ...]) -> Reply:
    delta = parse_int64(args[2])
    if delta is None or delta == INT64_MIN:
        # Redis refuses to negate the smallest 64-bit integer with this message.
        return Error(message="ERR decrement would overflow") if delta else NOT_AN_INTEGER
    return _add(view, args[1], -delta)


def _keys(view: View, args: tuple[bytes, ...]) -> Reply:
    pattern = args[1]
    refused = pattern_error("KEYS", pattern)
    if refused is not None:
        return refused
    matches = compile_glob(pattern)
    # The prefix bounds what is read; the keys that do not match still cost time, so the
    # bound is on those read, not those listed (one more than the limit: to see it crossed).
    found = view.keys(literal_prefix(pattern), view.keys_max + 1)
    if len(found) > view.keys_max:
        return Error(
            message=f"ERR KEYS would read more than {view.keys_max} keys (max_list_items): "
            "use SCAN with MATCH and COUNT to walk them in pages"
        )
    return Array(items=tuple(Bulk(value=k) for k in found if matches(k)))


def _type(view: View, args: tuple[bytes, ...]) -> Reply:
    return SimpleString(text="string" if view.exists(args[1]) else "none")


def _dbsize(view: View, args: tuple[bytes, ...]) -> Reply:
    return Integer(value=view.key_count())


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandSpec:
    """One command as COMMAND describes it, and how it runs.

    ``arity``: the argument count with the name, negative for "at least". ``first_key``,
    ``last_key`` (-1: the last argument), ``key_step``: where the keys are. ``handler``: the
    data commands' function of a view; None for the connection commands the server answers
    itself. ``rmw``: reads and writes, so the server serializes it per key (``resp_server``).
    """

    name: str
    arity: int
    flags: tuple[str, ...]
    first_key: int = 0
    last_key: int = 0
    key_step: int = 0
    handler: Handler | None = None
    rmw: bool = False

    def keys(self, args: tuple[bytes, ...]) -> tuple[bytes, ...]:
        if self.first_key == 0:
            return ()
        last = len(args) + self.last_key if self.last_key < 0 else self.last_key
        return args[self.first_key : last + 1 : self.key_step]

    def locks_keys(self, args: tuple[bytes, ...]) -> bool:
        """Whether this call reads and writes (a plain SET only writes: no lock)."""
        return self.rmw and not (self.name == "set" and len(args) == 3)

    def arity_ok(self, count: int) -> bool:
        return count == self.arity if self.arity > 0 else count >= -self.arity


_R = ("readonly", "fast")
_W = ("write", "denyoom")


def _spec(
    name: str,
    arity: int,
    flags: tuple[str, ...],
    keys: tuple[int, int, int] = (0, 0, 0),
    handler: Handler | None = None,
    *,
    rmw: bool = False,
) -> CommandSpec:
    return CommandSpec(
        name=name,
        arity=arity,
        flags=flags,
        first_key=keys[0],
        last_key=keys[1],
        key_step=keys[2],
        handler=handler,
        rmw=rmw,
    )


_ONE: Final = (1, 1, 1)
_ALL: Final = (1, -1, 1)
COMMANDS: Final[dict[str, CommandSpec]] = {
    spec.name: spec
    for spec in (
        # data commands: run on a View
        _spec("get", 2, _R, _ONE, _get),
        _spec("set", -3, _W, _ONE, _set, rmw=True),
        _spec("setnx", 3, (*_W, "fast"), _ONE, _setnx, rmw=True),
        _spec("getset", 3, (*_W, "fast"), _ONE, _getset, rmw=True),
        _spec("getdel", 2, ("write", "fast"), _ONE, _getdel, rmw=True),
        _spec("mget", -2, _R, _ALL, _mget),
        _spec("mset", -3, _W, (1, -1, 2), _mset),
        _spec("msetnx", -3, _W, (1, -1, 2), _msetnx, rmw=True),
        _spec("del", -2, ("write",), _ALL, _del, rmw=True),
        _spec("unlink", -2, ("write", "fast"), _ALL, _del, rmw=True),
        _spec("exists", -2, _R, _ALL, _exists),
        _spec("append", 3, (*_W, "fast"), _ONE, _append, rmw=True),
        _spec("strlen", 2, _R, _ONE, _strlen),
        _spec("incr", 2, (*_W, "fast"), _ONE, _incr, rmw=True),
        _spec("decr", 2, (*_W, "fast"), _ONE, _decr, rmw=True),
        _spec("incrby", 3, (*_W, "fast"), _ONE, _incrby, rmw=True),
        _spec("decrby", 3, (*_W, "fast"), _ONE, _decrby, rmw=True),
        _spec("keys", 2, ("readonly",), (0, 0, 0), _keys),
        _spec("type", 2, _R, _ONE, _type),
        _spec("dbsize", 1, _R, (0, 0, 0), _dbsize),
        # SCAN needs the server's cursor table: the server runs it (on a View all the same)
        _spec("scan", -2, ("readonly",)),
        # connection and server commands: the server answers them
        _spec("ping", -1, ("fast",)),
        _spec("echo", 2, ("fast",)),
        _spec("select", 2, ("loading", "fast")),
        _spec("client", -2, ("admin",)),
        _spec("hello", -1, ("noauth", "fast")),
        _spec("command", -1, ("loading",)),
        _spec("config", -2, ("admin",)),
        _spec("info", -1, ("loading",)),
        _spec("quit", -1, ("fast",)),
        _spec("multi", 1, ("fast",)),
        _spec("exec", 1, ("skip_slowlog",)),
        _spec("discard", 1, ("fast",)),
        _spec("watch", -2, ("fast",), _ALL),
        _spec("unwatch", 1, ("fast",)),
        _spec("readonly", 1, ("fast",)),
        _spec("readwrite", 1, ("fast",)),
    )
}
"""Every command the Redis port knows, by lower-case name."""

_UNSUPPORTED_FAMILIES: Final = (
    (
        "keys never expire in parakoon",
        "expire pexpire expireat pexpireat ttl pttl persist expiretime pexpiretime "
        "setex psetex getex",
    ),
    (
        "parakoon stores only strings",
        "hset hget hmset hmget hgetall hdel hlen hexists hkeys hvals hincrby hsetnx "
        "lpush rpush lpop rpop lrange llen lindex lset lrem linsert blpop brpop lmove "
        "sadd srem smembers sismember scard spop srandmember sinter sunion sdiff "
        "zadd zrem zrange zscore zcard zincrby zrank zrevrange zrangebyscore "
        "pfadd pfcount xadd xrange xread xlen geoadd setrange getrange setbit getbit "
        "bitcount incrbyfloat lcs",
    ),
    ("parakoon has no publish/subscribe", "publish subscribe unsubscribe psubscribe pubsub"),
    ("parakoon runs no scripts", "eval evalsha evalsha_ro eval_ro script fcall function"),
    (
        "parakoon keeps one database and manages its own persistence and replication",
        "flushdb flushall move swapdb rename renamenx copy save bgsave bgrewriteaof "
        "replicaof slaveof sync psync failover shutdown debug",
    ),
)
UNSUPPORTED: Final[dict[str, str]] = {
    name: why for why, names in _UNSUPPORTED_FAMILIES for name in names.split()
}
"""Redis commands parakoon knows of and refuses, with the reason the error names."""
