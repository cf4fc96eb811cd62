"""The dependency rule of docs/spec/architecture.md, made executable.

Every import statement under ``packages/*/src`` (and the packages' own ``tests``) is read with
``ast`` and checked against the table below. A violation names file, line and the offending
module, so the fix is obvious. The rule, in short:

* imports point down the package table only, and nothing imports ``parakoon_node``;
* packages at the same level do not import each other (the Paxos core emits an ``Apply`` effect
  and the node applies it to the store);
* the pure cores (``parakoon_paxos``, ``parakoon_conn`` and the client's protocol codecs,
  Arakoon's and RESP) import no ``socket``, ``asyncio``, ``anyio``, ``threading``, ``time``,
  ``random``, ``os`` or logging module: time and randomness arrive as data.

Inside ``parakoon_node`` the subpackages are layers (docs/node.md): ``commands`` may import
``runtime`` and ``clientserver``, ``runtime`` may import ``clientserver``, ``clientserver`` nothing
else of the node; and no import circle exists inside the package (see the end of this file).

``parakoon_kv`` may use only the standard library and ``sortedcontainers``. Its snapshot format is
CRC-32C framed; the package carries a pure-Python CRC-32C and accepts a faster implementation
(``crc32c.crc32c``) as an argument from its callers, so the rule holds without a slow format.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ROOT / "packages"

STDLIB = frozenset(sys.stdlib_module_names)
# Modules a pure core may never touch: they are I/O, clocks, randomness or logging.
IMPURE = frozenset(
    {
        "socket",
        "asyncio",
        "anyio",
        "trio",
        "threading",
        "time",
        "random",
        "os",
        "logging",
        "structlog",
        "selectors",
        "subprocess",
        "multiprocessing",
        "signal",
        "concurrent",
        "uvloop",
        "secrets",
        "io",
        "shutil",
        "tempfile",
        "pathlib",
    }
)
TEST_TOOLS = frozenset({"pytest", "_pytest", "hypothesis"})


@dataclass(frozen=True, slots=True)
class Rule:
    """What one package's modules may import."""

    third_party: frozenset[str]
    parakoon: frozenset[str]
    pure: bool = False


RULES: dict[str, Rule] = {
    "paxos": Rule(frozenset(), frozenset(), pure=True),
    "conn": Rule(frozenset(), frozenset(), pure=True),
    "kv": Rule(frozenset({"sortedcontainers"}), frozenset()),
    "wal": Rule(frozenset({"crc32c", "zstandard", "msgpack"}), frozenset()),
    "queue": Rule(frozenset({"anyio"}), frozenset()),
    # anyio only in the async client (parakoon_client.aio); the codec is pure (see below).
    "client": Rule(frozenset({"anyio"}), frozenset()),
    "node": Rule(
        frozenset(
            {
                "anyio",
                "uvloop",
                "msgpack",
                "structlog",
                "prometheus_client",
                "crc32c",
                "zstandard",
                "sortedcontainers",
            }
        ),
        frozenset({"paxos", "kv", "wal", "queue", "conn", "client"}),
    ),
    # The simulator drives the pure packages; it must never reach anyio or the node.
    "sim": Rule(
        frozenset({"crc32c", "zstandard", "msgpack", "sortedcontainers"}),
        frozenset({"paxos", "conn", "kv", "wal", "client"}),
    ),
}
SIM_FORBIDDEN = frozenset({"anyio", "asyncio", "trio", "socket", "threading", "uvloop"})


@dataclass(frozen=True, slots=True)
class Violation:
    path: Path
    line: int
    module: str
    why: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: import of {self.module!r}: {self.why}"


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """Every absolute module an AST imports, with its line (relative imports stay inside)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.extend([(node.lineno, node.module)])
            # "from parakoon_client import codec" names a submodule, check it too
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
    return found


def is_codec_module(package: str, rel: Path) -> bool:
    """The client's pure codecs: the Arakoon codec and the RESP codec of the Redis port."""
    parts = rel.with_suffix("").parts
    return package == "client" and ("codec" in parts or "resp" in parts)


def is_async_client_module(package: str, rel: Path) -> bool:
    return package == "client" and any(part.startswith("aio") for part in rel.parts)


