"""``parakoon cluster``: every node of a ``cluster.toml`` as a child process of one launcher.

Theory of operation
===================

The launcher starts one child per node, ``python -m parakoon_node node --config F --node NAME``,
each with stdout and stderr joined into one pipe. A single thread then waits (``selectors``) on
all pipes and on a wake-up pipe that the signal handlers write to, and copies every line it reads
to its own stdout, prefixed with the node's name padded to a common width (colored per node when
stdout is a terminal). Lines are written whole, so the interleaved logs of three nodes stay
readable; a child's partial line is held until its newline arrives, up to
:data:`LINE_BYTES_MAX`, past which it is written as it is rather than growing without bound.

The children run in their own sessions: a Ctrl-C in the terminal reaches only the launcher, which
then stops the cluster in one controlled way:

1. SIGINT or SIGTERM to the launcher: SIGTERM to every running child at once;
2. wait up to ``stop_timeout_secs`` for all of them to exit (a node stops accepting work,
   finishes what it has made durable, closes its files and exits 0);
3. children still running then get SIGKILL, and so do all of them on a second Ctrl-C (one
   that comes at least :data:`REPEAT_SIGNAL_GRACE_SECS` after the first: ``uv run`` forwards
   the terminal's SIGINT to us although we got it already, so one Ctrl-C may arrive twice).

On Linux each child also asks the kernel for SIGTERM should the launcher die without cleaning
up (``PR_SET_PDEATHSIG``), so a ``kill -9`` of the launcher leaves no orphaned nodes behind.

A child that exits on its own (a crash, a bad home folder) is reported with its exit code and
the others **keep running**: a cluster is built to survive one node going down, and watching
the remaining nodes fail over is exactly what one wants to see then. When every child has exited
on its own the launcher exits too.

Exit code: 0 after a clean stop (every child exited 0 after SIGTERM, or every child exited 0 on
its own; a child that our SIGTERM ended while it was still starting counts as clean); 1 if a
child failed, had to be killed, or could not be started; 130 for a Ctrl-C that came before
the launcher itself had started (``commands/entry.py``).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Final, TextIO

from parakoon_node.runtime.config import ClusterConfig, NodeConfig

__all__ = ["LINE_BYTES_MAX", "ChildSpec", "launch", "node_command", "run_children"]

# A child's line longer than this is written in pieces: a node that prints a huge value by
# mistake must not make the launcher buffer without bound.
LINE_BYTES_MAX: Final = 64 * 1024
READ_CHUNK_BYTES: Final = 64 * 1024
# How often the loop looks at the children even when no output arrives (to notice exits).
POLL_SECS: Final = 0.2
# A terminal's Ctrl-C reaches every process of the foreground group, and wrappers such as
# `uv run` also forward the SIGINT they got to us: one key press can arrive twice within
# milliseconds. Signals this close to the first are the same request, not the second Ctrl-C.
REPEAT_SIGNAL_GRACE_SECS: Final = 1.0
LAUNCHER_NAME: Final = "launcher"

# One ANSI color per node, cycled; launcher messages are bold.
_COLORS: Final = ("\x1b[36m", "\x1b[33m", "\x1b[35m", "\x1b[32m", "\x1b[34m", "\x1b[31m")
_BOLD: Final = "\x1b[1m"
_RESET: Final = "\x1b[0m"


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildSpec:
    """One process to run: a name for its prefix and the command line."""

    name: str
    argv: tuple[str, ...]
    env: dict[str, str] | None = None


def node_command(
    config_path: str | os.PathLike[str], node: NodeConfig, *, log_format: str, log_level: str
) -> tuple[str, ...]:
    """The command line of one node's child process."""
    return (
        sys.executable,
        "-m",
        "parakoon_node",
        "node",
        "--config",
        os.fspath(config_path),
        "--node",
        node.name,
        "--log-format",
        log_format,
        "--log-level",
        log_level,
    )


def _colors_wanted(stream: TextIO) -> bool:
    if "NO_COLOR" in os.environ:
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


def launch(
    cluster: ClusterConfig,
    *,
    config_path: str | os.PathLike[str],
    log_format: str = "pretty",
    log_level: str = "info",
    stop_timeout_secs: float = 10.0,
    out: TextIO | None = None,
) -> int:
    """Run every node of ``cluster`` until Ctrl-C/SIGTERM; returns the exit code (see module)."""
    stream = out if out is not None else sys.stdout
    colors = _colors_wanted(stream)
    env = dict(os.environ)
    # Children write to a pipe, so they would never color their own lines: pass our terminal's
    # verdict on, and make sure their lines leave them at once.
    env["PARAKOON_LOG_COLOR"] = "1" if colors else "0"
    env["PYTHONUNBUFFERED"] = "1"
    # The children are started from the file's absolute path, so they find it whatever their
    # working directory.
    absolute = Path(config_path).absolute()
    specs = [
        ChildSpec(
            name=node.name,
            argv=node_command(absolute, node, log_format=log_format, log_level=log_level),
            env=env,
        )
        for node in cluster.nodes
    ]
    return run_children(specs, stop_timeout_secs=stop_timeout_secs, out=stream, colors=colors)


