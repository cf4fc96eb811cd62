# spec: docs/spec/arakoon-client-protocol.md
"""Bounds on what a peer may make the decoders hold (style habit 8: every frame has a bound)."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Limits applied by the decoders before they allocate anything.

    A declared length or count above its limit is a ``RemoteProtocolError``: a 4-byte length of
    0x7fffffff is refused as soon as its four bytes are read, not after 2 GiB were buffered.

    ``max_value_bytes`` is the protocol's own value-size limit (§11 rule 20): a SET, CONFIRM,
    TEST_AND_SET or REPLACE whose value length is *at least* this gets ``rc 0xFF "unknown
    failure"`` and a close, as the reference server answers. It does not apply to values inside
    sequences or to user-function arguments. The other limits are ours: the reference server has
    none, so they are set well above anything the 32 MiB node-to-node message bound (§11 rule 23)
    would let a cluster replicate anyway.
    """

    max_string_bytes: int = 32 * MIB
    """Longest single string (key, value, sequence blob, cluster id, message)."""
    max_list_items: int = 1_000_000
    """Longest list (keys of a multi_get, updates of one sequence level, range answers)."""
    max_value_bytes: int = 8 * MIB
    """Values of this length or longer are refused for SET, CONFIRM, TEST_AND_SET, REPLACE."""
    max_request_bytes: int = 64 * MIB
    """Most bytes one request (or one response, client side) may make the decoder buffer."""
    max_update_depth: int = 32
    """Deepest nesting of sequences inside a sequence."""

    def __post_init__(self) -> None:
        for name in (
            "max_string_bytes",
            "max_list_items",
            "max_value_bytes",
            "max_request_bytes",
            "max_update_depth",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"Limits.{name} must be at least 1, not {getattr(self, name)}")


DEFAULT_LIMITS = Limits()
