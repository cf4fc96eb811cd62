"""Conversions between the codec's values and the store's, shared by the server and the node.

* :func:`to_kv_update` / :func:`to_codec_update`: the update of the codec (protocol §9, what goes
  on the wire and into the node's replication payload) and the update language of
  ``parakoon_kv`` (what the store applies) are the same language with different homes. The
  internal and nursery tags (MasterSet, AdminSet, SetInterval, SetRouting, SetRoutingDelta) have
  no store counterpart.
* :func:`write_update`: the update a write request asks for.
* :func:`response_for_result` and :func:`error_response`: a store result or error as response
  bytes, with whether protocol §4.2 says to close the connection afterwards.
"""

from __future__ import annotations

from typing import Any, assert_never

import parakoon_kv as kv
from parakoon_client.codec import (
    AnyRequest,
    Confirm,
    Delete,
    DeletePrefix,
    Nop,
    Replace,
    Sequence,
    Set,
    TestAndSet,
    UAdminSet,
    UAssert,
    UAssertExists,
    UAssertRange,
    UDelete,
    UDeletePrefix,
    UMasterSet,
    UNop,
    Update,
    UReplace,
    USequence,
    UserFunction,
    USet,
    USetInterval,
    USetRouting,
    USetRoutingDelta,
    UTestAndSet,
    UUserFunction,
    encode_error,
    encode_response,
    keeps_connection_open,
)

from .backend import BackendError


class NotAStoreUpdate(ValueError):
    """An internal or nursery update (tags 4, 9-13 except a synced sequence) reached the store."""


def to_kv_update(update: Update) -> kv.Update:
    """The store's form of a codec update (nested sequences included). O(size)."""
    # Set first: it is nearly every update of a real workload.
    if type(update) is USet:
        return kv.Set(key=update.key, value=update.value)
    match update:
        case USet(key=key, value=value):
            return kv.Set(key=key, value=value)
        case UDelete(key=key):
            return kv.Delete(key=key)
        case USequence(updates=updates, synced=synced):
            return kv.Sequence(updates=tuple(to_kv_update(u) for u in updates), synced=synced)
        case UTestAndSet(key=key, expected=expected, wanted=wanted):
            return kv.TestAndSet(key=key, expected=expected, wanted=wanted)
        case UNop():
            return kv.Nop()
        case UUserFunction(name=name, argument=argument):
            return kv.UserFunction(name=name, arg=argument)
        case UAssert(key=key, expected=expected):
            return kv.Assert(key=key, expected=expected)
        case UDeletePrefix(prefix=prefix):
            return kv.DeletePrefix(prefix=prefix)
        case UAssertExists(key=key):
            return kv.AssertExists(key=key)
        case UReplace(key=key, wanted=wanted):
            return kv.Replace(key=key, wanted=wanted)
        case UAssertRange(prefix=prefix, keys=keys):
            return kv.AssertRange(prefix=prefix, keys=keys)
        case UMasterSet() | UAdminSet() | USetInterval() | USetRouting() | USetRoutingDelta():
            raise NotAStoreUpdate(
                f"{type(update).__name__} is internal: the store has no such update"
            )
        case _:
            assert_never(update)


def to_codec_update(update: kv.Update) -> Update:
    """The codec's form of a store update (the inverse of :func:`to_kv_update`). O(size)."""
    if type(update) is kv.Set:
        return USet(key=update.key, value=update.value)
    match update:
        case kv.Set(key=key, value=value):
            return USet(key=key, value=value)
        case kv.Delete(key=key):
            return UDelete(key=key)
        case kv.Sequence(updates=updates, synced=synced):
            return USequence(updates=tuple(to_codec_update(u) for u in updates), synced=synced)
        case kv.TestAndSet(key=key, expected=expected, wanted=wanted):
            return UTestAndSet(key=key, expected=expected, wanted=wanted)
        case kv.Nop():
            return UNop()
        case kv.UserFunction(name=name, arg=arg):
            return UUserFunction(name=name, argument=arg)
        case kv.Assert(key=key, expected=expected):
            return UAssert(key=key, expected=expected)
        case kv.DeletePrefix(prefix=prefix):
            return UDeletePrefix(prefix=prefix)
        case kv.AssertExists(key=key):
            return UAssertExists(key=key)
        case kv.Replace(key=key, wanted=wanted):
            return UReplace(key=key, wanted=wanted)
        case kv.AssertRange(prefix=prefix, keys=keys):
            return UAssertRange(prefix=prefix, keys=keys)
        case _:
            assert_never(update)


def write_update(request: AnyRequest) -> Update | None:
    """The update a write request (class W) asks consensus for; None for any other request.

    CONFIRM gives the SET it may need (the server decides whether it is needed). A SEQUENCE gives
    its updates as one ``USequence``, with ``synced`` for SYNCED_SEQUENCE.
    """
    match request:
        case Set(key=key, value=value) | Confirm(key=key, value=value):
            return USet(key=key, value=value)
        case Delete(key=key):
            return UDelete(key=key)
        case TestAndSet(key=key, expected=expected, wanted=wanted):
            return UTestAndSet(key=key, expected=expected, wanted=wanted)
        case Replace(key=key, wanted=wanted):
            return UReplace(key=key, wanted=wanted)
        case DeletePrefix(prefix=prefix):
            return UDeletePrefix(prefix=prefix)
        case UserFunction(name=name, argument=argument):
            return UUserFunction(name=name, argument=argument)
        case Sequence(updates=updates, synced=synced):
            return USequence(updates=updates, synced=synced)
        case Nop():
            return UNop()
        case _:
            return None


def error_response(error: BackendError | kv.KvError) -> tuple[bytes, bool]:
    """(response bytes, close afterwards) for an error with a protocol code."""
    return encode_error(error.code, error.message), not keeps_connection_open(error.code)


def response_for_result(request: AnyRequest, result: Any) -> tuple[bytes, bool]:
    """(response bytes, close afterwards) for a store result: an error value or a success.

    The success payload of the write requests is the store's result as it is (unit, the old
    value, the deleted count), except SEQUENCE and NOP, whose answer is unit whatever the store
    gave.
    """
    if isinstance(result, kv.KvError):
        return error_response(result)
    if isinstance(request, Sequence | Nop | Confirm):
        result = None
    return encode_response(request, result), False