@dataclass(slots=True, kw_only=True)
class _Child:
    spec: ChildSpec
    process: subprocess.Popen[bytes]
    prefix: bytes
    pending: bytearray = field(default_factory=bytearray)
    eof: bool = False
    reported: bool = False


class _Relay:
    """Writes prefixed lines to the output; one writer, so lines never interleave mid-line."""

    def __init__(self, out: TextIO, names: Sequence[str], colors: bool) -> None:
        self.out = out
        self.width = max(len(name) for name in [*names, LAUNCHER_NAME])
        self.colors = colors
        self.names = list(names)
        self.broken = False

    def prefix(self, name: str) -> bytes:
        label = f"{name:<{self.width}} | "
        if not self.colors:
            return label.encode()
        if name == LAUNCHER_NAME:
            return f"{_BOLD}{label}{_RESET}".encode()
        color = _COLORS[self.names.index(name) % len(_COLORS)]
        return f"{color}{label}{_RESET}".encode()

    def write(self, prefix: bytes, line: bytes) -> None:
        if self.broken:
            return
        buffer = getattr(self.out, "buffer", None)
        data = prefix + line.rstrip(b"\r\n") + b"\n"
        try:
            if buffer is not None:
                self.out.flush()
                buffer.write(data)
                buffer.flush()
            else:
                self.out.write(data.decode("utf-8", "backslashreplace"))
                self.out.flush()
        except (BrokenPipeError, ValueError):
            # The reader went away (`parakoon cluster | head`) or closed our stdout. The nodes
            # must not die of it: keep supervising them, without output, until told to stop.
            self.broken = True
            with contextlib.suppress(OSError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.out.fileno())
                os.close(devnull)

    def say(self, message: str) -> None:
        self.write(self.prefix(LAUNCHER_NAME), message.encode())


