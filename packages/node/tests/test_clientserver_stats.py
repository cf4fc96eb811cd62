"""The operation statistics the client server keeps for STATISTICS (protocol §10)."""

from __future__ import annotations

import math

from parakoon_client.codec import Get, Set, StatisticsReport, Timing, WhoMaster
from parakoon_node.clientserver import OperationStatistics


def test_timings_and_averages_match_the_reference_definitions() -> None:
    stats = OperationStatistics()
    samples = [0.1, 0.3, 0.2]
    for secs, size in zip(samples, [10, 20, 60], strict=True):
        stats.record(Set(key=b"k", value=b"v"), secs, size)
    stats.record(Get(key=b"k"), 0.5, 4)
    stats.record(WhoMaster(), 9.0, None)  # not a counted operation
    report = stats.report(StatisticsReport(node_is=(("node_0", 7),)))
    expected = Timing()
    for secs in samples:
        expected = expected.with_sample(secs)
    assert report.set_info == expected
    assert report.op_info == expected.with_sample(0.5)
    assert report.get_info.n == 1
    assert math.isnan(report.get_info.var)  # var = m2 / (n - 1) is NaN for one sample
    assert report.del_info == Timing()
    assert report.avg_set_size == 30.0
    assert report.avg_get_size == 4.0
    assert report.node_is == (("node_0", 7),)
    assert report.last >= report.start > 0
    assert report.mem_maxrss > 0
