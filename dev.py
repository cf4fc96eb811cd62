#!/usr/bin/env python3
"""Set-up and the everyday commands on a machine that has Python 3.11+, pip/venv and git only.

    python3 dev.py cluster [ARGS]    the repository's cluster (cluster.toml); runtime packages only
    python3 dev.py test [ARGS]       the tests (pytest ARGS); the whole workspace and its dev tools
    python3 dev.py check             the gates CI runs before the tests (ruff, unasync, mypy)
    python3 dev.py parakoon ARGS     any other `parakoon` command (client, status, backup, ...)

The project is a uv workspace. When `uv` is on PATH it is used; otherwise this script installs
a pinned uv into `.tools/` (a private venv in the checkout, ignored by git) with that venv's
own pip, which also works where the system pip refuses to install (Debian's "externally
managed" python3). Everything else is installed by uv into `.venv/`. Nothing outside the
checkout is touched except pip's and uv's download caches.

`cluster` syncs only the node and its runtime dependencies (`--no-dev`), and `uv run` never
removes packages it did not ask for, so the cluster and the tests can run at the same time from
one `.venv/`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
TOOLS = ROOT / ".tools"
UV_REQUIREMENT = "uv>=0.8,<0.14"  # the same range .ci/run used before this script existed

USAGE = __doc__.split("\n\n")[1] if __doc__ else ""


def say(message: str) -> None:
    print(f"dev.py: {message}", file=sys.stderr, flush=True)


def tools_uv() -> Path:
    return TOOLS / ("Scripts/uv.exe" if os.name == "nt" else "bin/uv")


PIP_QUIET = ["install", "--quiet", "--disable-pip-version-check"]


def find_uv() -> str:
    """The uv to use: one on PATH, else the private one (installed on first use)."""
    on_path = shutil.which("uv")
    if on_path:
        return on_path
    for private in (tools_uv(), TOOLS / "pip" / "bin" / "uv"):
        if private.exists():
            return str(private)
    say(f"uv is not on PATH: installing {UV_REQUIREMENT} into {TOOLS} (once)")
    try:
        # A venv of our own: its pip installs even where the system pip refuses (Debian's
        # "externally managed" python3).
        subprocess.run([sys.executable, "-m", "venv", str(TOOLS)], check=True)
        python = TOOLS / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
        subprocess.run([str(python), "-m", "pip", *PIP_QUIET, UV_REQUIREMENT], check=True)
        return str(tools_uv())
    except (OSError, subprocess.CalledProcessError) as exc:
        shutil.rmtree(TOOLS, ignore_errors=True)  # a half-made venv would be found next time
        say(f"no venv ({exc}); trying pip --target instead")
    try:
        # Without the venv module (Debian without python3-venv): uv is one binary, and pip can
        # put it in a folder of ours.
        target = TOOLS / "pip"
        subprocess.run(
            [sys.executable, "-m", "pip", *PIP_QUIET, "--target", str(target), UV_REQUIREMENT],
            check=True,
        )
        return str(target / "bin" / "uv")
    except (OSError, subprocess.CalledProcessError) as exc:
        shutil.rmtree(TOOLS, ignore_errors=True)
        say(f"could not install uv into {TOOLS}: {exc}")
        say(
            "needs pip (and preferably Python's venv module: Debian's python3-venv) and access"
            " to a package index"
        )
        raise SystemExit(1) from None


def uv_run(args: list[str]) -> int:
    env = dict(os.environ)
    env.setdefault("UV_PYTHON_DOWNLOADS", "never")  # use this machine's Python, never fetch one
    command = [find_uv(), "run", *args]
    # Ctrl-C reaches the whole foreground process group: the child (uv, and the cluster or
    # pytest under it) stops on its own and its exit code is ours. A Python-level handler,
    # not SIG_IGN, because an ignored SIGINT would be inherited by the child.
    previous = signal.signal(signal.SIGINT, lambda _signum, _frame: None)
    try:
        return subprocess.run(command, cwd=ROOT, env=env, check=False).returncode
    finally:
        signal.signal(signal.SIGINT, previous)


def main(argv: list[str]) -> int:
    # Run by whatever python3 the machine has, so the check is real here.
    if sys.version_info < (3, 11):  # noqa: UP036
        say(f"needs Python 3.11 or newer, this is {sys.version.split()[0]} ({sys.executable})")
        return 2
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(USAGE)
        return 0 if argv else 2
    what, rest = argv[0], argv[1:]
    node_only = ["--no-dev", "--package", "parakoon-node"]
    if what == "cluster":
        return uv_run([*node_only, "parakoon", "cluster", "--config", "cluster.toml", *rest])
    if what == "parakoon":
        return uv_run([*node_only, "parakoon", *rest])
    if what == "test":
        return uv_run(["--all-packages", "pytest", *rest])
    if what == "check":
        return check()
    say(f"unknown command {what!r}")
    print(USAGE, file=sys.stderr)
    return 2


def check() -> int:
    """The gates CI runs before the tests, each named as it starts; stops at the first failure."""
    gates: list[tuple[str, list[str]]] = [
        ("ruff check", ["ruff", "check", "."]),
        ("ruff format --check", ["ruff", "format", "--check", "."]),
        (
            "blocking client generated from the async one (unasync --check)",
            ["python", "packages/client/scripts/unasync.py", "--check"],
        ),
        ("mypy --strict over every package's src", ["mypy", "--strict", *packages("src")]),
    ]
    # One mypy run per test folder: each has its own conftest.
    gates += [(f"mypy --strict {t}", ["mypy", "--strict", t]) for t in packages("tests")]
    gates.append(
        (
            "mypy --strict tests",
            ["mypy", "--strict", "--explicit-package-bases", "tests", "conftest.py", "dev.py"],
        )
    )
    for name, command in gates:
        print(f"== {name}", flush=True)
        code = uv_run(["--all-packages", *command])
        if code != 0:
            say(f"{name} failed (exit {code})")
            return code
    return 0


def packages(sub: str) -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "packages").glob(f"*/{sub}"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
