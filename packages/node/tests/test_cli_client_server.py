"""``parakoon client`` against a real client-protocol server over TCP on 127.0.0.1.

The server is the node's own client server (``parakoon_node.clientserver.serve``) over a
``LocalBackend`` (a one-node in-memory store), run on an event loop in a background thread. The
command line runs in this thread through ``parakoon_node.commands.cli.main``, exactly as the console
script would, so every byte goes through the codec, the blocking client and a real socket.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog
from anyio.from_thread import start_blocking_portal

from parakoon_node.clientserver import ClientServer, LocalBackend, serve
from parakoon_node.commands.cli import main
from parakoon_node.runtime.logs import configure_logging

CLUSTER_ID = "cli-server-test"
TIMEOUT_SECS = 60


@dataclass(frozen=True, slots=True)
class Server:
    config: Path
    port: int
    backend: LocalBackend


@pytest.fixture
def quiet_server_logs() -> Iterator[io.StringIO]:
    """The server shares this process: send its log lines to a buffer, not to captured stdout."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    buffer = io.StringIO()
    configure_logging("json", "info", "node_0", stream=buffer)
    yield buffer
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    structlog.reset_defaults()


@pytest.fixture
def server(tmp_path: Path, quiet_server_logs: io.StringIO) -> Iterator[Server]:
    backend = LocalBackend(cluster_id=CLUSTER_ID, node_name="node_0")
    with start_blocking_portal() as portal:
        future, started = portal.start_task(
            functools.partial(serve, backend, host="127.0.0.1", port=0, linger_secs=0.1)
        )
        assert isinstance(started, ClientServer)
        assert started.port is not None
        config = tmp_path / "cluster.toml"
        config.write_text(
            f"""\
[cluster]
id = "{CLUSTER_ID}"

[[nodes]]
name = "node_0"
addresses = ["127.0.0.1:1"]
client_port = {started.port}
home_dir = "data/node_0"
"""
        )
        try:
            yield Server(config=config, port=started.port, backend=backend)
        finally:
            future.cancel()


class Cli:
    """Runs ``parakoon client --config ... ARGS`` in-process and returns (code, out, err)."""

    def __init__(self, server: Server, capsys: pytest.CaptureFixture[str]) -> None:
        self.server = server
        self.capsys = capsys

    def __call__(self, *args: str, node: bool = False) -> tuple[int, str, str]:
        argv = ["client", "--config", str(self.server.config), "--timeout", "10"]
        if node:
            argv += ["--node", "node_0"]
        code = main([*argv, *args])
        captured = self.capsys.readouterr()
        # Not printed: anything printed here would be captured into the next command's output.
        return code, captured.out, captured.err

    def ok(self, *args: str, node: bool = False) -> str:
        code, out, err = self(*args, node=node)
        assert (code, err) == (0, ""), f"{args} failed with {code}: {err}"
        return out


