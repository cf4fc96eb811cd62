# mypy: disable-error-code="unreachable,redundant-expr"
# (the tests assert on state that method calls change; mypy keeps the first narrowing)
"""The launcher's process handling, with real child processes and real signals.

The launcher runs in its own subprocess (it installs signal handlers, and we signal it the way a
terminal would). Its children here are small Python programs that behave like nodes at the
process level: they print lines, stop on SIGTERM, or misbehave on purpose (ignore SIGTERM, exit
early). The end-to-end run of ``parakoon cluster`` with real nodes is in ``test_launcher_e2e.py``.
"""

from __future__ import annotations

import json
import os
import queue
import re
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from parakoon_testing import wait_until

WAIT_SECS = 30.0

CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    name, mode = sys.argv[1], sys.argv[2]
    def stop(signum, frame):
        print(f"{name} got SIGTERM", flush=True)
        sys.exit(0)
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, lambda signum, frame: print("ignoring SIGTERM", flush=True))
    else:
        signal.signal(signal.SIGTERM, stop)
    print(f"pid={os.getpid()}", flush=True)
    sys.stdout.write("first half, ")
    sys.stdout.flush()
    time.sleep(0.05)
    sys.stdout.write("second half\\n")
    sys.stdout.flush()
    if mode == "long":
        sys.stdout.write("x" * 70000 + "\\n")
        sys.stdout.flush()
    sys.stderr.write("to stderr\\n")
    sys.stderr.flush()
    if mode == "exit3":
        print("exiting with 3", flush=True)
        sys.exit(3)
    print("ready", flush=True)
    while True:
        signal.pause()
    """
)


class Launcher:
    """A launcher subprocess whose stdout lines are collected by a reader thread."""

    def __init__(
        self,
        tmp_path: Path,
        children: dict[str, str],
        stop_timeout_secs: float,
        repeat_grace_secs: float = 1.0,
    ) -> None:
        script = tmp_path / "child.py"
        script.write_text(CHILD)
        specs = [
            {"name": name, "argv": [sys.executable, str(script), name, mode]}
            for name, mode in children.items()
        ]
        program = textwrap.dedent(
            f"""
            import json, sys
            from parakoon_node.commands.launcher import ChildSpec, run_children
            raw = json.loads(sys.argv[1])
            specs = [ChildSpec(name=s["name"], argv=tuple(s["argv"])) for s in raw]
            sys.exit(run_children(
                specs, stop_timeout_secs={stop_timeout_secs}, repeat_grace_secs={repeat_grace_secs}
            ))
            """
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", program, json.dumps(specs)],
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

    def wait_for(self, predicate: Callable[[str], bool], what: str) -> str:
        """Collect lines until one satisfies ``predicate``; fail after WAIT_SECS."""
        for line in self.lines:
            if predicate(line):
                return line
        deadline = time.monotonic() + WAIT_SECS
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=remaining)  # type: ignore[assignment]  # None ends the stream, checked below
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if predicate(line):
                return line
        got = "\n".join(line[:200] for line in self.lines)
        pytest.fail(f"no line with {what} within {WAIT_SECS} s; got:\n{got}")

    def finish(self) -> int:
        code = self.process.wait(timeout=WAIT_SECS)
        self._reader.join(timeout=WAIT_SECS)
        while not self._queue.empty():
            line = self._queue.get()
            if line is not None:
                self.lines.append(line)
        print("\n".join(line[:200] for line in self.lines))
        return code

    def kill(self) -> None:
        """Clean up whatever state the test left the launcher in (always called)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=WAIT_SECS)
        assert self.process.stdout is not None
        self.process.stdout.close()


def pid_of(launcher: Launcher, name: str) -> int:
    line = launcher.wait_for(lambda line: line.startswith(f"{name:<8} | pid="), f"{name}'s pid")
    return int(line.rsplit("=", 1)[1])


def gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie of an already-dead launcher counts: init reaps it
    later)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return True


def wait_gone(pid: int) -> None:
    wait_until(lambda: gone(pid), f"process {pid} exited", timeout=WAIT_SECS, interval=0.05)


