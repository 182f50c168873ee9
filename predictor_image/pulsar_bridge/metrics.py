"""The bridge's Prometheus metrics; the names are a contract (dashboards and alerts use them)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

ERROR_KINDS = ("clickhouse_unavailable", "data_contract", "nats", "relay_bad_message")


class BridgeMetrics:
    """One registry per bridge, so several bridges in one process (tests) never collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.lag = Gauge("pulsar_bridge_lag_seconds",
                         "Now minus the end of the newest period on the signals subject.",
                         registry=r)
        self.last_success = Gauge("pulsar_bridge_last_success_timestamp_seconds",
                                  "Unix time of the last poll (or relayed message) that "
                                  "succeeded.", registry=r)
        self.rows_read = Counter("pulsar_bridge_rows_read_total",
                                 "Raw kandoo records read (ClickHouse rows or relayed records).",
                                 registry=r)
        self.periods_published = Counter(
            "pulsar_bridge_periods_published_total",
            "Snapshot rows (hexagon x service type x period) stored on the signals stream; "
            "relay mode: messages relayed.", registry=r)
        self.rejected = Counter("pulsar_bridge_rejected_rows_total",
                                "Raw records the validator rejected, by reason.", ["reason"],
                                registry=r)
        self.errors = Counter("pulsar_bridge_errors_total", "Failures, by kind.", ["kind"],
                              registry=r)
        self.up = Gauge("pulsar_bridge_up", "1 when the last poll succeeded, else 0.",
                        registry=r)
        for kind in ERROR_KINDS:
            self.errors.labels(kind)