@pytest.fixture
def cli(server: Server, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(server, capsys)


def test_set_get_exists_delete(cli: Cli) -> None:
    assert cli.ok("set", "greeting", "hello world") == ""
    assert cli.ok("get", "greeting") == "hello world\n"
    assert cli.ok("exists", "greeting") == "true\n"
    assert cli.ok("exists", "nobody") == "false\n"
    assert cli.ok("delete", "greeting") == ""
    assert cli.ok("exists", "greeting") == "false\n"


def test_error_lines_name_the_key_and_exit_codes_say_what_failed(cli: Cli) -> None:
    assert cli("get", "missing") == (
        3,
        "",
        "error: get key 'missing': NotFound (code 0x05): Not_found\n",
    )
    assert cli("delete", "missing") == (
        3,
        "",
        "error: delete key 'missing': NotFound (code 0x05): missing\n",
    )
    cli.ok("set", "k", "v")
    assert cli("assert", "k", "other") == (
        4,
        "",
        "error: assert key 'k': AssertionFailed (code 0x07): k\n",
    )
    assert cli("assert-exists", "nope") == (
        4,
        "",
        "error: assert-exists key 'nope': AssertionFailed (code 0x07): nope\n",
    )


def test_utf8_in_and_backslashreplace_out(cli: Cli, server: Server) -> None:
    cli.ok("set", "clé", "välue ✓")
    assert server.backend.store.get("clé".encode()) == "välue ✓".encode()
    assert cli.ok("get", "clé") == "välue ✓\n"
    # Bytes that are not UTF-8 reach argv as surrogate escapes (PEP 383) and go out unchanged;
    # on the way back they print as \xNN.
    cli.ok("set", "raw", "ok\udcff\udcfe")
    assert server.backend.store.get(b"raw") == b"ok\xff\xfe"
    assert cli.ok("get", "raw") == "ok\\xff\\xfe\n"


def test_ranges_lists_and_pairs(cli: Cli) -> None:
    for key, value in [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4"), ("x/1", "p"), ("x/2", "q")]:
        cli.ok("set", key, value)
    assert cli.ok("range", "--first", "a", "--last", "c") == "a\nb\nc\n"
    assert (
        cli.ok("range", "--first", "a", "--first-exclusive", "--last", "c", "--last-exclusive")
        == "b\n"
    )
    assert cli.ok("range", "--max", "2") == "a\nb\n"
    assert cli.ok("range-entries", "--first", "b", "--last", "d") == "b\t2\nc\t3\nd\t4\n"
    assert (
        cli.ok("rev-range-entries", "--first", "d", "--last", "b", "--max", "2") == "d\t4\nc\t3\n"
    )
    assert cli.ok("prefix", "x/") == "x/1\nx/2\n"
    assert cli.ok("prefix", "x/", "--max", "1") == "x/1\n"
    assert cli.ok("prefix", "nothing") == ""
    assert cli.ok("multi-get", "a", "c") == "a\t1\nc\t3\n"
    assert cli("multi-get", "a", "zz") == (3, "", "error: multi-get: NotFound (code 0x05): zz\n")
    assert cli.ok("multi-get-option", "a", "zz", "c") == "a\t1\nzz\nc\t3\n"
    assert cli.ok("key-count") == "6\n"
    assert cli.ok("delete-prefix", "x/") == "2\n"
    assert cli.ok("delete-prefix", "x/") == "0\n"


def test_test_and_set_replace_confirm(cli: Cli) -> None:
    assert cli.ok("test-and-set", "k", "--wanted", "v1") == ""  # was absent: prints nothing
    # A failed comparison prints the value found and exits 4, naming what it expected.
    assert cli("test-and-set", "k", "--expected", "nope", "--wanted", "v2") == (
        4,
        "v1\n",
        "error: test-and-set key 'k': expected 'nope', found 'v1'; nothing set\n",
    )
    assert cli.ok("get", "k") == "v1\n"
    assert cli.ok("test-and-set", "k", "--expected", "v1", "--wanted", "v2") == "v1\n"
    assert cli.ok("replace", "k", "v3") == "v2\n"
    assert cli.ok("replace", "k") == "v3\n"  # without VALUE: delete, prints the old value
    assert cli.ok("replace", "k") == ""
    assert cli.ok("confirm", "k", "v4") == ""
    assert cli.ok("get", "k") == "v4\n"
    assert cli.ok("assert", "k", "v4") == ""
    assert cli.ok("assert", "absent") == ""


def test_sequence_is_atomic(cli: Cli) -> None:
    cli.ok("set", "old", "x")
    assert cli.ok("sequence", "set", "a", "1", "delete", "old", "assert-exists", "a") == ""
    assert cli.ok("multi-get-option", "a", "old") == "a\t1\nold\n"
    code, out, err = cli("sequence", "set", "b", "2", "delete", "ghost")
    assert (code, out, err) == (3, "", "error: sequence: NotFound (code 0x05): ghost\n")
    assert cli.ok("exists", "b") == "false\n", "the failed sequence left nothing behind"
    assert cli.ok("sequence", "--synced", "replace", "a", "9", "assert", "a", "9") == ""
    assert cli.ok("sequence") == ""


def test_information_commands(cli: Cli) -> None:
    assert cli.ok("who-master") == "node_0\n"
    assert cli.ok("ping").startswith("Arakoon ")
    assert cli.ok("expect-progress-possible") in {"true\n", "false\n"}
    version = cli.ok("version").splitlines()
    assert version[0].count(".") == 2
    assert cli.ok("current-state") != ""
    cli.ok("set", "k", "v")
    cli.ok("set", "k", "w")
    assert int(cli.ok("get-txid")) >= 2
    stats = dict(line.split("\t", 1) for line in cli.ok("statistics").splitlines())
    assert "start" in stats
    assert "set_info.n" in stats
    assert int(stats["set_info.n"]) >= 2
    assert cli.ok("nop") == ""
    assert cli.ok("flush-store") == ""


def test_consistency_option(cli: Cli) -> None:
    cli.ok("set", "k", "v")
    assert cli.ok("--consistency", "no-guarantees", "get", "k") == "v\n"
    stamp = int(cli.ok("get-txid"))
    assert cli.ok("--consistency", f"at-least:{stamp}", "get", "k") == "v\n"
    # The client retries an unmet at-least read (the node may catch up); --retry 0 asks once.
    code, out, err = cli("--retry", "0", "--consistency", f"at-least:{stamp + 100}", "get", "k")
    assert (code, out) == (1, "")
    assert err == "error: get key 'k': InconsistentRead (code 0x80): store not fresh enough\n"


def test_node_option_talks_to_that_node(cli: Cli) -> None:
    assert cli.ok("set", "k", "v", node=True) == ""
    assert cli.ok("--consistency", "no-guarantees", "get", "k", node=True) == "v\n"
    assert cli.ok("who-master", node=True) == "node_0\n"
    # A single node refuses to drop mastership: an administrative error, exit 1.
    code, out, err = cli("drop-master", node=True)
    assert (code, out) == (1, "")
    assert err.startswith("error: drop-master (node node_0): NotSupported (code 0x20): ")


def test_going_down_node(cli: Cli, server: Server) -> None:
    server.backend.begin_shutdown()
    code, out, err = cli("set", "k", "v", node=True)
    assert (code, out) == (5, "")  # unavailable
    assert err.startswith("error: ")
    assert "GoingDown (code 0x10)" in err or "closed the connection" in err


def test_console_script_form_as_a_subprocess(server: Server) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "parakoon_node",
            "client",
            "--config",
            str(server.config),
            "set",
            "from",
            "subprocess",
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECS,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "parakoon_node",
            "client",
            "--config",
            str(server.config),
            "get",
            "from",
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECS,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "subprocess\n", "")


def test_wrong_cluster_id_is_reported(server: Server, cli: Cli) -> None:
    text = server.config.read_text().replace(CLUSTER_ID, "someone-else")
    server.config.write_text(text)
    code, out, err = cli("get", "k", node=True)
    assert (code, out) == (2, "")  # a configuration problem: retrying cannot help
    assert err.startswith("error: every reachable node closed the connection right after")
    assert "id = 'someone-else'" in err


def test_refusals_keep_the_error_format(cli: Cli) -> None:
    code, out, err = cli("user-function", "nosuch", "arg")
    assert (code, out) == (1, "")
    assert err == (
        'error: user-function: BadInput (code 0x26): User function "nosuch" could not be found\n'
    )
    # On a single node (always the master, nobody else to ask) the compaction commands run;
    # a master of a larger cluster refuses them (tests/test_backup_restore.py).
    for admin in (("optimize-db",), ("defrag-db",), ("copy-db-to-head", "2")):
        assert cli.ok(*admin, node=True) == "", admin
    assert cli.ok("collapse", node=True) == ""


def test_binary_values_round_trip_with_value_file_and_raw(
    cli: Cli, server: Server, tmp_path: Path
) -> None:
    payload = bytes(range(256)) * 3 + b"\n\x00end"
    (tmp_path / "value.bin").write_bytes(payload)
    assert cli.ok("set", "blob", "--value-file", str(tmp_path / "value.bin")) == ""
    assert server.backend.store.get(b"blob") == payload
    command = [sys.executable, "-m", "parakoon_node", "client", "--config", str(server.config)]
    result = subprocess.run(
        [*command, "get", "blob", "--raw"], capture_output=True, timeout=TIMEOUT_SECS, check=False
    )
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout == payload
    result = subprocess.run(
        [*command, "confirm", "piped", "--value-file", "-"],
        input=b"from\x00stdin",
        capture_output=True,
        timeout=TIMEOUT_SECS,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, b"")
    assert server.backend.store.get(b"piped") == b"from\x00stdin"


def test_value_and_value_file_are_exclusive(cli: Cli, tmp_path: Path) -> None:
    expected = "error: set: give VALUE or --value-file PATH (exactly one)\n"
    assert cli("set", "k") == (2, "", expected)
    assert cli("set", "k", "v", "--value-file", "x") == (2, "", expected)
    code, out, err = cli("set", "k", "--value-file", str(tmp_path / "missing"))
    assert (code, out) == (2, "")
    assert err == f"error: set: --value-file {tmp_path / 'missing'}: No such file or directory\n"


def test_text_output_is_unambiguous_for_any_bytes(cli: Cli, tmp_path: Path) -> None:
    """Tabs, newlines, NUL bytes and bytes that are not UTF-8 are escaped, so one entry is
    one line and ``key<TAB>value`` splits at the one real tab; ``--json`` and ``--raw`` give
    the bytes back exactly."""
    cli.ok("set", "t/tab", "a\tb")
    cli.ok("set", "t/nl", "line1\nline2")
    cli.ok("set", "t/back", "c:\\dir")
    raw = tmp_path / "raw"
    raw.write_bytes(b"nul\x00byte\xff")
    cli.ok("set", "t/bin", "--value-file", str(raw))
    assert cli.ok("get", "t/bin") == "nul\\x00byte\\xff\n"
    out = cli.ok("range-entries", "--first", "t/", "--last", "t/~")
    assert out.splitlines() == [
        "t/back\tc:\\\\dir",
        "t/bin\tnul\\x00byte\\xff",
        "t/nl\tline1\\nline2",
        "t/tab\ta\\tb",
    ]
    assert all(line.count("\t") == 1 for line in out.splitlines())
    answer = json.loads(cli.ok("--json", "range-entries", "--first", "t/", "--last", "t/~"))
    assert answer["result"] == [
        ["t/back", "c:\\dir"],
        ["t/bin", {"base64": base64.b64encode(b"nul\x00byte\xff").decode()}],
        ["t/nl", "line1\nline2"],
        ["t/tab", "a\tb"],
    ]
    assert json.loads(cli.ok("--json", "get", "t/tab")) == {"result": "a\tb"}
    assert json.loads(cli.ok("--json", "exists", "t/none")) == {"result": False}
    assert json.loads(cli.ok("--json", "who-master", node=True)) == {"result": "node_0"}


def test_statistics_are_readable_and_raw_in_json(cli: Cli) -> None:
    cli.ok("set", "k", "v")
    text = cli.ok("statistics", node=True)
    assert "e+308" not in text and "e308" not in text, text
    for line in text.splitlines():
        _name, value = line.split("\t")
        assert value == "-" or not re.fullmatch(r"-?\d+\.\d{4,}", value), line
    stats = json.loads(cli.ok("--json", "statistics", node=True))["result"]
    assert isinstance(stats, dict) and stats


def test_a_subcommand_usage_error_shows_that_subcommand(
    cli: Cli, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["client", "--config", str(cli.server.config), "range", "a", "z"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: parakoon client range "), err
    assert "unrecognized arguments: a z" in err


def test_a_value_over_the_protocol_limit_is_refused_with_the_reason(
    cli: Cli, tmp_path: Path
) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * (8 << 20))
    code, out, err = cli("set", "k", "--value-file", str(big))
    assert (code, out) == (1, "")
    assert err.startswith("error: set key 'k': a value of 8388608 bytes is at or over"), err
    assert "8 MiB" in err
    big.write_bytes(b"x" * ((8 << 20) - 1))
    assert cli.ok("set", "k", "--value-file", str(big)) == ""
