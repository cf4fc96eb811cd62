"""``parakoon cluster`` end to end: three real nodes as children, real TCP, real signals.

The launcher is started exactly as a user would (``python -m parakoon_node cluster --config``),
with JSON logs so that the relayed lines can be checked field by field. The client side is the
``parakoon client`` command. Then a Ctrl-C (SIGINT) must stop every node cleanly: exit 0.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from parakoon_testing import free_ports

WAIT_SECS = 60.0


def write_cluster(folder: Path) -> Path:
    ports = free_ports(6)
    text = '[cluster]\nid = "e2e"\nlease_period_secs = 1.0\n'
    for i in range(3):
        text += (
            f'\n[[nodes]]\nname = "node_{i}"\naddresses = ["127.0.0.1:{ports[i]}"]\n'
            f'client_port = {ports[3 + i]}\nhome_dir = "data/node_{i}"\n'
        )
    path = folder / "cluster.toml"
    path.write_text(text)
    return path


class LauncherProcess:
    def __init__(self, config: Path) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "parakoon_node",
                "cluster",
                "--config",
                str(config),
                "--log-format",
                "json",
                "--stop-timeout",
                "20",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self._queue.put(raw.decode("utf-8", "backslashreplace").rstrip("\n"))
        self._queue.put(None)

    def _drain(self, timeout: float) -> bool:
        """Move one line into ``lines``; False at the end of the output or on timeout."""
        try:
            line = self._queue.get(timeout=timeout)
        except queue.Empty:
            return False
        if line is None:
            return False
        self.lines.append(line)
        return True

    def wait_for(self, predicate: Callable[[str], bool], what: str) -> None:
        if any(predicate(line) for line in self.lines):
            return
        deadline = time.monotonic() + WAIT_SECS
        while (remaining := deadline - time.monotonic()) > 0 and self._drain(remaining):
            if predicate(self.lines[-1]):
                return
        pytest.fail(f"no {what} within {WAIT_SECS} s:\n" + "\n".join(self.lines[-50:]))

    def finish(self) -> int:
        code = self.process.wait(timeout=WAIT_SECS)
        self._reader.join(timeout=WAIT_SECS)
        while self._drain(0):
            pass
        print("\n".join(line[:300] for line in self.lines))
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=WAIT_SECS)
        assert self.process.stdout is not None
        self.process.stdout.close()


def client(config: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "parakoon_node", "client", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=WAIT_SECS,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, ""), f"client {args}: {result.stderr}"
    return result.stdout


def node_events(lines: list[str], node: str) -> list[dict[str, object]]:
    """The JSON log records a node wrote, taken from the launcher's prefixed lines."""
    prefix = f"{node:<8} | "
    events = []
    for line in lines:
        if line.startswith(prefix) and line[len(prefix) :].startswith("{"):
            events.append(json.loads(line[len(prefix) :]))
    return events


def test_three_nodes_serve_and_stop_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    config = write_cluster(tmp_path)
    launcher = LauncherProcess(config)
    try:
        for name in ("node_0", "node_1", "node_2"):
            launcher.wait_for(lambda line, n=name: line.startswith(f"{n:<8} | {{"), f"{name} log")  # type: ignore[misc]  # a lambda with a bound default
        # The client waits (retries) until a master is elected, then writes through it.
        client(config, "--retry", "30", "set", "greeting", "hello")
        assert client(config, "--retry", "30", "get", "greeting") == "hello\n"
        master = client(config, "--retry", "30", "who-master").strip()
        assert master in {"node_0", "node_1", "node_2"}
        stamp = int(client(config, "--node", master, "get-txid"))
        # Every node applies the write; an at-least read on each shows it (retried until then).
        for name in ("node_0", "node_1", "node_2"):
            args = ("--node", name, "--retry", "30", "--consistency", f"at-least:{stamp}")
            assert client(config, *args, "get", "greeting") == "hello\n"
        launcher.process.send_signal(signal.SIGINT)
        code = launcher.finish()
    finally:
        launcher.close()
    assert code == 0
    lines = launcher.lines
    assert any(line.startswith("launcher | SIGINT: stopping all nodes") for line in lines)
    for name in ("node_0", "node_1", "node_2"):
        assert f"launcher | {name} stopped with code 0" in lines
        events = node_events(lines, name)
        assert events, f"{name} wrote JSON log lines"
        assert all(event["node"] == name for event in events)
        assert all({"timestamp", "level", "event"} <= set(event) for event in events)
    assert (tmp_path / "data" / "node_0").is_dir(), "home_dir is relative to the toml's folder"


def test_bad_config_stops_before_any_node_starts(tmp_path: Path) -> None:
    config = write_cluster(tmp_path)
    config.write_text(config.read_text().replace("lease_period_secs = 1.0", "lease = 1.0"))
    result = subprocess.run(
        [sys.executable, "-m", "parakoon_node", "cluster", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=WAIT_SECS,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: {config}: cluster.lease: unknown key")
