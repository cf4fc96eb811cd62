"""``parakoon client``: argument parsing, output formatting, and errors as a user sees them.

The formatting rules are checked on the decoded values the codec gives (pure functions); the
end-to-end runs against a real node's client port are in ``test_cli_client_server.py``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
from parakoon_testing import free_ports

from parakoon_client.codec import (
    CONSISTENT,
    NO_GUARANTEES,
    AtLeast,
    CurrentState,
    DeletePrefix,
    Exists,
    Get,
    GetKeyCount,
    GetTxid,
    MultiGet,
    MultiGetOption,
    NamedFloat,
    NamedInt,
    NamedInt64,
    NamedList,
    NamedString,
    Ping,
    PrefixKeys,
    Range,
    RangeEntries,
    Replace,
    RevRangeEntries,
    Set,
    Statistics,
    TestAndSet,
    UAssert,
    UAssertExists,
    UDelete,
    UDeletePrefix,
    UReplace,
    USet,
    Version,
    VersionInfo,
    WhoMaster,
)
from parakoon_node.commands.client_cli import (
    SequenceSyntaxError,
    format_result,
    parse_consistency,
    parse_sequence,
)

TIMEOUT_SECS = 60


# -------------------------------------------------------------------------------------------
# --consistency


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("consistent", CONSISTENT),
        ("no-guarantees", NO_GUARANTEES),
        ("at-least:0", AtLeast(stamp=0)),
        ("at-least:42", AtLeast(stamp=42)),
        ("at-least:9223372036854775807", AtLeast(stamp=2**63 - 1)),
    ],
)
def test_parse_consistency(text: str, expected: object) -> None:
    assert parse_consistency(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Consistent",
        "dirty",
        "at-least:",
        "at-least:-1",
        "at-least:x",
        "at-least:2e3",
        "at-least:9223372036854775808",
    ],
)
def test_parse_consistency_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected consistent, no-guarantees"):
        parse_consistency(text)


# -------------------------------------------------------------------------------------------
# sequence words


def test_parse_sequence_every_operation() -> None:
    words = [
        "set",
        "k",
        "v",
        "delete",
        "d",
        "delete-prefix",
        "p/",
        "replace",
        "r",
        "w",
        "remove",
        "gone",
        "assert",
        "a",
        "x",
        "assert-absent",
        "b",
        "assert-exists",
        "c",
    ]
    assert parse_sequence(words) == (
        USet(key=b"k", value=b"v"),
        UDelete(key=b"d"),
        UDeletePrefix(prefix=b"p/"),
        UReplace(key=b"r", wanted=b"w"),
        UReplace(key=b"gone", wanted=None),
        UAssert(key=b"a", expected=b"x"),
        UAssert(key=b"b", expected=None),
        UAssertExists(key=b"c"),
    )


def test_parse_sequence_empty_is_valid() -> None:
    assert parse_sequence([]) == ()


def test_parse_sequence_utf8() -> None:
    assert parse_sequence(["set", "clé", "välue"]) == (
        USet(key="clé".encode(), value="välue".encode()),
    )


def test_parse_sequence_unknown_word() -> None:
    with pytest.raises(SequenceSyntaxError, match=r"word 4 \('frobnicate'\) is not an operation"):
        parse_sequence(["set", "k", "v", "frobnicate"])


def test_parse_sequence_missing_argument() -> None:
    with pytest.raises(SequenceSyntaxError, match=r"'set' at word 3 needs KEY VALUE, got 1"):
        parse_sequence(["delete", "k", "set", "only-key"])


# -------------------------------------------------------------------------------------------
# Output


@pytest.mark.parametrize(
    ("request_", "result", "lines"),
    [
        (Get(key=b"k"), b"value", ["value"]),
        (Get(key=b"k"), b"", [""]),
        (Get(key=b"k"), b"caf\xc3\xa9 \xff", ["café \\xff"]),
        (Exists(key=b"k"), True, ["true"]),
        (Exists(key=b"k"), False, ["false"]),
        (Range(), [b"a", b"b"], ["a", "b"]),
        (Range(), [], []),
        (PrefixKeys(prefix=b"p"), [b"p1", b"p2"], ["p1", "p2"]),
        (RangeEntries(), [(b"a", b"1"), (b"b", b"2")], ["a\t1", "b\t2"]),
        (RevRangeEntries(), [(b"b", b"2"), (b"a", b"1")], ["b\t2", "a\t1"]),
        (MultiGet(keys=(b"x", b"y")), [b"1", b"2"], ["x\t1", "y\t2"]),
        (MultiGetOption(keys=(b"x", b"y")), [None, b"2"], ["x", "y\t2"]),
        (TestAndSet(key=b"k", expected=None, wanted=b"v"), None, []),
        (TestAndSet(key=b"k", expected=None, wanted=b"v"), b"old", ["old"]),
        (Replace(key=b"k", wanted=None), b"old", ["old"]),
        (WhoMaster(), "node_1", ["node_1"]),
        (WhoMaster(), None, []),
        (GetKeyCount(), 3, ["3"]),
        (DeletePrefix(prefix=b"p"), 0, ["0"]),
        (GetTxid(), AtLeast(stamp=17), ["17"]),
        (Ping(client_id="c", cluster_id="x"), "Arakoon 1.8.6", ["Arakoon 1.8.6"]),
        (CurrentState(), "Stable_master", ["Stable_master"]),
        (Set(key=b"k", value=b"v"), None, []),
        (
            Version(),
            VersionInfo(major=1, minor=8, patch=6, info='revision: "x"\nmachine: "y"\n'),
            ["1.8.6", 'revision: "x"', 'machine: "y"'],
        ),
        (
            Statistics(),
            NamedList(
                name="arakoon_stats",
                items=(
                    NamedFloat(name="start", value=1.5),
                    NamedFloat(name="min", value=1.7976931348623157e308),
                    NamedList(
                        name="set_info",
                        items=(NamedInt(name="n", value=0), NamedFloat(name="avg", value=0.0)),
                    ),
                    NamedString(name="s", value="text"),
                    NamedList(name="node_is", items=(NamedInt64(name="node_0", value=41),)),
                ),
            ),
            [
                "start\t1970-01-01T00:00:01.500+00:00",
                "min\t-",
                "set_info.n\t0",
                "set_info.avg\t0.000 ms",
                "s\ttext",
                "node_is.node_0\t41",
            ],
        ),
    ],
)
def test_format_result(request_: object, result: object, lines: list[str]) -> None:
    assert format_result(request_, result) == lines  # type: ignore[arg-type]


# -------------------------------------------------------------------------------------------
# The command line, as a subprocess


def free_port() -> int:
    (port,) = free_ports(1)
    return port


def write_config(folder: Path, client_port: int) -> Path:
    path = folder / "cluster.toml"
    path.write_text(
        f"""\
