"""The node's Arakoon client-protocol server layer.

* ``server``: :func:`serve` (an anyio service started with ``tg.start``) and
  :class:`ClientServer`, which decode, validate, dispatch and answer, one request at a time
  per connection;
* ``backend``: the :class:`Backend` protocol a node implements, and the errors it raises;
* ``convert``: codec updates <-> store updates, store results -> responses (the node reuses
  these for its replication payload);
* ``local``: :class:`LocalBackend`, a single-node server over an in-memory store;
* ``stats``: the per-operation statistics the server measures;
* ``resp_server`` and ``resp_commands``: the Redis port (RESP) on the same :class:`Backend`,
  imported by the node only when a ``redis_port`` is configured (docs/redis.md).

The protocol itself (bytes) is ``parakoon_client.codec``; this layer owns the sockets.
"""

from .backend import (
    Backend,
    BackendError,
    GoingDown,
    InconsistentRead,
    NoLongerMaster,
    NotMaster,
    NotSupported,
    ReadOnly,
)
from .convert import (
    NotAStoreUpdate,
    error_response,
    response_for_result,
    to_codec_update,
    to_kv_update,
    write_update,
)
from .local import PROTOCOL_COMPATIBLE_VERSION, LocalBackend, default_version_info
from .server import (
    LINGER_BYTES_MAX_DEFAULT,
    LINGER_SECS_DEFAULT,
    RECEIVE_BYTES,
    ClientServer,
    ServerCounters,
    default_max_connections,
    serve,
)
from .stats import OperationStatistics

__all__ = [
    "LINGER_BYTES_MAX_DEFAULT",
    "LINGER_SECS_DEFAULT",
    "PROTOCOL_COMPATIBLE_VERSION",
    "RECEIVE_BYTES",
    "Backend",
    "BackendError",
    "ClientServer",
    "GoingDown",
    "InconsistentRead",
    "LocalBackend",
    "NoLongerMaster",
    "NotAStoreUpdate",
    "NotMaster",
    "NotSupported",
    "OperationStatistics",
    "ReadOnly",
    "ServerCounters",
    "default_max_connections",
    "default_version_info",
    "error_response",
    "response_for_result",
    "serve",
    "to_codec_update",
    "to_kv_update",
    "write_update",
]
