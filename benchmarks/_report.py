"""Shared helper for benchmark scripts: write one section of docs/performance.md.

Each benchmark owns a section delimited by ``<!-- bench:NAME -->`` / ``<!-- /bench:NAME -->``
markers and rewrites only that section, so scripts can run in any order (a file lock keeps two
concurrent writers from interleaving). The section records the machine, the date, the exact
command and the figures, as docs/performance.md promises.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import os
import platform
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PERF_MD = ROOT / "docs" / "performance.md"

_HEADER = """# parakoon performance

Figures measured by the scripts in `benchmarks/`. Each section is rewritten by its script with
the machine, the date and the command that produced it; nothing here is typed by hand.
Speed is never asserted in tests; this page is where it is reported.

"""


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()} ({platform.python_implementation()})"
    )


def command_line() -> str:
    script = Path(sys.argv[0])
    with contextlib.suppress(ValueError):
        script = script.resolve().relative_to(ROOT)
    return "uv run --all-packages python " + shlex.join([str(script), *sys.argv[1:]])


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, title: str, body: str, *, command: str | None = None) -> None:
    """Replace (or append) section ``name`` of docs/performance.md."""
    today = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = (
        f"<!-- bench:{name} -->\n## {title}\n\n"
        f"- machine: {machine_description()}\n- date: {today}\n"
        f"- command: `{command or command_line()}`\n\n{body.strip()}\n<!-- /bench:{name} -->\n"
    )
    PERF_MD.parent.mkdir(parents=True, exist_ok=True)
    with open(PERF_MD.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = PERF_MD.read_text() if PERF_MD.exists() else _HEADER
        pattern = re.compile(
            rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->\n?", re.S
        )
        if pattern.search(current):
            current = pattern.sub(lambda _m: text, current)
        else:
            current = current.rstrip("\n") + "\n\n" + text
        PERF_MD.write_text(current)
    print(f"wrote section {name!r} of {PERF_MD.relative_to(ROOT)}")
