"""A load generator: many devices (thousands of logical clients over a few connections) against
serving systems, open loop (Poisson or a trace of arrival times) or closed loop, several models
at once; reports throughput, goodput, latency percentiles and SLO attainment per model. The
system under test is a `driver.Target` (the node's gRPC target is `runtime.loadgen_target`)."""

from edgeweave.serve.loadgen.arrivals import Arrival, from_trace, poisson
from edgeweave.serve.loadgen.driver import (
    FAILED,
    OK,
    REFUSED,
    THROTTLED,
    Fallback,
    Outcome,
    Record,
    Run,
    Target,
    closed_loop,
    open_loop,
)
from edgeweave.serve.loadgen.senders import SenderPool
from edgeweave.serve.loadgen.stats import KEYS, Row, summarize, table

__all__ = ["FAILED", "KEYS", "OK", "REFUSED", "THROTTLED", "Arrival", "Fallback", "Outcome",
           "Record", "Row", "Run", "SenderPool", "Target", "closed_loop", "from_trace",
           "open_loop", "poisson", "summarize", "table"]
