"""Generate the blocking client (``blocking.py``) from the async one (``aio.py``).

Why generated, and not two shells over a sans-I/O engine: the two clients differ only in how
they wait (``await`` or not), in their connection class, their clock and pause, and in the async
client's lock. Everything else (the call loop, master discovery, redirects, retries and
back-off, and the forty public methods with their signatures and docstrings) can then exist
once, in ``aio.py``, while each client stays straight-line code: no generator trampoline and no
extra call per request on the hot path, so neither client gets slower. The connections, where
the I/O really differs, are hand-written: ``aio_connection.py`` and ``blocking_connection.py``
(internal modules; their names follow the rule that only ``parakoon_client.aio*`` imports anyio).

The rewrite, in order:

1. lines between ``# unasync: begin async-only`` and ``# unasync: end`` are dropped; lines
   between ``# unasync: begin sync-only`` and ``# unasync: end`` are uncommented (the source
   keeps them as comments); the marker lines themselves are dropped;
2. the exact replacements of ``EXACT`` (each must match, so that a stale rule is noticed);
3. the token renames of ``TOKENS`` (``async def`` -> ``def``, ``await x`` -> ``x``,
   ``AsyncClient`` -> ``Client``, ``anyio.sleep`` -> ``time.sleep`` ...);
4. a check that no ``async``, ``await`` or ``anyio`` is left;
5. ``ruff check --fix`` of the import rules (sorting, unused imports), then ``ruff format``,
   with the repository's settings.

Usage (from anywhere): ``uv run --all-packages python packages/client/scripts/unasync.py`` writes
``blocking.py``; with ``--check`` it writes nothing and exits 1 when ``blocking.py`` differs from
what it would write (CI runs this).
"""

from __future__ import annotations

import argparse
import difflib
import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent
REPO = PACKAGE.parent.parent
SOURCE = PACKAGE / "src" / "parakoon_client" / "aio.py"
TARGET = PACKAGE / "src" / "parakoon_client" / "blocking.py"

HEADER = """\
# Generated from aio.py by packages/client/scripts/unasync.py: do not edit. Edit aio.py (the
# one copy of the client logic) and run that script; CI runs it with --check and fails when this
# file is stale. Why generated rather than two shells over a sans-I/O engine: both clients stay
# straight-line code (no generator trampoline per request, so no slower), and everything but
# the connection (discovery, redirects, retries, back-off, the public methods) is written once.
"""

# (async text, blocking text): phrases the token renames cannot express.
EXACT: list[tuple[str, str]] = [
    (
        "Async Arakoon-protocol client for one cluster (anyio: asyncio or trio).",
        "Blocking Arakoon-protocol client for one cluster.",
    ),
]

# (pattern, replacement), applied in order.
TOKENS: list[tuple[str, str]] = [
    (r"\basync\s+(def|with|for)\b", r"\1"),
    (r"\bawait\s+", ""),
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
    (r"\baclose\b", "close"),
    (r"\bAsyncClient\b", "Client"),
    (r"\bAsyncSequenceContext\b", "SequenceContext"),
    (r"\bAsyncConnection\b", "Connection"),
    (r"\baio_connection\b", "blocking_connection"),
    (r"\b_run_locked\b", "_run"),
    (r"\bAwaitable\[None\]", "None"),
    (r"\banyio\.current_time\b", "time.monotonic"),
    (r"\banyio\.sleep\b", "time.sleep"),
    (r"^import anyio$", "import time"),
]

LEFTOVER = re.compile(r"\b(async|await|anyio)\b")
BEGIN = re.compile(r"^\s*# unasync: begin (async-only|sync-only)\s*$")
END = re.compile(r"^\s*# unasync: end\s*$")
COMMENT = re.compile(r"^(\s*)# ?")


class UnasyncError(Exception):
    pass


def apply_markers(text: str) -> str:
    out: list[str] = []
    block: str | None = None
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        begin = BEGIN.match(line)
        if begin:
            if block is not None:
                raise UnasyncError(f"aio.py:{number}: unasync block inside a block")
            block = begin.group(1)
        elif END.match(line):
            if block is None:
                raise UnasyncError(f"aio.py:{number}: unasync end without a begin")
            block = None
        elif block is None:
            out.append(line)
        elif block == "sync-only":
            if not COMMENT.match(line):
                raise UnasyncError(f"aio.py:{number}: a sync-only line must be a comment")
            out.append(COMMENT.sub(r"\1", line, count=1))
    if block is not None:
        raise UnasyncError("aio.py: unasync block not ended")
    return "".join(out)


def ruff(args: list[str], text: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--stdin-filename", str(TARGET), "-"],
        input=text,
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    if done.returncode != 0:
        raise UnasyncError(f"ruff {' '.join(args)} failed:\n{done.stderr}{done.stdout}")
    return done.stdout


def generate(source: str) -> str:
    text = apply_markers(source)
    for old, new in EXACT:
        if old not in text:
            raise UnasyncError(f"stale rule: {old!r} is not in aio.py")
        text = text.replace(old, new)
    for pattern, replacement in TOKENS:
        text = re.sub(pattern, replacement, text, flags=re.MULTILINE)
    left = [
        f"  {n}: {line}" for n, line in enumerate(text.splitlines(), 1) if LEFTOVER.search(line)
    ]
    if left:
        raise UnasyncError("async words left in the blocking client:\n" + "\n".join(left))
    text = HEADER + text
    text = ruff(["check", "--quiet", "--fix", "--select", "I,F401"], text)
    return ruff(["format", "--quiet"], text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if blocking.py is stale"
    )
    args = parser.parse_args(argv)
    try:
        wanted = generate(SOURCE.read_text())
    except UnasyncError as exc:
        print(f"unasync: {exc}", file=sys.stderr)
        return 2
    current = TARGET.read_text() if TARGET.exists() else ""
    if args.check:
        if current == wanted:
            return 0
        diff = difflib.unified_diff(
            current.splitlines(keepends=True),
            wanted.splitlines(keepends=True),
            "blocking.py (checked in)",
            "blocking.py (generated from aio.py)",
        )
        sys.stderr.writelines(diff)
        print(
            "unasync: blocking.py is stale; run "
            "`uv run --all-packages python packages/client/scripts/unasync.py`",
            file=sys.stderr,
        )
        return 1
    if current != wanted:
        TARGET.write_text(wanted)
        print(f"unasync: wrote {TARGET.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
