"""Every code block in ``README.md`` and ``docs/*.md`` that is meant to run does run.

A fenced block in a language that runs (``sh``, ``bash``, ``console``, ``python``) is one of:

* run here: ``python`` blocks, each file's blocks in order as one program (later blocks use what
  earlier ones defined), and ``sh`` blocks whose lines start with ``$ `` (the command; the lines
  after it up to the next ``$`` are its expected output, where ``<...>`` matches any one line).
  Both run in a folder holding a copy of the repository's ``cluster.toml`` whose three nodes
  run on free ports (every client port of the shipped file in a block is rewritten), and
  ``python3 dev.py parakoon`` stands for ``python -m parakoon_node``;
* run by another test, named on the line before the fence: ``<!-- run-by: tests/x.py -->``;
* not meant to run, with the reason on the line before: ``<!-- not-run: API signatures -->``.

A block that is none of these fails the test with its file and line, so an example cannot rot
unnoticed. Blocks in other languages (``toml``, ``text``, none) are data or output.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from parakoon_testing import wait_until

from .conftest import MovedPorts, on_free_ports, serving_master_port

ROOT = Path(__file__).resolve().parent.parent
RUNS = {"sh", "bash", "console", "python"}


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    body: str
    marker: str  # the HTML comment on the line before, or ""

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks_of(path: Path) -> list[Block]:
    lines = path.read_text().split("\n")
    out: list[Block] = []
    k = 0
    while k < len(lines):
        fence = re.match(r"^\s*```(\w*)", lines[k])
        if fence is None:
            k += 1
            continue
        end = k + 1
        while end < len(lines) and not lines[end].strip().startswith("```"):
            end += 1
        before = lines[k - 1].strip() if k > 0 else ""
        marker = before if before.startswith("<!--") else ""
        indent = len(lines[k]) - len(lines[k].lstrip())
        body = "\n".join(line[indent:] for line in lines[k + 1 : end])
        out.append(Block(path, k + 1, fence.group(1), body, marker))
        k = end + 1
    return out


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def runnable() -> list[Block]:
    return [b for doc in documents() for b in blocks_of(doc) if b.lang in RUNS]


def runs_here(block: Block) -> bool:
    if block.marker:
        return False
    if block.lang == "python":
        return True
    return block.lang in {"sh", "bash", "console"} and block.body.lstrip().startswith("$ ")


def test_every_runnable_block_is_run_or_marked() -> None:
    problems = []
    counts = {"here": 0, "run-by": 0, "not-run": 0}
    for block in runnable():
        if runs_here(block):
            counts["here"] += 1
            continue
        by = re.fullmatch(r"<!-- run-by: (\S+) -->", block.marker)
        if by is not None:
            if not (ROOT / by.group(1)).exists():
                problems.append(f"{block.where}: run-by names {by.group(1)}, which does not exist")
            counts["run-by"] += 1
            continue
        if re.fullmatch(r"<!-- not-run: .+ -->", block.marker):
            counts["not-run"] += 1
            continue
        problems.append(
            f"{block.where}: a {block.lang} block that is neither run here (python, or sh with"
            " `$ ` prompts) nor marked `<!-- run-by: tests/... -->` or `<!-- not-run: why -->`"
        )
    print(counts)
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------
# Running them against a cluster


@dataclass(frozen=True)
class DocsCluster:
    folder: Path  # holds the running cluster's cluster.toml
    ports: MovedPorts  # its ports, shipped and free


@pytest.fixture(scope="module")
def readme_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocsCluster]:
    """The repository's cluster.toml on free ports, running."""
    folder = tmp_path_factory.mktemp("docs")
    moved = on_free_ports((ROOT / "cluster.toml").read_text())
    (folder / "cluster.toml").write_text(moved.text)
    log = open(folder / "cluster.log", "wb")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "parakoon_node", "cluster", "--config", "cluster.toml"],
        cwd=folder,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(
            lambda: serving_master_port(moved.client_ports, "parakoon"),
            "the docs' cluster serves",
            timeout=60,
        )
        yield DocsCluster(folder, moved)
    finally:
        proc.send_signal(2)
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()


def python_programs() -> dict[Path, list[Block]]:
    out: dict[Path, list[Block]] = {}
    for block in runnable():
        if block.lang == "python" and runs_here(block):
            out.setdefault(block.path, []).append(block)
    return out


@pytest.mark.parametrize("doc", sorted(python_programs()), ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(doc: Path, readme_cluster: DocsCluster) -> None:
    folder, ports = readme_cluster.folder, readme_cluster.ports
    program = "\n\n".join(
        f"# --- {b.where}\n{ports.localize(b.body)}" for b in python_programs()[doc]
    )
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=folder, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{doc.name}'s python blocks failed:\n{done.stderr[-3000:]}"


def shell_sessions() -> list[Block]:
    return [b for b in runnable() if b.lang != "python" and runs_here(b)]


def matches(expected: list[str], got: list[str]) -> bool:
    if len(expected) != len(got):
        return False
    return all(
        e == g or (e.startswith("<") and e.endswith(">"))
        for e, g in zip(expected, got, strict=True)
    )


@pytest.mark.parametrize("block", shell_sessions(), ids=lambda b: b.where)
def test_shell_sessions_run_and_print_what_they_show(
    block: Block, readme_cluster: DocsCluster
) -> None:
    folder, ports = readme_cluster.folder, readme_cluster.ports
    steps: list[tuple[str, list[str]]] = []
    for line in ports.localize(block.body).split("\n"):
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps and line.strip():
            steps[-1][1].append(line)
    for command, expected in steps:
        runnable_command = command.replace(
            "python3 dev.py parakoon", f"{sys.executable} -m parakoon_node"
        )
        done = subprocess.run(
            runnable_command, shell=True, cwd=folder, capture_output=True, text=True,
            timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"{block.where}: `{command}` failed:\n{done.stderr[-2000:]}"
        if expected:
            got = done.stdout.rstrip("\n").split("\n")
            assert matches(expected, got), f"{block.where}: `{command}` printed {got!r}"
