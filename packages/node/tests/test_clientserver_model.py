# spec: docs/spec/arakoon-client-protocol.md
"""Seeded model tests: requests over TCP against a plain-Python oracle of §8.3, §8.4 and §11.

A random store (the empty key included, to exercise §11 rule 4) is written through the server;
then random RANGE, RANGE_ENTRIES, REV_RANGE_ENTRIES, PREFIX_KEYS, MULTI_GET_OPTION, EXISTS and
GET requests go over one connection, and each decoded answer (natural order) must equal what a
few lines of list filtering say it should be. This checks the server's mapping of request fields
to the store (which bound is which for REV_RANGE_ENTRIES, max handling) end to end.

Seeded: prints ``seed=...``; set ``PARAKOON_SEED`` to replay, ``PARAKOON_LONG=1`` for more rounds.
"""

from __future__ import annotations

import os
import random
from typing import Any

import anyio
import anyio.abc
import pytest

from parakoon_client.codec import (
    NEED_DATA,
    AnyRequest,
    Assert,
    AssertExists,
    Confirm,
    Delete,
    DeletePrefix,
    ErrorCode,
    ErrorResponse,
    Exists,
    Get,
    MultiGetOption,
    PrefixKeys,
    Range,
    RangeEntries,
    Replace,
    Request,
    ResponseDecoder,
    RevRangeEntries,
    Sequence,
    Set,
    TestAndSet,
    UAssert,
    UDelete,
    Update,
    USet,
    encode_prologue,
    encode_request,
)
from parakoon_node.clientserver import ClientServer, LocalBackend, serve

pytestmark = pytest.mark.anyio
WAIT_SECS = 10.0
ALPHABET = b"ab\x00\xff"


@pytest.fixture
def anyio_backend() -> str:
    # These check what the server answers, not how it schedules: one backend is enough
    # (test_clientserver.py runs the server on both).
    return "asyncio"


def _key(rng: random.Random) -> bytes:
    return bytes(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 4)))


def _bound(rng: random.Random) -> bytes | None:
    return None if rng.random() < 0.25 else _key(rng)


def _cut(items: list[Any], max_keys: int) -> list[Any]:
    return items if max_keys < 0 else items[:max_keys]


def _above(k: bytes, low: bytes | None, inclusive: bool) -> bool:
    # §11 rule 4: a None low end is the empty key, so an exclusive None low end drops b"".
    low_key = b"" if low is None else low
    return k >= low_key if inclusive else k > low_key


def _below(k: bytes, high: bytes | None, inclusive: bool) -> bool:
    if high is None:
        return True
    return k <= high if inclusive else k < high


def oracle(request: AnyRequest, data: dict[bytes, bytes]) -> object:
    keys = sorted(data)
    match request:
        case Range(first=f, first_inclusive=fi, last=la, last_inclusive=li, max_keys=m):
            return _cut([k for k in keys if _above(k, f, fi) and _below(k, la, li)], m)
        case RangeEntries(first=f, first_inclusive=fi, last=la, last_inclusive=li, max_keys=m):
            selected = [k for k in keys if _above(k, f, fi) and _below(k, la, li)]
            return [(k, data[k]) for k in _cut(selected, m)]
        case RevRangeEntries(first=f, first_inclusive=fi, last=la, last_inclusive=li, max_keys=m):
            # first is the upper bound, last the lower one; the walk goes downwards.
            selected = [k for k in reversed(keys) if _below(k, f, fi) and _above(k, la, li)]
            return [(k, data[k]) for k in _cut(selected, m)]
        case PrefixKeys(prefix=p, max_keys=m):
            return _cut([k for k in keys if k.startswith(p)], m)
        case MultiGetOption(keys=wanted):
            return [data.get(k) for k in wanted]
        case Exists(key=k):
            return k in data
        case Get(key=k):
            if k in data:
                return data[k]
            return ErrorResponse(code=ErrorCode.NOT_FOUND, message=b"Not_found")
    raise AssertionError(f"no oracle for {request!r}")


def random_request(rng: random.Random) -> AnyRequest:
    kind = rng.randrange(7)
    max_keys = rng.choice([-1, -1, 0, 1, 2, 5])
    bounds: dict[str, Any] = {
        "first": _bound(rng),
        "first_inclusive": rng.random() < 0.5,
        "last": _bound(rng),
        "last_inclusive": rng.random() < 0.5,
        "max_keys": max_keys,
    }
    if kind == 0:
        return Range(**bounds)
    if kind == 1:
        return RangeEntries(**bounds)
    if kind == 2:
        return RevRangeEntries(**bounds)
    if kind == 3:
        return PrefixKeys(prefix=_key(rng)[:2], max_keys=max_keys)
    if kind == 4:
        return MultiGetOption(keys=tuple(_key(rng) for _ in range(rng.randrange(4))))
    if kind == 5:
        return Exists(key=_key(rng))
    return Get(key=_key(rng))


async def _ask(stream: anyio.abc.SocketStream, request: Request[Any]) -> object:
    await stream.send(encode_request(request))  # type: ignore[arg-type]
    decoder: ResponseDecoder[Any] = ResponseDecoder(request)
    with anyio.fail_after(WAIT_SECS):
        while (event := decoder.next_event()) is NEED_DATA:
            decoder.feed(await stream.receive())
    assert decoder.trailing_data == b""
    return event


