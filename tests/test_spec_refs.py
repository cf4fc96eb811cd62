"""Every section reference in the code and docs points at a section that exists, in a spec that
lives in the repository (``docs/spec/``), and those specs agree with the shared contracts.

What is checked
===============

A *reference* is ``§N`` or ``§N.M``, optionally followed by ``rule K`` / ``item K`` / ``step K``
(also ``rules K and L``, ``rules K-L``, ``rules K to L``). It is looked for in
``packages/**/*.py``, ``tests/**/*.py`` and ``docs/*.md``, in comments, docstrings and text
alike. Besides, the invariant and recovery ids of the consensus notes (``S1`` ... ``S9``,
``L1``, ``R1`` ... ``R9``) are checked wherever they appear: they always mean the notes' tables.

Which spec a reference points into (the resolution rule)
========================================================

1. **Named at the reference.** A spec named right before the ``§``, with only blanks or
   backquotes between, wins: an alias in any letter case (``protocol §8.3``, ``notes §5.2``,
   ``architecture §N``, also inside brackets as in ``[notes §5.6]``) or a file name
   (``multipaxos-design-notes.md §5.2``, with or without a ``docs/spec/`` path in front). The
   name applies to that one reference only.
2. **The file's default.** Otherwise the file must declare its spec once, on a line of its own:
   ``# spec: docs/spec/NAME.md`` in Python (a module-level comment near the top), or
   ``<!-- spec: docs/spec/NAME.md -->`` in Markdown.
3. Anything else is unresolved, and so is a reference whose section (or rule, item or step) is
   not in its spec. The failure lists each one as ``path:line``.

A spec's sections are read from its headings: ``## 5. Rules`` is section 5 and
``### 5.2 Handling ...`` section 5.2 (both the consensus notes and the protocol spec number their
headings this way; the architecture page has no numbered sections). Rule, item and step K of a
section is the numbered list entry ``K.`` in that section's text, up to the next heading of the
same or a higher level.

The mirrors
===========

``docs/spec/`` holds copies of the three contracts of ``../shared/docs/``: a short header (every
line up to the first blank line), then the shared text byte for byte. When a ``shared/docs``
folder sits next to the repository (as in CI), each copy must match it; otherwise that test is
skipped with the reason. ``docs/spec/README.md`` says how to re-sync.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPEC_DIR = ROOT / "docs" / "spec"
SHARED_DIR = ROOT.parent / "shared" / "docs"

NOTES = "multipaxos-design-notes.md"
PROTOCOL = "arakoon-client-protocol.md"
ARCHITECTURE = "architecture.md"
MIRRORED = (ARCHITECTURE, PROTOCOL, NOTES)
ALIASES = {"architecture": ARCHITECTURE, "protocol": PROTOCOL, "notes": NOTES}

SECTION_SIGN = "\N{SECTION SIGN}"
REFERENCE = re.compile(
    SECTION_SIGN + r"(?P<section>\d+(?:\.\d+)?)"
    r"(?:\s+(?P<kind>rule|item|step)s?\s+(?P<first>\d+)"
    r"(?:\s*(?:-|\u2013|to|and)\s*(?P<last>\d+))?)?"
)
# A spec named right before a reference: an alias or a spec file name (rule 1).
NAMED_BEFORE = re.compile(
    r"(?:\b(?P<alias>architecture|protocol|notes)|(?P<file>[\w-]+\.md))`{0,2}\s*$",
    re.IGNORECASE,
)
# The file's default spec (rule 2).
DEFAULT_SPEC = re.compile(r"^\s*(?:#|<!--)\s*spec:\s*docs/spec/(?P<name>[\w.-]+)\s*(?:-->)?\s*$")
# The ids of the consensus notes' invariant (S, L) and recovery (R) tables.
NOTES_ID = re.compile(r"\b(?P<id>[SR]\d{1,2}|L\d)\b")

HEADING = re.compile(r"^(?P<hashes>#{1,6})\s+(?P<number>\d+(?:\.\d+)*)\.?\s")
NUMBERED_ENTRY = re.compile(r"^\s*(?P<number>\d+)\.\s")
TABLE_ID = re.compile(r"^\|\s*\*\*(?P<id>[A-Z]\d+)\*\*\s*\|")


@dataclass(frozen=True, slots=True)
class Section:
    """One numbered section of a spec: its number and the numbered list entries in its text."""

    number: str
    entries: frozenset[int]


@dataclass(frozen=True, slots=True)
class Spec:
    """What references can point at in one spec document."""

    name: str
    sections: dict[str, Section]
    ids: frozenset[str]


def parse_spec(name: str, text: str) -> Spec:
    """The numbered sections of ``text`` (with their list entries) and its table ids."""
    lines = text.splitlines()
    headings: list[tuple[int, int, str | None]] = []  # (line index, level, number or None)
    in_fence = False
    for index, line in enumerate(lines):
        if line.startswith("```"):
            in_fence = not in_fence
            continue
        if in_fence or not line.startswith("#"):
            continue
        match = HEADING.match(line)
        level = len(line) - len(line.lstrip("#"))
        headings.append((index, level, match["number"] if match else None))
    sections: dict[str, Section] = {}
    for position, (index, level, number) in enumerate(headings):
        if number is None:
            continue
        end = len(lines)
        for later_index, later_level, _ in headings[position + 1 :]:
            if later_level <= level:
                end = later_index
                break
        entries = frozenset(
            int(entry["number"])
            for entry in map(NUMBERED_ENTRY.match, lines[index + 1 : end])
            if entry is not None
        )
        sections[number] = Section(number, entries)
    ids = frozenset(m["id"] for m in map(TABLE_ID.match, lines) if m is not None)
    return Spec(name, sections, ids)


@cache
def load_spec(name: str) -> Spec | None:
    """The spec ``docs/spec/NAME``, or None when there is no such file."""
    path = SPEC_DIR / name
    if not path.is_file():
        return None
    return parse_spec(name, path.read_text(encoding="utf-8"))


@dataclass(frozen=True, slots=True)
class Reference:
    """One reference found in a file, and what became of it."""

    where: str  # path:line
    text: str  # the reference as written
    spec: str | None  # the spec it points into, when one was named or declared
    problem: str | None  # None when it resolves

    def __str__(self) -> str:
        target = f" -> {self.spec}" if self.spec else ""
        return f"{self.where}: {self.text}{target}: {self.problem or 'ok'}"


def default_spec(lines: list[str]) -> tuple[str | None, list[str]]:
    """The file's declared default spec and any problems with the declaration."""
    declared = [(n, m["name"]) for n, m in enumerate(map(DEFAULT_SPEC.match, lines), 1) if m]
    if not declared:
        return None, []
    problems = [f"line {n}: second default spec" for n, _ in declared[1:]]
    return declared[0][1], problems


