# spec: docs/spec/arakoon-client-protocol.md
"""The STATISTICS payload (§10): a tree of named values, and the fixed report it carries.

The generic tree (:class:`NamedList` and friends) is what travels: the decoder returns it as it
came, so a client can read a server that adds or reorders fields. :class:`StatisticsReport` is the
exact 30-field layout of §10 that a compatible server must send, in that order and with those
types, because the OCaml client decodes it by position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import assert_never

from ._errors import LocalProtocolError, RemoteProtocolError
from ._limits import DEFAULT_LIMITS, Limits
from ._types import NamedFloat, NamedInt, NamedInt64, NamedList, NamedString, NamedValue
from ._wire import (
    Buffer,
    Short,
    check_i32,
    check_i64,
    enc_text,
    pack_f64,
    pack_i32,
    pack_i64,
    read_count,
    read_f64,
    read_i32,
    read_i64,
    read_text,
)

_TYPE_INT = 1
_TYPE_INT64 = 2
_TYPE_FLOAT = 3
_TYPE_STRING = 4
_TYPE_LIST = 5


def encode_named_value(value: NamedValue) -> bytes:
    """The bytes of one named value (type, name, body), lists recursively in natural order."""
    out: list[bytes] = []
    _encode_into(value, out)
    return b"".join(out)


def _encode_into(value: NamedValue, out: list[bytes]) -> None:
    match value:
        case NamedInt(name=name, value=v):
            out += (pack_i32(_TYPE_INT), enc_text(name), pack_i32(check_i32(v, name)))
        case NamedInt64(name=name, value=v):
            out += (pack_i32(_TYPE_INT64), enc_text(name), pack_i64(check_i64(v, name)))
        case NamedFloat(name=name, value=v):
            out += (pack_i32(_TYPE_FLOAT), enc_text(name), pack_f64(v))
        case NamedString(name=name, value=v):
            out += (pack_i32(_TYPE_STRING), enc_text(name), enc_text(v))
        case NamedList(name=name, items=items):
            out += (pack_i32(_TYPE_LIST), enc_text(name), pack_i32(len(items)))
            for item in items:
                _encode_into(item, out)
        case _:
            assert_never(value)


def decode_named_value(data: bytes, *, limits: Limits = DEFAULT_LIMITS) -> NamedValue:
    """Decode a complete statistics blob (the content of the STATISTICS string).

    Raises ``RemoteProtocolError`` if it is truncated, has trailing bytes, an unknown type, or a
    length, count or depth over ``limits``.
    """
    try:
        value, end = _decode(data, 0, limits, 0)
    except Short as short:
        raise RemoteProtocolError(
            f"statistics blob truncated: needs {short.needed} bytes, holds {len(data)}"
        ) from None
    if end != len(data):
        raise RemoteProtocolError(f"statistics blob ends at {end} but holds {len(data)} bytes")
    return value


def _decode(buf: Buffer, pos: int, limits: Limits, depth: int) -> tuple[NamedValue, int]:
    type_pos = pos
    kind, pos = read_i32(buf, pos)
    name, pos = read_text(buf, pos, limits.max_string_bytes, "statistics name")
    if kind == _TYPE_INT:
        i, pos = read_i32(buf, pos)
        return NamedInt(name=name, value=i), pos
    if kind == _TYPE_INT64:
        i, pos = read_i64(buf, pos)
        return NamedInt64(name=name, value=i), pos
    if kind == _TYPE_FLOAT:
        f, pos = read_f64(buf, pos)
        return NamedFloat(name=name, value=f), pos
    if kind == _TYPE_STRING:
        s, pos = read_text(buf, pos, limits.max_string_bytes, f"statistics {name!r}")
        return NamedString(name=name, value=s), pos
    if kind == _TYPE_LIST:
        if depth >= limits.max_update_depth:
            raise RemoteProtocolError(f"statistics list {name!r} at {type_pos} nested too deep")
        n, pos = read_count(buf, pos, limits.max_list_items, f"statistics {name!r}")
        items: list[NamedValue] = []
        for _ in range(n):
            item, pos = _decode(buf, pos, limits, depth + 1)
            items.append(item)
        return NamedList(name=name, items=tuple(items)), pos
    raise RemoteProtocolError(f"unknown statistics field type {kind} at offset {type_pos}")


# ---------------------------------------------------------------------------------------------
# The fixed report


@dataclass(frozen=True, slots=True, kw_only=True)
class Timing:
    """A running mean and variance (Welford), as the reference keeps per operation.

    A fresh counter has n = 0, min = the largest finite double and everything else 0.0;
    ``var`` is m2 / (n - 1), NaN for n = 1.
    """

    n: int = 0
    min: float = 1.7976931348623157e308
    max: float = 0.0
    m2: float = 0.0
    avg: float = 0.0
    var: float = 0.0

    def with_sample(self, x: float) -> Timing:
        """This counter with one more sample. O(1)."""
        n = self.n + 1
        delta = x - self.avg
        avg = self.avg + delta / n
        m2 = self.m2 + delta * (x - avg)
        var = m2 / (n - 1) if n > 1 else math.nan
        return Timing(n=n, min=min(self.min, x), max=max(self.max, x), m2=m2, avg=avg, var=var)

    def to_tree(self, name: str) -> NamedList:
        return NamedList(
            name=name,
            items=(
                NamedInt(name="n", value=self.n),
                NamedFloat(name="min", value=self.min),
                NamedFloat(name="max", value=self.max),
                NamedFloat(name="m2", value=self.m2),
                NamedFloat(name="avg", value=self.avg),
                NamedFloat(name="var", value=self.var),
            ),
        )


_FRESH = Timing()


@dataclass(frozen=True, slots=True, kw_only=True)
class StatisticsReport:
    """The 30 fields of §10, in wire order (the order of the fields here is the contract)."""

    start: float = 0.0
    last: float = 0.0
    avg_set_size: float = 0.0
    avg_get_size: float = 0.0
    avg_range_size: float = 0.0
    avg_range_entries_size: float = 0.0
    avg_rev_range_entries_size: float = 0.0
    avg_prefix_size: float = 0.0
    avg_del_prefix_size: float = 0.0
    harvest_stats: Timing = _FRESH
    set_info: Timing = _FRESH
    get_info: Timing = _FRESH
    del_info: Timing = _FRESH
    seq_info: Timing = _FRESH
    mget_info: Timing = _FRESH
    mget_option_info: Timing = _FRESH
    tas_info: Timing = _FRESH
    replace_info: Timing = _FRESH
    range_info: Timing = _FRESH
    range_entries_info: Timing = _FRESH
    rev_range_entries_info: Timing = _FRESH
    prefix_info: Timing = _FRESH
    delete_prefix_info: Timing = _FRESH
    op_info: Timing = _FRESH
    mem_allocated: float = 0.0
    mem_maxrss: int = 0
    mem_minor_collections: int = 0
    mem_major_collections: int = 0
    mem_compactions: int = 0
    node_is: tuple[tuple[str, int], ...] = field(default=())
    """(peer node name, last transaction number seen from it), one per peer."""

    def to_tree(self) -> NamedList:
        """The ``arakoon_stats`` tree, exactly as §10 lays it out."""
        items: list[NamedValue] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Timing):
                items.append(value.to_tree(f.name))
            elif isinstance(value, float):
                items.append(NamedFloat(name=f.name, value=value))
            elif f.name == "node_is":
                peers = tuple(NamedInt64(name=peer, value=i) for peer, i in self.node_is)
                items.append(NamedList(name="node_is", items=peers))
            elif isinstance(value, int):
                items.append(NamedInt(name=f.name, value=value))
            else:  # pragma: no cover - the field list above is closed
                raise LocalProtocolError(f"StatisticsReport.{f.name} has an unexpected type")
        return NamedList(name="arakoon_stats", items=tuple(items))

    @classmethod
    def from_tree(cls, tree: NamedList) -> StatisticsReport:
        """Read the fields by name (as the Python 2 client does); missing fields keep defaults.

        Raises ``RemoteProtocolError`` when a field has the wrong type.
        """
        values: dict[str, object] = {}
        wanted = {f.name: f for f in fields(cls)}
        for item in tree.items:
            if item.name not in wanted:
                continue
            if item.name == "node_is":
                if not isinstance(item, NamedList):
                    raise RemoteProtocolError("statistics field 'node_is' is not a list")
                peers: list[tuple[str, int]] = []
                for peer in item.items:
                    if not isinstance(peer, NamedInt64 | NamedInt):
                        raise RemoteProtocolError(f"node_is entry {peer.name!r} is not an int")
                    peers.append((peer.name, peer.value))
                values["node_is"] = tuple(peers)
            elif isinstance(item, NamedList):
                values[item.name] = _timing_from_tree(item)
            elif isinstance(item, NamedFloat | NamedInt | NamedInt64):
                default = getattr(_DEFAULT_REPORT, item.name)
                if isinstance(default, Timing):
                    raise RemoteProtocolError(f"statistics field {item.name!r} is not a list")
                values[item.name] = (
                    float(item.value) if isinstance(default, float) else int(item.value)
                )
            else:
                raise RemoteProtocolError(f"statistics field {item.name!r} has a string value")
        return cls(**values)  # type: ignore[arg-type]


def _timing_from_tree(tree: NamedList) -> Timing:
    values: dict[str, float | int] = {}
    for item in tree.items:
        if isinstance(item, NamedList | NamedString):
            raise RemoteProtocolError(f"timing {tree.name!r} field {item.name!r} is not a number")
        if item.name == "n":
            values["n"] = int(item.value)
        elif item.name in ("min", "max", "m2", "avg", "var"):
            values[item.name] = float(item.value)
    return Timing(**values)  # type: ignore[arg-type]


_DEFAULT_REPORT = StatisticsReport()