def check_file(package: str, path: Path, rel: Path, *, is_test: bool) -> list[Violation]:
    """Check one file of ``package`` (``rel`` is its path inside src/ or tests/)."""
    rule = RULES[package]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    # Purity is a property of the package's code; its tests may read files and environment
    # variables (scenario scripts, PARAKOON_SEED), which the pure core itself never does.
    pure = (rule.pure or is_codec_module(package, rel)) and not is_test
    out: list[Violation] = []
    for line, module in imported_modules(tree):
        top = module.split(".")[0]
        if top == "__future__":
            continue
        if top in ("parakoon_testing", "parakoon_certs"):
            # The shared test helpers (testing/parakoon_testing.py, and the certificates of
            # testing/parakoon_certs.py), for tests only.
            if not is_test:
                out.append(Violation(path, line, module, f"only tests import {top}"))
            continue
        if top.startswith("parakoon_"):
            other = top.removeprefix("parakoon_")
            if other == package:
                continue
            if other == "node":
                out.append(Violation(path, line, module, "nothing imports parakoon_node"))
            elif other not in rule.parakoon:
                out.append(
                    Violation(
                        path, line, module, f"parakoon_{package} may not import parakoon_{other}"
                    )
                )
            elif (
                package == "sim"
                and other == "client"
                and module != "parakoon_client"
                and not module.startswith("parakoon_client.codec")
            ):
                # the sim may use the client's pure codec, never its socket clients
                out.append(
                    Violation(path, line, module, "parakoon_sim may use only parakoon_client.codec")
                )
            continue
        if pure and top in IMPURE:
            out.append(
                Violation(
                    path,
                    line,
                    module,
                    f"parakoon_{package} is a pure core: no I/O, clock, randomness or logging",
                )
            )
            continue
        if package == "sim" and top in SIM_FORBIDDEN:
            out.append(
                Violation(
                    path,
                    line,
                    module,
                    "the simulator is single-threaded and "
                    "deterministic: no anyio, asyncio, sockets or threads",
                )
            )
            continue
        if top in STDLIB:
            continue
        allowed = set(rule.third_party)
        if is_test:
            allowed |= TEST_TOOLS
        if (
            package == "client"
            and top == "anyio"
            and not (is_async_client_module(package, rel) or is_test)
        ):
            out.append(
                Violation(
                    path, line, module, "anyio is for the async client (parakoon_client.aio*) only"
                )
            )
            continue
        if top not in allowed:
            out.append(
                Violation(path, line, module, f"parakoon_{package} may not depend on {top!r}")
            )
    return out


def check_tree(packages_dir: Path) -> list[Violation]:
    violations: list[Violation] = []
    for package in sorted(RULES):
        base = packages_dir / package
        for sub, is_test in (("src", False), ("tests", True)):
            top = base / sub
            if not top.is_dir():
                continue
            for path in sorted(top.rglob("*.py")):
                violations.extend(check_file(package, path, path.relative_to(top), is_test=is_test))
    return violations


def test_every_package_has_a_rule() -> None:
    folders = {p.name for p in PACKAGES.iterdir() if (p / "pyproject.toml").is_file()}
    assert folders == set(RULES), "packages/ and the rule table disagree"


def test_dependency_rule_holds() -> None:
    violations = check_tree(PACKAGES)
    assert not violations, "\n".join(str(v) for v in violations)


def _fake_tree(tmp_path: Path, package: str, rel: str, source: str) -> Path:
    target = tmp_path / package / "src" / f"parakoon_{package}" / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(source, encoding="utf-8")
    return target


@pytest.mark.parametrize(
    ("package", "rel", "source", "needle"),
    [
        ("paxos", "core.py", "import os\nimport socket\n", "socket"),
        ("conn", "machine.py", "from time import monotonic\n", "time"),
        ("client", "codec/requests.py", "import asyncio\n", "asyncio"),
        ("client", "resp/_codec.py", "import socket\n", "socket"),
        ("client", "blocking.py", "import anyio\n", "anyio"),
        ("kv", "store.py", "import crc32c\n", "crc32c"),
        ("kv", "store.py", "from parakoon_paxos import step\n", "parakoon_paxos"),
        ("wal", "log.py", "import parakoon_node\n", "parakoon_node"),
        ("sim", "net.py", "import anyio\n", "anyio"),
        ("sim", "net.py", "from parakoon_client.blocking import Client\n", "parakoon_client"),
    ],
)
def test_checker_catches_forbidden_imports(
    tmp_path: Path, package: str, rel: str, source: str, needle: str
) -> None:
    """The test of the test: a forbidden import in a temporary tree is reported with its line."""
    path = _fake_tree(tmp_path, package, rel, source)
    violations = check_tree(tmp_path)
    assert violations, f"checker missed {needle!r}"
    assert any(v.path == path and needle in v.module for v in violations)
    assert all(v.line >= 1 for v in violations)
    assert f"{path}:" in str(violations[-1])


