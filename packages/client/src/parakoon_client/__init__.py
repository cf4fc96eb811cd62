"""parakoon_client: an Arakoon-protocol client for parakoon (and Arakoon) clusters.

* :class:`Client` (``parakoon_client.blocking``): blocking, plain sockets.
* :class:`~parakoon_client.aio.AsyncClient` (``parakoon_client.aio``): the same on anyio; import
  it from ``parakoon_client.aio`` (this package does not import anyio unless asked to).
* ``parakoon_client.codec``: the sans-I/O protocol codec both are built on.
* ``parakoon_client.errors``: every exception, under :class:`ArakoonError`.

Usage and the retry rules: ``docs/client.md``.
"""

from parakoon_client._core import Members, member_address
from parakoon_client.blocking import Client, SequenceContext
from parakoon_client.codec import CONSISTENT, NO_GUARANTEES, AtLeast, Consistency
from parakoon_client.config import ClusterNodes, ConfigError, load_cluster_nodes
from parakoon_client.errors import (
    ArakoonClientError,
    ArakoonError,
    ArakoonNotConnected,
    ArakoonProtocolError,
    ArakoonServerError,
    ArakoonTimeout,
    AssertionFailed,
    BadInput,
    GoingDown,
    InconsistentRead,
    MaxConnections,
    NoLongerMaster,
    NoMasterFound,
    NotFound,
    NotMaster,
    NotSupported,
    OutcomeUnknown,
    ReadOnly,
    UnknownErrorCode,
    UnknownFailure,
    UserFunctionFailure,
)
from parakoon_client.policy import COMMAND_RETRY, Backoff, Retry
from parakoon_client.sequence import SequenceBuilder

__all__ = [
    "COMMAND_RETRY",
    "CONSISTENT",
    "NO_GUARANTEES",
    "ArakoonClientError",
    "ArakoonError",
    "ArakoonNotConnected",
    "ArakoonProtocolError",
    "ArakoonServerError",
    "ArakoonTimeout",
    "AssertionFailed",
    "AtLeast",
    "Backoff",
    "BadInput",
    "Client",
    "ClusterNodes",
    "ConfigError",
    "Consistency",
    "GoingDown",
    "InconsistentRead",
    "MaxConnections",
    "Members",
    "NoLongerMaster",
    "NoMasterFound",
    "NotFound",
    "NotMaster",
    "NotSupported",
    "OutcomeUnknown",
    "ReadOnly",
    "Retry",
    "SequenceBuilder",
    "SequenceContext",
    "UnknownErrorCode",
    "UnknownFailure",
    "UserFunctionFailure",
    "load_cluster_nodes",
    "member_address",
]
