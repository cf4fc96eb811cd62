# spec: docs/spec/arakoon-client-protocol.md
"""The exception hierarchy: one class per §4.1 code, all under ArakoonError."""

from __future__ import annotations

import pytest

from parakoon_client import errors
from parakoon_client.errors import (
    ArakoonError,
    ArakoonNotConnected,
    ArakoonServerError,
    ArakoonTimeout,
    ErrorCode,
    NoMasterFound,
    NotFound,
    NotMaster,
    OutcomeUnknown,
    UnknownErrorCode,
    error_for_code,
    exception_class_for_code,
    keeps_connection,
)

# §4.1: the code and the exception class that stands for it.
EXPECTED = {
    0x01: errors.NoMagic,
    0x03: errors.NoHello,
    0x04: errors.NotMaster,
    0x05: errors.NotFound,
    0x06: errors.WrongCluster,
    0x07: errors.AssertionFailed,
    0x08: errors.ReadOnly,
    0x09: errors.OutsideInterval,
    0x10: errors.GoingDown,
    0x20: errors.NotSupported,
    0x21: errors.NoLongerMaster,
    0x26: errors.BadInput,
    0x80: errors.InconsistentRead,
    0x81: errors.UserFunctionFailure,
    0x82: errors.UserHookNotFound,
    0xFE: errors.MaxConnections,
    0xFF: errors.UnknownFailure,
}


@pytest.mark.parametrize(("code", "cls"), sorted(EXPECTED.items()))
def test_every_code_has_its_class(code: int, cls: type[ArakoonServerError]) -> None:
    exc = error_for_code(code, "msg")
    assert type(exc) is cls
    assert exception_class_for_code(code) is cls
    assert isinstance(exc, ArakoonError)
    assert exc.code == code
    assert exc.message == "msg"
    assert f"0x{code:02x}" in str(exc)


def test_the_table_covers_every_error_code_of_the_enum() -> None:
    assert {int(c) for c in ErrorCode if c is not ErrorCode.OK} == set(EXPECTED)


@pytest.mark.parametrize("code", [0x02, 0x11, 0x42, 0x7F, 0xFD, 0x1234, -3])
def test_unknown_codes_keep_their_number(code: int) -> None:
    exc = error_for_code(code, "strange")
    assert type(exc) is UnknownErrorCode
    assert exc.code == code
    assert exc.message == "strange"
    assert exception_class_for_code(code) is UnknownErrorCode


def test_code_zero_is_not_an_error() -> None:
    with pytest.raises(ValueError, match="success"):
        error_for_code(0, "")


def test_which_codes_keep_the_connection() -> None:
    # §4.2: open only after 0x05, 0x07, 0x21, 0x26 and 0x80.
    kept = {code for code in EXPECTED if keeps_connection(code)}
    assert kept == {0x05, 0x07, 0x21, 0x26, 0x80}
    assert error_for_code(0x04, "node_1").closes_connection
    assert not error_for_code(0x05, "k").closes_connection
    assert error_for_code(0x99, "?").closes_connection


@pytest.mark.parametrize(
    ("message", "master"),
    [("node_0", "node_0"), ("None", None), ("Not_Master", None), ("", None)],
)
def test_not_master_names_the_master(message: str, master: str | None) -> None:
    exc = error_for_code(0x04, message)
    assert isinstance(exc, NotMaster)
    assert exc.master == master


def test_subclasses_can_be_raised_directly() -> None:
    with pytest.raises(ArakoonError) as info:
        raise NotFound("key1")
    assert info.value.code == 0x05
    assert info.value.message == "key1"


def test_client_side_errors_have_no_code() -> None:
    timeout = ArakoonTimeout("no answer from node_1", node="node_1", request_sent=True)
    assert isinstance(timeout, ArakoonNotConnected)
    assert isinstance(timeout, ArakoonError)
    assert timeout.code is None
    assert timeout.request_sent
    assert timeout.node == "node_1"
    assert str(timeout) == "no answer from node_1"
    assert isinstance(NoMasterFound("none"), ArakoonNotConnected)


def test_outcome_unknown_says_so_and_keeps_the_cause() -> None:
    cause = errors.NoLongerMaster("lost it")
    exc = OutcomeUnknown("test_and_set", cause)
    assert exc.cause is cause
    assert "outcome unknown" in str(exc)
    assert "test_and_set" in str(exc)
    assert isinstance(exc, ArakoonError)
