"""``parakoon client`` without a command: the shell, driven through stdin against a real
3-node cluster. Each line runs as a client command with the shell's options as defaults; a
failing line prints its error and the shell goes on; ``quit`` ends it."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from parakoon_client import codec

from .conftest import ClusterProcs

SCRIPT = """\
# a comment, then an empty line

set greeting 'hello world'
get greeting
exists greeting
get absent
--json get greeting
--node {node} --consistency no-guarantees get greeting
sequence set a 1 set b 2
range-entries --first a --last b
bogus
get 'unclosed
set x --value-file -
help
help get
quit
set after quit
"""


def run_shell(config: Path, script: str, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "parakoon_node", "client", "--config", str(config), *options],
        input=script,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_shell_runs_each_line_as_a_command(cluster_factory: Any) -> None:
    cluster: ClusterProcs = cluster_factory(lease_period_secs=1.0)
    cluster.start_all()
    cluster.wait_master()
    follower = cluster.names[0]
    done = run_shell(cluster.config, SCRIPT.format(node=follower))
    print(done.stdout)
    print(done.stderr)
    out = done.stdout.splitlines()
    # The answers, in order, with nothing in between (no prompt: stdin is not a terminal).
    assert out[:5] == ["hello world", "true", json.dumps({"result": "hello world"}),
                       "hello world", "a\t1"], out  # fmt: skip
    assert out[5] == "b\t2", out
    # `help` lists every command, `help get` shows get's usage.
    assert out[6].startswith("Commands ")
    assert any(line.split()[:1] == ["range-entries"] for line in out)
    assert any(line.startswith("usage: parakoon client get") for line in out)
    errors = done.stderr.splitlines()
    assert any(e.startswith("error: get key 'absent': NotFound") for e in errors), errors
    assert "error: no command 'bogus'; 'help' lists them" in errors
    assert any(e.startswith("error: No closing quotation") for e in errors), errors
    assert "error: --value-file -: stdin is the shell's own input here" in errors
    # Nothing after `quit` ran; the exit code is the last command's (`help get`: 0).
    assert done.returncode == 0
    assert cluster.call(cluster.wait_master(), codec.Exists(key=b"after")) is False


def test_shell_on_a_terminal_prompts_and_keeps_a_history(
    cluster_factory: Any, tmp_path: Path
) -> None:
    """On a terminal: a greeting, a prompt per line, and the lines in the readline history
    file (``PARAKOON_HISTORY``) once the shell ends, for the next session."""
    cluster: ClusterProcs = cluster_factory(lease_period_secs=1.0)
    cluster.start_all()
    master = cluster.wait_master()
    assert cluster.call(master, codec.Set(key=b"greeting", value=b"hi")) is None
    history = tmp_path / "history"
    history.write_text("ping\n")  # an earlier session's
    master_fd, slave_fd = pty.openpty()
    env = dict(os.environ, PARAKOON_HISTORY=str(history))
    command = [sys.executable, "-m", "parakoon_node", "client", "--config", str(cluster.config)]
    seen = b""
    with subprocess.Popen(
        command, stdin=slave_fd, stdout=slave_fd, stderr=slave_fd, env=env
    ) as proc:
        os.close(slave_fd)
        try:
            for line in (b"get greeting\n", b"quit\n"):
                seen += read_until(master_fd, b"parakoon> ", timeout=30)
                os.write(master_fd, line)
            seen += read_until(master_fd, None, timeout=30)
            assert proc.wait(timeout=30) == 0
        finally:
            os.close(master_fd)
            if proc.poll() is None:
                proc.kill()
    text = seen.decode(errors="replace")
    print(text)
    assert "'help' lists the commands" in text
    assert "hi\r\n" in text
    assert history.read_text().splitlines() == ["ping", "get greeting", "quit"]


def read_until(fd: int, marker: bytes | None, *, timeout: float) -> bytes:
    """Read the terminal until ``marker`` arrived (None: until it closes), within ``timeout``."""
    got = b""
    deadline = time.monotonic() + timeout
    while marker is None or marker not in got:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"not within {timeout:g} s: {marker!r} after {got!r}")
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if not ready:
            continue
        try:
            data = os.read(fd, 1 << 16)
        except OSError:  # EIO: the other side closed
            data = b""
        if not data:
            if marker is None:
                return got
            raise AssertionError(f"the terminal closed before {marker!r}: {got!r}")
        got += data
    return got
