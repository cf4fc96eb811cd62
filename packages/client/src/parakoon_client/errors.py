# spec: docs/spec/arakoon-client-protocol.md
"""The exceptions a parakoon client raises.

Everything the clients raise on purpose derives from :class:`ArakoonError`, so one ``except``
clause catches them all. Below it there are two families:

* **Server errors** (:class:`ArakoonServerError` and one subclass per error code of the protocol,
  §4.1): the node received the request and answered with a non-zero return code. They carry the
  numeric ``code`` and the node's ``message``. A code this client does not know becomes
  :class:`UnknownErrorCode`, which keeps the number.
* **Client-side errors** (:class:`ArakoonClientError`): the transport failed
  (:class:`ArakoonNotConnected`, :class:`ArakoonTimeout`), no master could be found
  (:class:`NoMasterFound`), the peer sent bytes that are not the protocol
  (:class:`ArakoonProtocolError`), or a write may or may not have been applied
  (:class:`OutcomeUnknown`). Their ``code`` is ``None``.

Which server errors close the connection is a property of the code (§4.2), answered by
:func:`keeps_connection`, so that the clients know when to drop their socket. The codes
themselves are the codec's :class:`~parakoon_client.codec.ErrorCode`.
"""

from __future__ import annotations

from typing import ClassVar, Final

from parakoon_client.codec import ErrorCode, keeps_connection_open

__all__ = [
    "ArakoonClientError",
    "ArakoonError",
    "ArakoonNotConnected",
    "ArakoonProtocolError",
    "ArakoonServerError",
    "ArakoonTimeout",
    "AssertionFailed",
    "BadInput",
    "ErrorCode",
    "GoingDown",
    "InconsistentRead",
    "MaxConnections",
    "NoHello",
    "NoLongerMaster",
    "NoMagic",
    "NoMasterFound",
    "NotFound",
    "NotMaster",
    "NotSupported",
    "OutcomeUnknown",
    "OutsideInterval",
    "ReadOnly",
    "UnknownErrorCode",
    "UnknownFailure",
    "UserFunctionFailure",
    "UserHookNotFound",
    "WrongCluster",
    "error_for_code",
    "exception_class_for_code",
    "keeps_connection",
]


def keeps_connection(code: int) -> bool:
    """Whether the server keeps the connection open after answering error ``code`` (§4.2)."""
    return code != ErrorCode.OK and keeps_connection_open(code)


class ArakoonError(Exception):
    """Base of every exception a parakoon client raises on purpose.

    ``code`` is the protocol's return code for server errors and ``None`` for client-side
    errors; ``message`` is the server's message or our description of what went wrong.
    """

    code: int | None
    message: str

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        if self.code is None:
            return self.message
        return f"{type(self).__name__} (code 0x{self.code:02x}): {self.message}"


class ArakoonServerError(ArakoonError):
    """The node answered with a non-zero return code."""

    code: int
    CODE: ClassVar[int] = -1  # overridden by every subclass that stands for one code

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(self.CODE if code is None else code, message)

    @property
    def closes_connection(self) -> bool:
        """Whether the server closed the connection after this answer (§4.2)."""
        return not keeps_connection(self.code)


class NoMagic(ArakoonServerError):
    """0x01: the server did not find the magic in our command word (a client bug)."""

    CODE = ErrorCode.NO_MAGIC


class NoHello(ArakoonServerError):
    """0x03: defined by the protocol, never sent by the reference server."""

    CODE = ErrorCode.NO_HELLO


class NotMaster(ArakoonServerError):
    """0x04: the node is not the master; ``master`` names the master it knows, if any.

    The message is the master's node name, ``"None"`` when the node knows no master, or
    ``"Not_Master"`` when it lost mastership before the update was queued (§4.1). The server
    closes the connection after this answer.
    """

    CODE = ErrorCode.NOT_MASTER

    @property
    def master(self) -> str | None:
        """The master named in the message, or ``None`` when the node knows none."""
        if self.message in {"", "None", "Not_Master"}:
            return None
        return self.message


class NotFound(ArakoonServerError):
    """0x05: the key is missing (the message is the key, or ``"Not_found"`` for get)."""

    CODE = ErrorCode.NOT_FOUND


class WrongCluster(ArakoonServerError):
    """0x06: the cluster id did not match (defined; the reference server sends 0xFF instead)."""

    CODE = ErrorCode.WRONG_CLUSTER


class AssertionFailed(ArakoonServerError):
    """0x07: an assert (alone or inside a sequence) failed; the message is the key."""

    CODE = ErrorCode.ASSERTION_FAILED


class ReadOnly(ArakoonServerError):
    """0x08: a write was sent to a node configured read-only; the message is its name."""

    CODE = ErrorCode.READ_ONLY