def test_interleaved_prefixed_lines_and_clean_stop_on_ctrl_c(tmp_path: Path) -> None:
    launcher = Launcher(tmp_path, {"node_0": "normal", "node_1": "long"}, stop_timeout_secs=10)
    try:
        for name in ("node_0", "node_1"):
            launcher.wait_for(lambda line, n=name: line == f"{n:<8} | ready", f"{name} ready")  # type: ignore[misc]  # a lambda with a bound default
        launcher.process.send_signal(signal.SIGINT)
        code = launcher.finish()
    finally:
        launcher.kill()
    assert code == 0
    lines = launcher.lines
    assert "launcher | started node_0 (pid " in "\n".join(lines)
    # A line written in two pieces comes out whole, with the prefix once.
    assert "node_0   | first half, second half" in lines
    assert "node_1   | first half, second half" in lines
    # stderr is relayed too.
    assert "node_1   | to stderr" in lines
    # An overlong line is cut at 64 KiB rather than buffered without bound.
    long_lines = [len(line) for line in lines if line.startswith("node_1   | xxx")]
    assert long_lines == [len("node_1   | ") + 65536, len("node_1   | ") + 70000 - 65536]
    assert any(line.startswith("launcher | SIGINT: stopping all nodes") for line in lines)
    assert "node_0   | node_0 got SIGTERM" in lines
    assert "node_1   | node_1 got SIGTERM" in lines
    assert "launcher | node_0 stopped with code 0" in lines
    assert "launcher | node_1 stopped with code 0" in lines


def test_sigterm_to_the_launcher_stops_everyone_too(tmp_path: Path) -> None:
    launcher = Launcher(tmp_path, {"a": "normal", "b": "normal"}, stop_timeout_secs=10)
    try:
        pids = [pid_of(launcher, "a"), pid_of(launcher, "b")]
        launcher.wait_for(lambda line: line.endswith("| ready"), "a ready line")
        launcher.process.send_signal(signal.SIGTERM)
        code = launcher.finish()
    finally:
        launcher.kill()
    assert code == 0
    assert any(line.startswith("launcher | SIGTERM: stopping") for line in launcher.lines)
    for pid in pids:
        wait_gone(pid)


def test_child_ignoring_sigterm_is_killed_after_the_timeout(tmp_path: Path) -> None:
    launcher = Launcher(tmp_path, {"good": "normal", "stubborn": "stubborn"}, stop_timeout_secs=0.5)
    try:
        for name in ("good", "stubborn"):
            launcher.wait_for(lambda line, n=name: line == f"{n:<8} | ready", f"{name} ready")  # type: ignore[misc]  # a lambda with a bound default
        launcher.process.send_signal(signal.SIGINT)
        code = launcher.finish()
    finally:
        launcher.kill()
    assert code == 1
    lines = launcher.lines
    assert "stubborn | ignoring SIGTERM" in lines
    assert "launcher | still running after 0.5 s: stubborn; SIGKILL" in lines
    assert "launcher | good stopped with code 0" in lines
    assert "launcher | stubborn stopped with code -9 (SIGKILL)" in lines


def test_second_ctrl_c_kills_at_once(tmp_path: Path) -> None:
    # No grace: any later signal is the second Ctrl-C (the default grace is tested below).
    launcher = Launcher(
        tmp_path, {"stubborn": "stubborn"}, stop_timeout_secs=60, repeat_grace_secs=0
    )
    try:
        launcher.wait_for(lambda line: line == "stubborn | ready", "ready")
        launcher.process.send_signal(signal.SIGINT)
        launcher.wait_for(lambda line: line == "stubborn | ignoring SIGTERM", "SIGTERM seen")
        started = time.monotonic()
        launcher.process.send_signal(signal.SIGINT)
        code = launcher.finish()
        assert time.monotonic() - started < WAIT_SECS
    finally:
        launcher.kill()
    assert code == 1
    assert "launcher | second signal: killing all nodes (SIGKILL)" in launcher.lines


def test_a_repeated_signal_within_the_grace_is_the_same_request(tmp_path: Path) -> None:
    # `uv run parakoon cluster` + Ctrl-C: the launcher gets SIGINT from the terminal and again
    # from uv, at once. That is one request to stop, not the second one that kills. A long grace
    # makes the test independent of the machine's speed; the child ignores SIGTERM so that the
    # launcher is still there for the repeat.
    launcher = Launcher(
        tmp_path, {"stubborn": "stubborn"}, stop_timeout_secs=60, repeat_grace_secs=30
    )
    try:
        pid = pid_of(launcher, "stubborn")
        launcher.wait_for(lambda line: line == "stubborn | ready", "ready")
        launcher.process.send_signal(signal.SIGINT)
        launcher.wait_for(lambda line: line == "stubborn | ignoring SIGTERM", "SIGTERM seen")
        launcher.process.send_signal(signal.SIGINT)
        launcher.wait_for(
            lambda line: (
                line == "launcher | SIGINT again at once: taken as the same request to stop"
            ),
            "the repeat noticed",
        )
        assert launcher.process.poll() is None
        os.kill(pid, signal.SIGKILL)  # end the test without waiting for the stop timeout
        code = launcher.finish()
    finally:
        launcher.kill()
    assert code == 1
    assert not any("killing all nodes" in line for line in launcher.lines)


