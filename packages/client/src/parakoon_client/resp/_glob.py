"""Redis's glob patterns (KEYS, SCAN MATCH), over bytes.

``*`` matches any run of bytes, ``?`` one byte, ``[abc]`` one of a set, ``[^abc]`` one byte not
in it, ``[a-z]`` a range, and ``\\x`` the byte x itself (inside brackets too). Python's
``fnmatch`` differs (``[!...]``, no backslash escape), so patterns are translated to a regular
expression of our own. Where Redis's matcher has no clear meaning (an unclosed ``[``), the rest
of the pattern is taken literally.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

__all__ = ["compile_glob", "literal_prefix"]

_SPECIAL = frozenset(b"*?[\\")


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


@lru_cache(maxsize=256)
def compile_glob(pattern: bytes) -> Callable[[bytes], bool]:
    """A predicate telling whether a key matches ``pattern``. Cached: SCAN calls it per page."""
    parts: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == ord("*"):
            parts.append(".*")
        elif c == ord("?"):
            parts.append(".")
        elif c == ord("\\") and i + 1 < len(pattern):
            i += 1
            parts.append(re.escape(chr(pattern[i])))
        elif c == ord("["):
            found = _bracket(pattern, i)
            if found is None:
                parts.append(re.escape(pattern[i:].decode("latin-1")))
                break
            regex, i = found
            parts.append(regex)
            continue
        else:
            parts.append(re.escape(chr(c)))
        i += 1
    # Bytes are mapped one to one onto code points 0..255 (latin-1), so the regex works on str.
    compiled = re.compile("".join(parts), re.DOTALL)

    def matches(key: bytes) -> bool:
        return compiled.fullmatch(key.decode("latin-1")) is not None

    return matches


def literal_prefix(pattern: bytes) -> bytes:
    """The bytes every match of ``pattern`` starts with: the pattern up to its first special
    byte. KEYS and SCAN read only the keys with this prefix."""
    for i, c in enumerate(pattern):
        if c in _SPECIAL:
            return pattern[:i]
    return pattern