def check_reference(match: re.Match[str], spec_name: str | None) -> str | None:
    """Why ``match`` does not resolve in ``spec_name``, or None when it does."""
    if spec_name is None:
        return (
            "no spec named: write e.g. 'notes "
            + SECTION_SIGN
            + "5.2' or declare '# spec: docs/spec/NAME.md' in the file"
        )
    spec = load_spec(spec_name)
    if spec is None:
        return f"no such spec docs/spec/{spec_name}"
    section = spec.sections.get(match["section"])
    if section is None:
        return f"no section {match['section']} in {spec_name}"
    if match["kind"]:
        for number in (match["first"], match["last"]):
            if number is not None and int(number) not in section.entries:
                return f"section {section.number} has no {match['kind']} {number}"
    return None


def scan_file(path: Path, root: Path) -> Iterator[Reference]:
    """Every reference in ``path`` (section references and notes ids), resolved or not."""
    lines = path.read_text(encoding="utf-8").splitlines()
    relative = path.relative_to(root).as_posix()
    default, declaration_problems = default_spec(lines)
    for problem in declaration_problems:
        yield Reference(relative, "spec:", default, problem)
    notes = load_spec(NOTES)
    for number, line in enumerate(lines, 1):
        where = f"{relative}:{number}"
        for match in REFERENCE.finditer(line):
            named = NAMED_BEFORE.search(line, 0, match.start())
            spec_name: str | None
            if named is None:
                spec_name = default
            elif named["alias"]:
                spec_name = ALIASES[named["alias"].lower()]
            else:
                spec_name = named["file"]
            ref_problem = check_reference(match, spec_name)
            yield Reference(where, match[0], spec_name, ref_problem)
        for match in NOTES_ID.finditer(line):
            if notes is None:
                id_problem: str | None = f"no such spec docs/spec/{NOTES}"
            else:
                id_problem = None if match["id"] in notes.ids else f"no {match['id']} in {NOTES}"
            yield Reference(where, match["id"], NOTES, id_problem)


def scanned_files(root: Path) -> list[Path]:
    """The files whose references must resolve."""
    found = [
        *root.glob("packages/**/*.py"),
        *root.glob("tests/**/*.py"),
        *root.glob("docs/*.md"),
    ]
    skip = {".venv", "__pycache__", "build", "dist"}
    return sorted(p for p in found if not skip.intersection(p.relative_to(root).parts))


def scan(paths: Iterable[Path], root: Path) -> list[Reference]:
    return [ref for path in paths for ref in scan_file(path, root)]


def report(unresolved: list[Reference]) -> str:
    return f"{len(unresolved)} unresolved reference(s):\n" + "\n".join(map(str, unresolved))


# --- the repository ------------------------------------------------------------------------------