[cluster]
id = "cli-test"

[[nodes]]
name = "node_0"
addresses = ["127.0.0.1:{free_port()}"]
client_port = {client_port}
home_dir = "data/node_0"
"""
    )
    return path


def parakoon(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "parakoon_node", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECS,
        check=False,
    )
    print(f"exit={result.returncode}\nstdout={result.stdout!r}\nstderr={result.stderr!r}")
    return result


def test_node_not_listening_is_an_error_line_and_exit_5(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    result = parakoon("client", "--config", str(config), "--node", "node_0", "get", "k")
    assert result.returncode == 5  # unavailable
    assert result.stdout == ""
    assert result.stderr == (
        f"error: get key 'k' (node node_0): ArakoonNotConnected: cannot connect to node_0 at"
        f" 127.0.0.1:{port}: Connection refused\n"
    )


def test_no_master_found_without_node_option(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port())
    second = f"""
[[nodes]]
name = "node_1"
addresses = ["127.0.0.1:{free_port()}"]
client_port = {free_port()}
home_dir = "data/node_1"
"""
    config.write_text(config.read_text() + second)
    result = parakoon("client", "--config", str(config), "--retry", "0", "set", "k", "v")
    assert result.returncode == 5  # unavailable
    assert result.stderr.startswith("error: set key 'k': NoMasterFound: no master found: ")
    assert "node_0: cannot connect to node_0" in result.stderr
    assert "node_1: cannot connect to node_1" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_node_is_a_config_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port())
    result = parakoon("client", "--config", str(config), "--node", "node_7", "get", "k")
    assert result.returncode == 2
    assert result.stderr == f"error: {config}: no node named 'node_7' (nodes: node_0)\n"


def test_bad_consistency_is_a_usage_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port())
    result = parakoon("client", "--config", str(config), "--consistency", "dirty", "get", "k")
    assert result.returncode == 2
    assert "expected consistent, no-guarantees or at-least:N, got 'dirty'" in result.stderr


def test_bad_sequence_is_a_usage_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port())
    result = parakoon("client", "--config", str(config), "sequence", "set", "k")
    assert result.returncode == 2
    assert result.stderr == "error: sequence: 'set' at word 1 needs KEY VALUE, got 1 argument(s)\n"


def test_bad_retry_is_a_usage_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port())
    result = parakoon("client", "--config", str(config), "--retry", "-1", "get", "k")
    assert result.returncode == 2
    assert "expected 0..86400 seconds, got '-1'" in result.stderr


def test_unknown_client_command_is_a_usage_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port())
    result = parakoon("client", "--config", str(config), "frobnicate")
    assert result.returncode == 2
    assert "invalid choice: 'frobnicate'" in result.stderr


def test_keys_and_values_starting_with_a_dash() -> None:
    from parakoon_node.commands.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["client", "set", "--", "-k", "-v"])
    assert (args.key, args.value) == ("-k", "-v")
    args = parser.parse_args(["client", "sequence", "--", "set", "-k", "-v", "delete", "-x"])
    assert parse_sequence(args.words) == (USet(key=b"-k", value=b"-v"), UDelete(key=b"-x"))
    args = parser.parse_args(["client", "range", "--first=-a", "--last", "z"])
    assert (args.first, args.last) == ("-a", "z")
