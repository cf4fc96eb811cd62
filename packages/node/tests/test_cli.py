"""The ``parakoon`` command line as outside programs see it: a real subprocess each time.

Configuration problems must come out as one ``error: <file>: <key>: ...`` line on stderr with exit
code 2 and never a traceback, whatever the subcommand.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
TIMEOUT_SECS = 60

GOOD = """\
[cluster]
id = "parakoon"

[[nodes]]
name = "node_0"
addresses = ["127.0.0.1:4010"]
client_port = 4000
home_dir = "data/node_0"
"""


def parakoon(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "parakoon_node", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECS,
        cwd=cwd,
        check=False,
    )
    print(f"exit={result.returncode}\nstdout={result.stdout!r}\nstderr={result.stderr!r}")
    return result


def assert_config_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr == f"error: {expected}\n"
    assert result.stdout == ""


def test_version() -> None:
    result = parakoon("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("parakoon ")


def test_help_lists_every_subcommand() -> None:
    result = parakoon("--help")
    assert result.returncode == 0
    for command in ("node", "cluster", "client", "bench", "wal"):
        assert command in result.stdout


def test_node_bad_config_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "cluster.toml").write_text(GOOD.replace("4000", '"x"'))
    result = parakoon("node", "--config", "cluster.toml", "--node", "node_0", cwd=tmp_path)
    assert_config_error(
        result, 'cluster.toml: nodes[0].client_port: expected an integer in 1..65535, got "x"'
    )


def test_node_unknown_key(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(GOOD.replace("[cluster]\n", "[cluster]\nleese = 1\n"))
    result = parakoon("node", "--config", "c.toml", "--node", "node_0", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: c.toml: cluster.leese: unknown key")
    assert "Traceback" not in result.stderr


def test_node_missing_file(tmp_path: Path) -> None:
    result = parakoon("node", "--config", "nope.toml", "--node", "node_0", cwd=tmp_path)
    assert_config_error(result, "nope.toml: no such file")


def test_node_unknown_node_name(tmp_path: Path) -> None:
    (tmp_path / "cluster.toml").write_text(GOOD)
    result = parakoon("node", "--config", "cluster.toml", "--node", "node_9", cwd=tmp_path)
    assert_config_error(result, "cluster.toml: no node named 'node_9' (nodes: node_0)")


def test_node_unwritable_home_dir(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file where the data folder should be")
    (tmp_path / "cluster.toml").write_text(GOOD)
    result = parakoon("node", "--config", "cluster.toml", "--node", "node_0", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: cluster.toml: nodes[0].home_dir: cannot create folder")
    assert "Traceback" not in result.stderr


def test_node_without_node_option_is_a_usage_error() -> None:
    result = parakoon("node", "--config", "cluster.toml")
    assert result.returncode == 2
    assert "--node" in result.stderr
    assert "Traceback" not in result.stderr


def test_node_bad_log_format_is_a_usage_error() -> None:
    result = parakoon("node", "--node", "node_0", "--log-format", "xml")
    assert result.returncode == 2
    assert "invalid choice: 'xml'" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("cluster", "--config", "cluster.toml"),
        ("bench", "--config", "cluster.toml"),
        ("client", "--config", "cluster.toml", "get", "k"),
    ],
)
def test_other_subcommands_report_config_errors_the_same_way(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    (tmp_path / "cluster.toml").write_text(GOOD.replace('name = "node_0"', "name = 0"))
    result = parakoon(*args, cwd=tmp_path)
    assert_config_error(
        result, "cluster.toml: nodes[0].name: expected a string, got an integer (0)"
    )


def test_repository_cluster_toml_is_accepted_by_the_command_line() -> None:
    # `node_9` is not in the file: the load and validation succeed, only the lookup fails.
    result = parakoon("node", "--config", str(REPO_ROOT / "cluster.toml"), "--node", "node_9")
    assert result.returncode == 2
    assert "no node named 'node_9' (nodes: node_0, node_1, node_2)" in result.stderr


def test_bench_arguments_are_validated() -> None:
    result = parakoon("bench", "--clients", "0")
    assert result.returncode == 2
    assert "expected a positive integer, got '0'" in result.stderr
