"""Efficiency profiling: parameters, MACs (fvcore + attention handles), latency, throughput."""

from fersuite.profiling.macs import (
    EXTRA_MAC_HANDLES,
    MacsReport,
    ParamCount,
    count_macs,
    count_params,
    format_macs,
    unwrap_compiled,
)
from fersuite.profiling.timing import (
    LATENCY_PROTOCOL,
    LatencyProtocol,
    LatencyStats,
    ThroughputStats,
    measure_latency,
    measure_speed,
    measure_throughput,
)

__all__ = [
    "EXTRA_MAC_HANDLES",
    "LATENCY_PROTOCOL",
    "LatencyProtocol",
    "LatencyStats",
    "MacsReport",
    "ParamCount",
    "ThroughputStats",
    "count_macs",
    "count_params",
    "format_macs",
    "measure_latency",
    "measure_speed",
    "measure_throughput",
    "unwrap_compiled",
]