class OutsideInterval(ArakoonServerError):
    """0x09: the key is outside the node's nursery interval (never without nursery)."""

    CODE = ErrorCode.OUTSIDE_INTERVAL


class GoingDown(ArakoonServerError):
    """0x10: the node is shutting down; the request was not executed."""

    CODE = ErrorCode.GOING_DOWN


class NotSupported(ArakoonServerError):
    """0x20: the (administrative) operation is not allowed on this node."""

    CODE = ErrorCode.NOT_SUPPORTED


class NoLongerMaster(ArakoonServerError):
    """0x21: the node lost mastership while the write was in flight: it may have been applied."""

    CODE = ErrorCode.NO_LONGER_MASTER


class BadInput(ArakoonServerError):
    """0x26: for example a user function that is not registered."""

    CODE = ErrorCode.BAD_INPUT


class InconsistentRead(ArakoonServerError):
    """0x80: an ``AtLeast`` read reached a node that has not applied that transaction yet."""

    CODE = ErrorCode.INCONSISTENT_READ


class UserFunctionFailure(ArakoonServerError):
    """0x81: a user function raised an unexpected error; the message is that error."""

    CODE = ErrorCode.USERFUNCTION_FAILURE


class UserHookNotFound(ArakoonServerError):
    """0x82: the named user hook is not registered."""

    CODE = ErrorCode.USERHOOK_NOT_FOUND


class MaxConnections(ArakoonServerError):
    """0xFE: the node has its maximum number of client connections."""

    CODE = ErrorCode.MAX_CONNECTIONS


class UnknownFailure(ArakoonServerError):
    """0xFF: anything else, including a value that is too large and a malformed sequence."""

    CODE = ErrorCode.UNKNOWN_FAILURE


class UnknownErrorCode(ArakoonServerError):
    """A return code this client does not know; ``code`` holds the number received."""


_BY_CODE: Final[dict[int, type[ArakoonServerError]]] = {
    cls.CODE: cls
    for cls in (
        NoMagic,
        NoHello,
        NotMaster,
        NotFound,
        WrongCluster,
        AssertionFailed,
        ReadOnly,
        OutsideInterval,
        GoingDown,
        NotSupported,
        NoLongerMaster,
        BadInput,
        InconsistentRead,
        UserFunctionFailure,
        UserHookNotFound,
        MaxConnections,
        UnknownFailure,
    )
}


def error_for_code(code: int, message: str) -> ArakoonServerError:
    """The exception that stands for return code ``code`` with the server's ``message``.

    ``code`` 0 is success and has no exception: passing it is a programming error.
    """
    if code == ErrorCode.OK:
        raise ValueError("return code 0 is success, not an error")
    cls = _BY_CODE.get(code)
    if cls is None:
        return UnknownErrorCode(message, code=code)
    return cls(message)


def exception_class_for_code(code: int) -> type[ArakoonServerError]:
    """The class :func:`error_for_code` uses for ``code`` (``UnknownErrorCode`` if unknown)."""
    return _BY_CODE.get(code, UnknownErrorCode)


class ArakoonClientError(ArakoonError):
    """An error found on the client side; ``code`` is always ``None``."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


class ArakoonNotConnected(ArakoonClientError):
    """The connection to a node could not be made or was lost.

    ``node`` names the node (``None`` when no single node is meant) and ``request_sent`` says
    whether the failure happened after the request may have reached the node: if it did, a write
    may have been applied.
    """

    def __init__(
        self, message: str, *, node: str | None = None, request_sent: bool = False
    ) -> None:
        super().__init__(message)
        self.node = node
        self.request_sent = request_sent


class ArakoonTimeout(ArakoonNotConnected):
    """A connect, send or receive took longer than the client's ``timeout_secs``.

    The client closes the connection afterwards, because a late answer would otherwise be taken
    for the answer to the next request.
    """


class NoMasterFound(ArakoonNotConnected):
    """No node named a master that confirmed itself, within the client's retry bound."""


class ArakoonProtocolError(ArakoonClientError):
    """The node sent bytes that do not follow the protocol; the connection was closed."""

    def __init__(self, message: str, *, node: str | None = None) -> None:
        super().__init__(message)
        self.node = node


class OutcomeUnknown(ArakoonClientError):
    """A write may or may not have been applied, and the client did not retry it on its own.

    This happens when the connection was lost (or timed out) after the request was sent, or when
    the node answered ``NoLongerMaster``, for an operation that is not safe to repeat
    (``test_and_set``, ``replace``, ``delete_prefix``, ``user_function``, sequences with such
    updates), and also for any write when the retry bound ran out after such an event. ``cause``
    is the error that made the outcome unknown; read the key back to learn what happened.
    """

    def __init__(self, operation: str, cause: ArakoonError) -> None:
        super().__init__(f"outcome unknown for {operation}: {cause}")
        self.operation = operation
        self.cause = cause
