"""Prometheus metrics of a federated server or edge aggregator, for watching a run while it goes
(``metrics.jsonl`` holds the same figures, per round). Named like the inference nodes' series
(:mod:`edgeweave.runtime.metrics`, which training may not import); one process is one role, so
whether a series comes from the cloud or an edge is the scrape target's business.

    edgeweave_fl_round                      the last completed round (at an edge: the cloud's)
    edgeweave_fl_clients_total{outcome}     clients selected / reported / dropped, all rounds
    edgeweave_fl_round_clients{outcome}     the same, last round
    edgeweave_fl_bytes_total{direction}     up (received by this server) / down (sent by it)
    edgeweave_fl_round_seconds              round wall time (histogram; _last: the last round)
    edgeweave_fl_test_accuracy, _test_loss, _train_loss   after the last round (NaN: not yet)
    edgeweave_fl_privacy_epsilon{mechanism} spent so far: dp_fedavg (the server's accountant),
                                            local_dp_max (the largest client's, DP-SGD)
    edgeweave_fl_clients_connected          devices (edges, at the cloud) holding a task stream

At an edge aggregator, "clients" are its devices, summed over its edge rounds, and the bytes
those of the device-edge links.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from edgeweave.train.types import RoundRecord, TrainError

_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_PRIVACY = {"dp_epsilon": "dp_fedavg", "client_dp_epsilon_max": "local_dp_max"}


def round_outcomes(rec: RoundRecord) -> dict[str, int]:
    """Clients selected, reported (their update was aggregated) and dropped (failed or late)
    in one round's record, synchronous or asynchronous."""
    extra = rec.extra
    dropped = int(extra.get("failed", 0)) + int(extra.get("late", 0))
    selected = int(extra.get("selected", rec.clients + dropped))
    return {"selected": selected, "reported": int(rec.clients), "dropped": dropped}


class FLMetrics:
    """The series above in a registry of their own; ``connected`` (when given) is read at every
    scrape for ``edgeweave_fl_clients_connected``."""

    def __init__(self, connected: Callable[[], int] | None = None) -> None:
        self.registry = reg = CollectorRegistry()
        self.round = Gauge("edgeweave_fl_round", "Last completed round", registry=reg)
        self.clients = Counter("edgeweave_fl_clients", "Clients by outcome, all rounds",
                               ["outcome"], registry=reg)
        self.round_clients = Gauge("edgeweave_fl_round_clients", "Clients by outcome, last "
                                   "round", ["outcome"], registry=reg)
        self.bytes = Counter("edgeweave_fl_bytes", "Model and update bytes, by direction",
                             ["direction"], registry=reg)
        self.seconds = Histogram("edgeweave_fl_round_seconds", "Round wall time (s)",
                                 buckets=_BUCKETS, registry=reg)
        self.last_seconds = Gauge("edgeweave_fl_round_seconds_last", "Last round's wall time "
                                  "(s)", registry=reg)
        self.test_acc = Gauge("edgeweave_fl_test_accuracy", "Test accuracy after the last "
                              "evaluated round", registry=reg)
        self.test_loss = Gauge("edgeweave_fl_test_loss", "Test loss after the last evaluated "
                               "round", registry=reg)
        self.train_loss = Gauge("edgeweave_fl_train_loss", "Clients' mean train loss, last "
                                "round", registry=reg)
        self.epsilon = Gauge("edgeweave_fl_privacy_epsilon", "Privacy spent so far (epsilon)",
                             ["mechanism"], registry=reg)
        for g in (self.test_acc, self.test_loss, self.train_loss):
            g.set(math.nan)
        if connected is not None:
            Gauge("edgeweave_fl_clients_connected", "Clients holding a task stream",
                  registry=reg).set_function(lambda: float(connected()))
        self._http: Any = None

    def observe(self, rec: RoundRecord) -> None:
        """Account one finished round (the server loop's progress callback)."""
        self.round.set(rec.round)
        for outcome, n in round_outcomes(rec).items():
            self.clients.labels(outcome).inc(n)
            self.round_clients.labels(outcome).set(n)
        self.bytes.labels("up").inc(rec.bytes_up)
        self.bytes.labels("down").inc(rec.bytes_down)
        self.seconds.observe(rec.wall_s)
        self.last_seconds.set(rec.wall_s)
        if not math.isnan(rec.test_acc):  # rounds without evaluation keep the last figures
            self.test_acc.set(rec.test_acc)
            self.test_loss.set(rec.test_loss)
        self.train_loss.set(rec.train_loss)
        for key, mechanism in _PRIVACY.items():
            value = rec.extra.get(key)
            if isinstance(value, int | float):
                self.epsilon.labels(mechanism).set(value)
            elif key in rec.extra:  # None: no noise, no privacy (JSON has no infinity)
                self.epsilon.labels(mechanism).set(math.inf)

    def serve_http(self, port: int, addr: str = "127.0.0.1", flag: str = "--metrics-port") -> int:
        """Serve ``/metrics`` on ``addr:port`` in a daemon thread; returns the port (0 picks
        one). A port in use is one error naming ``flag``."""
        try:
            self._http, _ = start_http_server(port, addr=addr, registry=self.registry)
        except OSError as e:
            raise TrainError(f"{flag} {port}: cannot listen on {addr}:{port} "
                             f"({e.strerror or e})") from None
        return int(self._http.server_port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