def test_every_reference_resolves() -> None:
    references = scan(scanned_files(ROOT), ROOT)
    unresolved = [ref for ref in references if ref.problem is not None]
    sections = [ref for ref in references if ref.text.startswith(SECTION_SIGN)]
    print(
        f"{len(sections)} section references and {len(references) - len(sections)} notes ids "
        f"found, {len(references) - len(unresolved)} of {len(references)} resolve"
    )
    for ref in unresolved:
        print(ref)
    assert not unresolved, report(unresolved)
    assert len(sections) > 200, "the scan found far fewer references than the code holds"


@pytest.mark.parametrize("name", MIRRORED)
def test_spec_copy_has_the_mirror_header(name: str) -> None:
    text = (SPEC_DIR / name).read_text(encoding="utf-8")
    header, separator, body = text.partition("\n\n")
    assert separator, f"docs/spec/{name}: no blank line after the header"
    assert f"`../shared/docs/{name}`" in header, f"docs/spec/{name}: header names no source"
    assert "wins" in header, f"docs/spec/{name}: header does not say which copy wins"
    assert not header.lstrip().startswith("#"), f"docs/spec/{name}: the header is the heading"
    assert load_spec(name) is not None
    assert body.startswith("# "), f"docs/spec/{name}: the copied text should follow the header"


@pytest.mark.parametrize("name", MIRRORED)
def test_spec_copy_matches_shared_docs(name: str) -> None:
    shared = SHARED_DIR / name
    if not SHARED_DIR.is_dir():
        pytest.skip(f"no shared docs next to the repository ({SHARED_DIR} is missing)")
    assert shared.is_file(), f"{shared} is missing: was the contract renamed?"
    _, _, body = (SPEC_DIR / name).read_text(encoding="utf-8").partition("\n\n")
    assert body == shared.read_text(encoding="utf-8"), (
        f"docs/spec/{name} differs from {shared} (the shared copy wins): "
        "re-sync as docs/spec/README.md says"
    )


# --- the checker itself can fail --------------------------------------------------------------


def test_checker_reports_bad_references_with_file_and_line(tmp_path: Path) -> None:
    s = SECTION_SIGN
    bad_id = "S" + "10"  # spelled in two parts so that this file itself holds no bad id
    (tmp_path / "pkg").mkdir()
    declared = tmp_path / "pkg" / "declared.py"
    declared.write_text(
        "# spec: docs/spec/multipaxos-design-notes.md\n"
        f'"""Good: {s}5.2 rule 2, {s}8, S6, R9, protocol {s}11 rule 23, [protocol {s}8.3]."""\n'
        f"# Bad: {s}5.9 here,\n"
        f"# {s}5.2 rule 6 here, protocol {s}14 here and {bad_id} here.\n",
        encoding="utf-8",
    )
    undeclared = tmp_path / "pkg" / "undeclared.md"
    undeclared.write_text(
        f"Good: `arakoon-client-protocol.md` {s}4.2, notes {s}5.6.\n\nBad: see {s}4.2.\n",
        encoding="utf-8",
    )
    references = scan([declared, undeclared], tmp_path)
    unresolved = [str(ref) for ref in references if ref.problem is not None]
    assert len(references) == 13
    assert unresolved == [
        f"pkg/declared.py:3: {s}5.9 -> {NOTES}: no section 5.9 in {NOTES}",
        f"pkg/declared.py:4: {s}5.2 rule 6 -> {NOTES}: section 5.2 has no rule 6",
        f"pkg/declared.py:4: {s}14 -> {PROTOCOL}: no section 14 in {PROTOCOL}",
        f"pkg/declared.py:4: {bad_id} -> {NOTES}: no {bad_id} in {NOTES}",
        f"pkg/undeclared.md:3: {s}4.2: no spec named: write e.g. 'notes {s}5.2' or declare"
        " '# spec: docs/spec/NAME.md' in the file",
    ]
    # And the failure message of the real test carries those lines.
    message = report([ref for ref in references if ref.problem is not None])
    assert "pkg/declared.py:3:" in message
    assert "pkg/undeclared.md:3:" in message


def test_checker_reads_rules_and_ranges() -> None:
    s = SECTION_SIGN
    notes = load_spec(NOTES)
    protocol = load_spec(PROTOCOL)
    assert notes is not None
    assert protocol is not None
    assert notes.sections["5.2"].entries == frozenset(range(1, 6))
    assert protocol.sections["11"].entries == frozenset(range(1, 24))
    assert {"8", "8.3", "8.7", "13"} <= protocol.sections.keys()
    ok = REFERENCE.search(f"{s}11 rules 15-18")
    bad = REFERENCE.search(f"{s}11 rules 15 to 24")
    assert ok is not None
    assert bad is not None
    assert check_reference(ok, PROTOCOL) is None
    assert check_reference(bad, PROTOCOL) == "section 11 has no rule 24"
    assert load_spec(ARCHITECTURE) is not None
    assert load_spec(ARCHITECTURE) == Spec(ARCHITECTURE, {}, frozenset())