def test_a_child_exiting_on_its_own_leaves_the_others_running(tmp_path: Path) -> None:
    launcher = Launcher(tmp_path, {"n0": "normal", "n1": "exit3"}, stop_timeout_secs=10)
    try:
        launcher.wait_for(
            lambda line: (
                line == "launcher | n1 exited on its own with code 3; the others keep running"
                " (Ctrl-C stops them)"
            ),
            "the exit report",
        )
        launcher.wait_for(lambda line: line == "n0       | ready", "n0 ready")
        assert launcher.process.poll() is None, "the launcher keeps running for n0"
        launcher.process.send_signal(signal.SIGINT)
        code = launcher.finish()
    finally:
        launcher.kill()
    # A node failed during the run, so the run as a whole did not end cleanly.
    assert code == 1
    assert "launcher | n0 stopped with code 0" in launcher.lines


def test_the_launcher_exits_when_every_child_has(tmp_path: Path) -> None:
    launcher = Launcher(tmp_path, {"n0": "exit3"}, stop_timeout_secs=10)
    try:
        code = launcher.finish()
    finally:
        launcher.kill()
    assert code == 1
    assert "launcher | n0 exited on its own with code 3; none left" in launcher.lines


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux only")
def test_children_do_not_outlive_a_killed_launcher(tmp_path: Path) -> None:
    launcher = Launcher(tmp_path, {"n0": "normal", "n1": "normal"}, stop_timeout_secs=10)
    try:
        pids = [pid_of(launcher, "n0"), pid_of(launcher, "n1")]
        launcher.wait_for(lambda line: line.endswith("| ready"), "a ready line")
        launcher.process.kill()
        launcher.process.wait(timeout=WAIT_SECS)
    finally:
        launcher.kill()
    for pid in pids:
        wait_gone(pid)


def test_command_that_cannot_start(tmp_path: Path) -> None:
    program = textwrap.dedent(
        """
        import sys
        from parakoon_node.commands.launcher import ChildSpec, run_children
        sys.exit(run_children([ChildSpec(name="ghost", argv=("/nonexistent/program",))]))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=WAIT_SECS,
        check=False,
    )
    print(result.stdout, result.stderr)
    assert result.returncode == 1
    assert "launcher | cannot start ghost: " in result.stdout
    assert "Traceback" not in result.stderr


def test_a_closed_output_does_not_kill_the_nodes(tmp_path: Path) -> None:
    # `parakoon cluster | head`: once the reader is gone the launcher keeps supervising, and a
    # later SIGINT still stops every child cleanly. The pipe is our own so that this thread can
    # read it without a reader thread and then close it.
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    specs = [{"name": n, "argv": [sys.executable, str(script), n, "normal"]} for n in ("n0", "n1")]
    program = textwrap.dedent(
        """
        import json, sys
        from parakoon_node.commands.launcher import ChildSpec, run_children
        raw = json.loads(sys.argv[1])
        specs = [ChildSpec(name=s["name"], argv=tuple(s["argv"])) for s in raw]
        sys.exit(run_children(specs, stop_timeout_secs=10))
        """
    )
    read_end, write_end = os.pipe()
    process = subprocess.Popen(
        [sys.executable, "-c", program, json.dumps(specs)], stdout=write_end, stderr=write_end
    )
    os.close(write_end)
    try:
        received = b""
        deadline = time.monotonic() + WAIT_SECS
        while received.count(b"| ready\n") < 2:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"children not ready: {received[-2000:]!r}"
            ready, _, _ = select.select([read_end], [], [], remaining)
            if ready:
                chunk = os.read(read_end, 65536)
                assert chunk, f"launcher output ended: {received[-2000:]!r}"
                received += chunk
        pids = [int(m) for m in re.findall(rb"\| pid=(\d+)", received)]
        assert len(pids) == 2
        os.close(read_end)  # the reader goes away
        read_end = -1
        process.send_signal(signal.SIGINT)  # the launcher writes a line now: EPIPE for it
        code = process.wait(timeout=WAIT_SECS)
    finally:
        if read_end >= 0:
            os.close(read_end)
        if process.poll() is None:
            process.kill()
            process.wait()
    assert code == 0
    for pid in pids:
        wait_gone(pid)
