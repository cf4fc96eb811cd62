"""Per-operation statistics the client server measures for STATISTICS (protocol §10).

The server sees every request and how long it took, so it keeps the timing lists and averages
itself; the backend contributes the node-level fields (``node_is``, ``harvest_stats``). Latencies
are in seconds, sizes are value lengths (SET, GET) or result counts (the range family,
DELETE_PREFIX), as the reference counts them.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import resource
import time

from parakoon_client.codec import (
    AnyRequest,
    Delete,
    DeletePrefix,
    Get,
    MultiGet,
    MultiGetOption,
    PrefixKeys,
    Range,
    RangeEntries,
    Replace,
    RevRangeEntries,
    Sequence,
    Set,
    StatisticsReport,
    TestAndSet,
    Timing,
)

# Which timing list each counted request type feeds (every counted one also feeds op_info).
_TIMING_FIELD: dict[type, str] = {
    Set: "set_info",
    Get: "get_info",
    Delete: "del_info",
    Sequence: "seq_info",
    MultiGet: "mget_info",
    MultiGetOption: "mget_option_info",
    TestAndSet: "tas_info",
    Replace: "replace_info",
    Range: "range_info",
    RangeEntries: "range_entries_info",
    RevRangeEntries: "rev_range_entries_info",
    PrefixKeys: "prefix_info",
    DeletePrefix: "delete_prefix_info",
}
# Which running average the request's size feeds.
_AVERAGE_FIELD: dict[type, str] = {
    Set: "avg_set_size",
    Get: "avg_get_size",
    Range: "avg_range_size",
    RangeEntries: "avg_range_entries_size",
    RevRangeEntries: "avg_rev_range_entries_size",
    PrefixKeys: "avg_prefix_size",
    DeletePrefix: "avg_del_prefix_size",
}


class _RunningTiming:
    """A mutable Welford accumulator: ``add`` costs no allocation, unlike ``Timing.with_sample``
    (this runs for every request). ``freeze`` gives the same figures as a ``Timing``."""

    __slots__ = ("avg", "m2", "max", "min", "n")

    def __init__(self) -> None:
        fresh = Timing()
        self.n = fresh.n
        self.min = fresh.min
        self.max = fresh.max
        self.m2 = fresh.m2
        self.avg = fresh.avg

    def add(self, x: float) -> None:
        n = self.n + 1
        delta = x - self.avg
        self.avg += delta / n
        self.m2 += delta * (x - self.avg)
        self.n = n
        self.min = min(self.min, x)
        self.max = max(self.max, x)

    def freeze(self) -> Timing:
        n = self.n
        var = self.m2 / (n - 1) if n > 1 else (math.nan if n == 1 else 0.0)
        return Timing(n=n, min=self.min, max=self.max, m2=self.m2, avg=self.avg, var=var)


class OperationStatistics:
    """Running counters; ``record`` is O(1) per request."""

    __slots__ = ("_averages", "_counts", "_last", "_op", "_start", "_timings")

    def __init__(self) -> None:
        self._start = time.time()
        self._last = self._start
        self._timings: dict[str, _RunningTiming] = {
            name: _RunningTiming() for name in _TIMING_FIELD.values()
        }
        self._op = _RunningTiming()
        self._averages: dict[str, float] = dict.fromkeys(_AVERAGE_FIELD.values(), 0.0)
        self._counts: dict[str, int] = dict.fromkeys(_AVERAGE_FIELD.values(), 0)

    def record(self, request: AnyRequest, secs: float, size: int | None) -> None:
        """Count one successful request that took ``secs``; ``size`` feeds its average."""
        kind = type(request)
        field = _TIMING_FIELD.get(kind)
        if field is None:
            return
        self._last = time.time()
        self._timings[field].add(secs)
        self._op.add(secs)
        average = _AVERAGE_FIELD.get(kind)
        if average is not None and size is not None:
            n = self._counts[average] + 1
            self._counts[average] = n
            self._averages[average] += (size - self._averages[average]) / n

    def report(self, node: StatisticsReport) -> StatisticsReport:
        """``node`` (the backend's fields) with everything this server measures filled in."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        gc_stats = gc.get_stats()
        fields: dict[str, object] = {
            "start": self._start,
            "last": self._last,
            **self._averages,
            **{name: timing.freeze() for name, timing in self._timings.items()},
            "op_info": self._op.freeze(),
            # Python keeps no cumulative allocation counter; this stays 0.0 (see the notes).
            "mem_allocated": 0.0,
            "mem_maxrss": _clamp_i32(usage.ru_maxrss),  # KiB on Linux
            "mem_minor_collections": _clamp_i32(gc_stats[0]["collections"]),
            "mem_major_collections": _clamp_i32(gc_stats[-1]["collections"]),
            "mem_compactions": 0,
        }
        return dataclasses.replace(node, **fields)  # type: ignore[arg-type]


def _clamp_i32(value: int) -> int:
    return max(-(2**31), min(2**31 - 1, value))
