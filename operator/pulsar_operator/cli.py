"""`pulsar operator`: load settings (fail fast), then run kopf with liveness, metrics, peering."""

from __future__ import annotations

import argparse
import os
import sys

from pulsar_operator.config import SettingsError, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pulsar operator", description=__doc__)
    parser.add_argument("--standalone", action="store_true",
                        help="act at once, no leader election (one replica)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"pulsar operator: {error}", file=sys.stderr)
        return 2
    # MLflow's REST client retries for minutes by default; the operator has its own backoff.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

    import kopf

    from pulsar_operator import logs, metrics
    from pulsar_operator import main as handlers

    logs.configure(settings.log_format, args.verbose)
    metrics.serve_metrics(settings.metrics_port, settings.host)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    liveness = (f"http://{host}:{settings.liveness_port}/healthz"
                if settings.liveness_port else None)
    if args.standalone:
        settings = settings.model_copy(update={"standalone": True})
    kopf.run(
        # kopf's own peering stays off: replicas elect a leader on a Lease (leader.py)
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=liveness,
        memo=kopf.Memo(settings=settings),
        registry=kopf.get_default_registry(),
    )
    del handlers  # imported for its kopf registrations
    return 0