def _set_parent_death_signal() -> None:
    """In the child, before exec: ask Linux for SIGTERM when the launcher dies."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux, or no prctl: the launcher's own stop remains
        pass


def run_children(
    specs: Sequence[ChildSpec],
    *,
    stop_timeout_secs: float = 10.0,
    out: TextIO | None = None,
    colors: bool = False,
    on_started: Callable[[Sequence[int]], None] | None = None,
    repeat_grace_secs: float = REPEAT_SIGNAL_GRACE_SECS,
) -> int:
    """Run ``specs`` as children, relay their output, stop them on SIGINT/SIGTERM (see module).

    Must run in the main thread (it installs signal handlers, and restores the old ones on exit).
    ``on_started`` receives the children's pids once all have started (tests use it).
    A signal within ``repeat_grace_secs`` of the first is taken as a repeat of it, not as the
    second Ctrl-C that kills (see :data:`REPEAT_SIGNAL_GRACE_SECS`).
    """
    stream = out if out is not None else sys.stdout
    relay = _Relay(stream, [spec.name for spec in specs], colors)
    selector = selectors.DefaultSelector()
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    # (signal number, monotonic arrival time); appended by the handler, read by the loop.
    signals_seen: list[tuple[int, float]] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        signals_seen.append((signum, time.monotonic()))
        with contextlib.suppress(BlockingIOError):
            os.write(wake_write, b"\0")

    old_handlers = {
        signum: signal.signal(signum, on_signal)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    children: list[_Child] = []
    try:
        selector.register(wake_read, selectors.EVENT_READ, None)
        preexec = _set_parent_death_signal if sys.platform == "linux" else None
        for spec in specs:
            try:
                process = subprocess.Popen(
                    spec.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env=spec.env,
                    start_new_session=True,
                    preexec_fn=preexec,  # noqa: PLW1509 - called before any thread exists here
                )
            except OSError as exc:
                relay.say(f"cannot start {spec.name}: {exc}; stopping the others")
                signals_seen.append((signal.SIGTERM, time.monotonic()))
                break
            assert process.stdout is not None
            os.set_blocking(process.stdout.fileno(), False)
            child = _Child(spec=spec, process=process, prefix=relay.prefix(spec.name))
            children.append(child)
            selector.register(process.stdout.fileno(), selectors.EVENT_READ, child)
            relay.say(f"started {spec.name} (pid {process.pid})")
        if on_started is not None and len(children) == len(specs):
            on_started([child.process.pid for child in children])
        return _supervise(
            children,
            selector=selector,
            wake_read=wake_read,
            signals_seen=signals_seen,
            relay=relay,
            stop_timeout_secs=stop_timeout_secs,
            repeat_grace_secs=repeat_grace_secs,
            start_failed=len(children) < len(specs),
        )
    finally:
        for signum, handler in old_handlers.items():
            signal.signal(signum, handler)
        for child in children:
            if child.process.poll() is None:  # only after an unexpected exception of ours
                child.process.kill()
                child.process.wait()
            if child.process.stdout is not None:
                child.process.stdout.close()
        selector.close()
        os.close(wake_read)
        os.close(wake_write)


def _supervise(
    children: list[_Child],
    *,
    selector: selectors.BaseSelector,
    wake_read: int,
    signals_seen: list[tuple[int, float]],
    relay: _Relay,
    stop_timeout_secs: float,
    repeat_grace_secs: float,
    start_failed: bool,
) -> int:
    """The launcher's loop: relay output, notice exits, carry out the stop sequence."""
    stopping_since: float | None = None
    first_signal_at = 0.0
    killed = False
    handled_signals = 0
    failed = start_failed
    while True:
        # Signals first: the first one starts the stop, a second one (or the timeout) kills.
        while handled_signals < len(signals_seen):
            signum, arrived = signals_seen[handled_signals]
            handled_signals += 1
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                # Not a stop: every node re-reads its TLS certificates (rotation).
                relay.say("SIGHUP: passing it on to every node (re-read TLS certificates)")
                _signal_all(children, signal.SIGHUP)
                continue
            if stopping_since is None:
                relay.say(f"{name}: stopping all nodes (SIGTERM; Ctrl-C again to kill)")
                stopping_since = time.monotonic()
                first_signal_at = arrived
                _signal_all(children, signal.SIGTERM)
            elif arrived - first_signal_at < repeat_grace_secs:
                relay.say(f"{name} again at once: taken as the same request to stop")
            elif not killed:
                relay.say("second signal: killing all nodes (SIGKILL)")
                killed = _kill_all(children) or killed
        if (
            stopping_since is not None
            and not killed
            and time.monotonic() - stopping_since > stop_timeout_secs
        ):
            running = [c.spec.name for c in children if c.process.poll() is None]
            relay.say(f"still running after {stop_timeout_secs:g} s: {', '.join(running)}; SIGKILL")
            killed = _kill_all(children) or killed

        for key, _events in selector.select(timeout=POLL_SECS):
            if key.data is None:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_read, 4096)
                continue
            child: _Child = key.data
            _pump(child, selector, relay)

        for child in children:
            if child.reported or not child.eof:
                continue
            code = child.process.poll()
            if code is None:
                continue
            child.reported = True
            if stopping_since is None:
                others = [c for c in children if c.process.poll() is None]
                tail = "; the others keep running (Ctrl-C stops them)" if others else "; none left"
                relay.say(f"{child.spec.name} exited on its own with code {code}{tail}")
                failed = failed or code != 0
            else:
                relay.say(f"{child.spec.name} stopped with code {_describe(code)}")
                # A node stopped by our SIGTERM before it had installed its handler (still
                # importing, in the first moments after a Ctrl-C) had nothing to finish.
                failed = failed or code not in (0, -signal.SIGTERM)
        if all(child.reported for child in children):
            if not children:
                return 1
            return 1 if failed or killed else 0


def _pump(child: _Child, selector: selectors.BaseSelector, relay: _Relay) -> None:
    """Read what ``child`` wrote and relay every complete line (or an overlong piece)."""
    stdout = child.process.stdout
    assert stdout is not None
    try:
        data = os.read(stdout.fileno(), READ_CHUNK_BYTES)
    except BlockingIOError:
        return
    if not data:
        if child.pending:
            relay.write(child.prefix, bytes(child.pending))
            child.pending.clear()
        selector.unregister(stdout.fileno())
        child.eof = True
        return
    child.pending += data
    while child.pending:
        # Look for the end of the line only within the bound: a longer line is cut into pieces of
        # LINE_BYTES_MAX, each written with the prefix, whether or not its newline has arrived.
        newline = child.pending.find(b"\n", 0, LINE_BYTES_MAX)
        if newline >= 0:
            end = newline + 1
        elif len(child.pending) >= LINE_BYTES_MAX:
            end = LINE_BYTES_MAX
        else:
            break
        relay.write(child.prefix, bytes(child.pending[:end]))
        del child.pending[:end]


def _signal_all(children: Sequence[_Child], signum: signal.Signals) -> None:
    for child in children:
        if child.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signum)


def _kill_all(children: Sequence[_Child]) -> bool:
    """SIGKILL every child still running; returns whether any was."""
    any_running = False
    for child in children:
        if child.process.poll() is None:
            any_running = True
            with contextlib.suppress(ProcessLookupError):
                child.process.kill()
    return any_running


def _describe(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"{code} ({signal.Signals(-code).name})"
    return str(code)