def test_checker_accepts_allowed_imports(tmp_path: Path) -> None:
    _fake_tree(tmp_path, "paxos", "core.py", "import dataclasses\nfrom typing import Final\n")
    _fake_tree(tmp_path, "client", "aio.py", "import anyio\nimport socket\n")
    _fake_tree(tmp_path, "client", "codec/__init__.py", "import struct\n")
    _fake_tree(tmp_path, "node", "driver.py", "import anyio\nfrom parakoon_paxos import step\n")
    _fake_tree(tmp_path, "sim", "run.py", "import random\nfrom parakoon_client.codec import x\n")
    assert check_tree(tmp_path) == []


def test_pure_package_tests_may_read_files_but_not_import_other_packages(tmp_path: Path) -> None:
    tests = tmp_path / "paxos" / "tests"
    tests.mkdir(parents=True)
    (tests / "test_x.py").write_text("import os\nfrom pathlib import Path\n")
    assert check_tree(tmp_path) == []
    (tests / "test_y.py").write_text("import parakoon_kv\n")
    assert [v.module for v in check_tree(tmp_path)] == ["parakoon_kv"]


def test_node_is_imported_by_nobody(tmp_path: Path) -> None:
    for package in sorted(set(RULES) - {"node"}):
        _fake_tree(tmp_path, package, "x.py", "from parakoon_node import cli\n")
    reported = {v.path.parts[-4] for v in check_tree(tmp_path)}
    assert reported == set(RULES) - {"node"}


# ---------------------------------------------------------------------------------------------
# Inside parakoon_node: layers, and no import circles.
#
# The node package is split into subpackages (docs/node.md, "Layering"). ``commands`` is the
# command line; it may use the running node and the client server. ``runtime`` is the running
# node; it may start the client server, never the command line. ``clientserver`` speaks the
# Arakoon protocol over a ``Backend`` protocol of its own and imports nothing else of the node.
# The package's top-level modules (``__init__``, ``__main__``) may import any layer.
#
# Every import counts, wherever it stands: module level, inside a function, or under
# ``if TYPE_CHECKING``. A circle that only type checking sees is still a circle in the design.

NODE_LAYERS: dict[str, frozenset[str]] = {
    "commands": frozenset({"runtime", "clientserver"}),
    "runtime": frozenset({"clientserver"}),
    "clientserver": frozenset(),
}
NODE_TOP = "parakoon_node"


