"""parakoon_kv: the ordered byte-string store with Arakoon's update language.

See ``store.py`` for the theory of operation, ``updates.py`` for the update language and the
result of each update, ``snapshot.py`` for the snapshot format and ``docs/kv.md`` for an overview.
"""

from parakoon_kv.crc import CrcFunction, crc32c
from parakoon_kv.errors import (
    E_ASSERTION_FAILED,
    E_BAD_INPUT,
    E_NOT_FOUND,
    E_UNKNOWN_FAILURE,
    E_USERFUNCTION_FAILURE,
    NOT_FOUND_MESSAGE,
    AssertionFailed,
    BadInput,
    BatchOrderError,
    KvError,
    NotFound,
    SnapshotError,
    UnknownFailure,
    UserFunctionFailure,
)
from parakoon_kv.snapshot import BLOCK_BYTES_DEFAULT, SnapshotReader, SnapshotWriter
from parakoon_kv.store import (
    PENDING_KEYS_MAX_DEFAULT,
    SEQUENCE_DEPTH_MAX,
    FrozenStore,
    Result,
    Store,
    Transaction,
    UserFunctionBody,
    UserFunctionRegistry,
    prefix_end,
)
from parakoon_kv.updates import (
    Assert,
    AssertExists,
    AssertRange,
    Delete,
    DeletePrefix,
    Nop,
    Replace,
    Sequence,
    Set,
    TestAndSet,
    Update,
    UserFunction,
)

load = Store.load

__all__ = [
    "BLOCK_BYTES_DEFAULT",
    "E_ASSERTION_FAILED",
    "E_BAD_INPUT",
    "E_NOT_FOUND",
    "E_UNKNOWN_FAILURE",
    "E_USERFUNCTION_FAILURE",
    "NOT_FOUND_MESSAGE",
    "PENDING_KEYS_MAX_DEFAULT",
    "SEQUENCE_DEPTH_MAX",
    "Assert",
    "AssertExists",
    "AssertRange",
    "AssertionFailed",
    "BadInput",
    "BatchOrderError",
    "CrcFunction",
    "Delete",
    "DeletePrefix",
    "FrozenStore",
    "KvError",
    "Nop",
    "NotFound",
    "Replace",
    "Result",
    "Sequence",
    "Set",
    "SnapshotError",
    "SnapshotReader",
    "SnapshotWriter",
    "Store",
    "TestAndSet",
    "Transaction",
    "UnknownFailure",
    "Update",
    "UserFunction",
    "UserFunctionBody",
    "UserFunctionFailure",
    "UserFunctionRegistry",
    "crc32c",
    "load",
    "prefix_end",
]