async def _serve_backend(
    backend: LocalBackend,
    *,
    task_status: anyio.abc.TaskStatus[ClientServer] = anyio.TASK_STATUS_IGNORED,
) -> None:
    await serve(backend, host="127.0.0.1", port=0, task_status=task_status)


async def test_reads_agree_with_the_oracle(seed: int) -> None:
    rng = random.Random(seed)
    rounds = 2000 if os.environ.get("PARAKOON_LONG") else 300
    backend = LocalBackend(cluster_id="model")
    async with anyio.create_task_group() as tg:
        server = await tg.start(_serve_backend, backend)
        assert server.port is not None
        async with await anyio.connect_tcp("127.0.0.1", server.port) as stream:
            await stream.send(encode_prologue("model"))
            data: dict[bytes, bytes] = {}
            for _ in range(rng.randrange(0, 40)):
                key, value = _key(rng), _key(rng)
                assert await _ask(stream, Set(key=key, value=value)) is None
                data[key] = value
            for n in range(rounds):
                request = random_request(rng)
                got = await _ask(stream, request)
                assert got == oracle(request, data), f"round {n}: {request!r}"
        tg.cancel_scope.cancel()


def apply_oracle(request: AnyRequest, data: dict[bytes, bytes]) -> object:
    """The answer §8.4/§11 give for a write, applying it to ``data`` (all or nothing)."""
    match request:
        case Set(key=k, value=v) | Confirm(key=k, value=v):
            data[k] = v
            return None
        case Delete(key=k):
            if k not in data:
                return ErrorResponse(code=ErrorCode.NOT_FOUND, message=k)
            del data[k]
            return None
        case TestAndSet(key=k, expected=e, wanted=w):
            old = data.get(k)
            if old == e:
                if w is None:
                    data.pop(k, None)
                else:
                    data[k] = w
            return old
        case Replace(key=k, wanted=w):
            old = data.get(k)
            if w is None:
                data.pop(k, None)
            else:
                data[k] = w
            return old
        case DeletePrefix(prefix=p):
            doomed = [k for k in data if k.startswith(p)]
            for k in doomed:
                del data[k]
            return len(doomed)
        case Assert(key=k, expected=e):
            ok = data.get(k) == e
            return None if ok else ErrorResponse(code=ErrorCode.ASSERTION_FAILED, message=k)
        case AssertExists(key=k):
            ok = k in data
            return None if ok else ErrorResponse(code=ErrorCode.ASSERTION_FAILED, message=k)
        case Sequence(updates=updates):
            trial = dict(data)
            for update in updates:
                match update:
                    case USet(key=k, value=v):
                        trial[k] = v
                    case UDelete(key=k):
                        if k not in trial:
                            return ErrorResponse(code=ErrorCode.NOT_FOUND, message=k)
                        del trial[k]
                    case UAssert(key=k, expected=e):
                        if trial.get(k) != e:
                            return ErrorResponse(code=ErrorCode.ASSERTION_FAILED, message=k)
                    case _:
                        raise AssertionError(f"no oracle for {update!r}")
            data.clear()
            data.update(trial)
            return None
    raise AssertionError(f"no oracle for {request!r}")


def random_write(rng: random.Random) -> AnyRequest:
    kind = rng.randrange(9)
    key, value, opt = _key(rng), _key(rng), _bound(rng)
    if kind == 0:
        return Set(key=key, value=value)
    if kind == 1:
        return Delete(key=key)
    if kind == 2:
        return TestAndSet(key=key, expected=opt, wanted=_bound(rng))
    if kind == 3:
        return Replace(key=key, wanted=opt)
    if kind == 4:
        return DeletePrefix(prefix=key[:1])
    if kind == 5:
        return Confirm(key=key, value=value)
    if kind == 6:
        return Assert(key=key, expected=opt)
    if kind == 7:
        return AssertExists(key=key)
    updates: list[Update] = []
    for _ in range(rng.randrange(4)):
        choice = rng.randrange(3)
        if choice == 0:
            updates.append(USet(key=_key(rng), value=_key(rng)))
        elif choice == 1:
            updates.append(UDelete(key=_key(rng)))
        else:
            updates.append(UAssert(key=_key(rng), expected=_bound(rng)))
    return Sequence(updates=tuple(updates), synced=rng.random() < 0.3)


READS = (Range, RangeEntries, RevRangeEntries, PrefixKeys, MultiGetOption, Exists, Get)


async def test_writes_agree_with_the_oracle(seed: int) -> None:
    rng = random.Random(seed)
    rounds = 2000 if os.environ.get("PARAKOON_LONG") else 300
    backend = LocalBackend(cluster_id="model")
    async with anyio.create_task_group() as tg:
        server = await tg.start(_serve_backend, backend)
        assert server.port is not None
        async with await anyio.connect_tcp("127.0.0.1", server.port) as stream:
            await stream.send(encode_prologue("model"))
            data: dict[bytes, bytes] = {}
            for n in range(rounds):
                request = random_write(rng) if rng.random() < 0.7 else random_request(rng)
                if isinstance(request, READS):
                    expected = oracle(request, data)
                else:
                    expected = apply_oracle(request, data)
                got = await _ask(stream, request)
                assert got == expected, f"round {n}: {request!r}"
            assert dict(backend.store.items_from()) == data
        tg.cancel_scope.cancel()