def _module_name(src: Path, path: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def node_modules(src: Path) -> dict[str, Path]:
    """Every module of ``parakoon_node`` under ``src`` (a ``src`` folder), by dotted name."""
    base = src / NODE_TOP
    return {_module_name(src, path): path for path in sorted(base.rglob("*.py"))}


def node_imports(src: Path) -> dict[str, list[tuple[int, str]]]:
    """For each module of parakoon_node, the parakoon_node modules it imports, with lines."""
    modules = node_modules(src)
    out: dict[str, list[tuple[int, str]]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found: list[tuple[int, str]] = []
        for node in ast.walk(tree):
            candidates: list[tuple[int, str, tuple[str, ...]]]
            if isinstance(node, ast.Import):
                candidates = [(node.lineno, alias.name, ()) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                candidates = [(node.lineno, base, tuple(a.name for a in node.names))]
            else:
                continue
            for line, module, names in candidates:
                if module != NODE_TOP and not module.startswith(NODE_TOP + "."):
                    continue
                # "from parakoon_node.runtime import config" imports the submodule config
                subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in modules]
                targets = subs or [module]
                found.extend((line, t) for t in targets if t != name)
        out[name] = found
    return out


def _layer(module: str) -> str | None:
    """The layer of a parakoon_node module; None for the package's own top-level modules."""
    parts = module.split(".")
    if len(parts) < 2 or not (len(parts) > 2 or parts[1] in NODE_LAYERS):
        return None
    return parts[1]


def check_node_layers(src: Path) -> list[Violation]:
    modules = node_modules(src)
    violations: list[Violation] = []
    for name, path in modules.items():
        parts = name.split(".")
        if len(parts) > 2 and parts[1] not in NODE_LAYERS:
            violations.append(
                Violation(path, 1, name, f"subpackage {parts[1]!r} has no layer in NODE_LAYERS")
            )
    for name, imports in node_imports(src).items():
        mine = _layer(name)
        if mine is None:
            continue
        for line, target in imports:
            theirs = _layer(target)
            if theirs == mine:
                continue
            if theirs is None:
                why = f"the {mine} layer may not import the package's top-level modules"
            elif theirs not in NODE_LAYERS.get(mine, frozenset()):
                why = f"the {mine} layer may not import the {theirs} layer"
            else:
                continue
            violations.append(Violation(modules[name], line, target, why))
    return violations


def find_node_cycles(src: Path) -> list[list[str]]:
    """Every import circle inside parakoon_node (one per strongly connected component)."""
    graph = {
        name: sorted({t for _line, t in imports}) for name, imports in node_imports(src).items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm; the trees here are small
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, []):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


NODE_SRC = PACKAGES / "node" / "src"


def test_node_layers_hold() -> None:
    violations = check_node_layers(NODE_SRC)
    assert not violations, "\n".join(str(v) for v in violations)


def test_node_has_no_import_circles() -> None:
    cycles = find_node_cycles(NODE_SRC)
    assert not cycles, "import circles inside parakoon_node: " + "; ".join(
        " <-> ".join(c) for c in cycles
    )


def _fake_node(tmp_path: Path, files: dict[str, str]) -> Path:
    src = tmp_path / "src"
    for rel, source in files.items():
        target = src / NODE_TOP / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source, encoding="utf-8")
    return src


_CLEAN_NODE = {
    "__init__.py": "",
    "__main__.py": "from parakoon_node.commands.cli import main\n",
    "commands/__init__.py": "",
    "commands/cli.py": "from parakoon_node.runtime import node\nfrom . import wal_cli\n",
    "commands/wal_cli.py": "from parakoon_node.runtime.config import load\n",
    "runtime/__init__.py": "",
    "runtime/config.py": "import tomllib\n",
    "runtime/node.py": "from .config import load\nfrom parakoon_node.clientserver import serve\n",
    "clientserver/__init__.py": "from .server import serve\n",
    "clientserver/server.py": "from .backend import Backend\n",
    "clientserver/backend.py": "from typing import Protocol\n",
}


def test_node_checker_accepts_a_clean_tree(tmp_path: Path) -> None:
    src = _fake_node(tmp_path, _CLEAN_NODE)
    assert check_node_layers(src) == []
    assert find_node_cycles(src) == []


@pytest.mark.parametrize(
    ("rel", "source", "needle"),
    [
        ("clientserver/server.py", "from parakoon_node.runtime.node import Node\n", "runtime"),
        ("clientserver/server.py", "from ..runtime import node\n", "runtime.node"),
        ("runtime/node.py", "from parakoon_node.commands import cli\n", "commands.cli"),
        (
            "runtime/node.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from parakoon_node.commands.cli import main\n",
            "commands.cli",
        ),
        ("runtime/node.py", "def f():\n    from parakoon_node import __main__\n", "__main__"),
        ("extra/thing.py", "import os\n", "extra"),
    ],
)
def test_node_checker_catches_a_reach_across_layers(
    tmp_path: Path, rel: str, source: str, needle: str
) -> None:
    src = _fake_node(tmp_path, {**_CLEAN_NODE, rel: source})
    violations = check_node_layers(src)
    assert violations, f"checker missed {needle!r} in {rel}"
    assert any(needle in v.module for v in violations)
    assert all(v.path == src / NODE_TOP / rel for v in violations)


@pytest.mark.parametrize(
    "files",
    [
        # at module level, both ways
        {
            "runtime/node.py": "from .config import load\n",
            "runtime/config.py": "from parakoon_node.runtime import node\n",
        },
        # only under TYPE_CHECKING and inside a function: still a circle
        {
            "runtime/node.py": "def run():\n    from .service import Service\n",
            "runtime/service.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from .metrics import x\n",
            "runtime/metrics.py": "from parakoon_node.runtime.node import Node\n",
        },
    ],
)
def test_node_checker_catches_an_import_circle(tmp_path: Path, files: dict[str, str]) -> None:
    src = _fake_node(tmp_path, {**_CLEAN_NODE, **files})
    cycles = find_node_cycles(src)
    assert len(cycles) == 1
    assert cycles[0] == sorted(f"{NODE_TOP}.{rel[:-3].replace('/', '.')}" for rel in files)
