"""Redis's glob patterns (KEYS, SCAN MATCH), over bytes.

``*`` matches any run of bytes, ``?`` one byte, ``[abc]`` one of a set, ``[^abc]`` one byte not
in it, ``[a-z]`` a range, and ``\\x`` the byte x itself (inside brackets too). Python's
``fnmatch`` differs (``[!...]``, no backslash escape). Where Redis's matcher has no clear
meaning (an unclosed ``[``), the rest of the pattern is taken literally.

Why not one regular expression: ``re`` backtracks, and ``.*a.*a.*a.*b`` against a long run of
``a`` takes time exponential in the number of stars. A pattern comes from the network and is
matched on the event loop the node's consensus runs on, so the matcher must be bounded.

How: the pattern is cut at its stars into *segments*. Every token of a segment matches exactly
one byte, so a segment matches a fixed number of bytes, and each segment becomes a small regex
of single-byte items (no quantifier, so no backtracking beyond the segment's length). The first
segment must match at the start of the key, the last at its end, and every segment between
them is placed at its leftmost match after the previous one. Leftmost is always safe for
fixed-width segments separated by stars (a later placement leaves less room, never more), so
matching is one left-to-right pass: at most O(len(key) * len(pattern)) steps, as Redis's own
``stringmatchlen`` with its single backtrack point.

Patterns are bounded (:data:`GLOB_PATTERN_BYTES_MAX`; a longer one is the caller's error to
report) and only short ones are cached, so the cache cannot hold megabytes of compiled patterns.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Final

__all__ = ["GLOB_PATTERN_BYTES_MAX", "compile_glob", "literal_prefix"]

GLOB_PATTERN_BYTES_MAX: Final = 4096
"""Longest pattern :func:`compile_glob` takes (KEYS, SCAN MATCH, CONFIG GET answer -ERR)."""
_CACHED_PATTERN_BYTES_MAX: Final = 256
"""Patterns up to this long are cached (SCAN compiles its pattern once per page)."""
_SPECIAL = frozenset(b"*?[\\")
_STAR: Final = None


def _bracket(pattern: bytes, i: int) -> tuple[str, int] | None:
    """The regex class for the bracket starting at ``pattern[i] == '['``, and the index after
    it; None if the bracket is never closed."""
    j = i + 1
    negate = j < len(pattern) and pattern[j] == ord("^")
    if negate:
        j += 1
    members: list[str] = []
    while j < len(pattern):
        c = pattern[j]
        if c == ord("]"):
            body = "".join(members)
            if not body:
                return ("[^\\x00-\\xff]" if not negate else "[\\x00-\\xff]"), j + 1
            return f"[{'^' if negate else ''}{body}]", j + 1
        if c == ord("\\") and j + 1 < len(pattern):
            j += 1
            c = pattern[j]
        elif j + 2 < len(pattern) and pattern[j + 1] == ord("-") and pattern[j + 2] != ord("]"):
            low, high = sorted((c, pattern[j + 2]))
            members.append(f"{re.escape(chr(low))}-{re.escape(chr(high))}")
            j += 3
            continue
        members.append(re.escape(chr(c)))
        j += 1
    return None


def _tokens(pattern: bytes) -> list[str | None]:
    """The pattern as single-byte regex items, with ``_STAR`` (None) for each run of stars."""
    out: list[str | None] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == ord("*"):
            if not out or out[-1] is not _STAR:
                out.append(_STAR)
        elif c == ord("?"):
            out.append(".")
        elif c == ord("\\") and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(chr(pattern[i])))
        elif c == ord("["):
            found = _bracket(pattern, i)
            if found is None:
                out.extend(re.escape(chr(b)) for b in pattern[i:])
                break
            item, i = found
            out.append(item)
            continue
        else:
            out.append(re.escape(chr(c)))
        i += 1
    return out


def _compile(pattern: bytes) -> Callable[[bytes], bool]:
    # Segments: the runs of single-byte items between stars (the first and last may be empty).
    segments: list[list[str]] = [[]]
    for token in _tokens(pattern):
        if token is _STAR:
            segments.append([])
        else:
            segments[-1].append(token)
    # Bytes are mapped one to one onto code points 0..255 (latin-1), so the regexes work on str.
    compiled = [(re.compile("".join(s), re.DOTALL), len(s)) for s in segments]
    if len(compiled) == 1:
        ((whole, _),) = compiled

        def exact(key: bytes) -> bool:
            return whole.fullmatch(key.decode("latin-1")) is not None

        return exact
    (head, head_len), middle, (tail, tail_len) = compiled[0], compiled[1:-1], compiled[-1]

    def matches(key: bytes) -> bool:
        text = key.decode("latin-1")
        end = len(text) - tail_len  # where the last segment must start
        if end < head_len:
            return False
        if head.match(text, 0, head_len) is None or tail.match(text, end) is None:
            return False
        position = head_len
        for segment, _ in middle:
            found = segment.search(text, position, end)  # leftmost: see the module docstring
            if found is None:
                return False
            position = found.end()
        return True

    return matches


_compile_cached = lru_cache(maxsize=256)(_compile)


def compile_glob(pattern: bytes) -> Callable[[bytes], bool]:
    """A predicate telling whether a key matches ``pattern``; each call of it takes
    O(len(key) * len(pattern)) steps at most. Raises ``ValueError`` for a pattern longer than
    :data:`GLOB_PATTERN_BYTES_MAX` (callers check the length first and answer an error)."""
    if len(pattern) > GLOB_PATTERN_BYTES_MAX:
        raise ValueError(
            f"glob pattern of {len(pattern)} bytes is longer than {GLOB_PATTERN_BYTES_MAX}"
        )
    if len(pattern) <= _CACHED_PATTERN_BYTES_MAX:
        return _compile_cached(pattern)
    return _compile(pattern)


def literal_prefix(pattern: bytes) -> bytes:
    """The bytes every match of ``pattern`` starts with: the pattern up to its first special
    byte. KEYS and SCAN read only the keys with this prefix."""
    for i, c in enumerate(pattern):
        if c in _SPECIAL:
            return pattern[:i]
    return pattern
