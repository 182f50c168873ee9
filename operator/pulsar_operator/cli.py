"""`pulsar operator`: load settings (fail fast), then run kopf with liveness, metrics, peering."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from pulsar_operator.config import OperatorSettings, SettingsError, load_settings

if TYPE_CHECKING:
    import kopf


def lease_problem(settings: OperatorSettings, info: kopf.ConnectionInfo) -> str | None:
    """Why leader election cannot work here (None when it can): outside a pod there is no
    namespace to hold the Lease, and `default` is rarely one the operator may write."""
    if settings.standalone or settings.lease_namespace or info.default_namespace:
        return None
    return ("no namespace for the leader-election Lease: outside a pod set "
            "PULSAR_LEASE_NAMESPACE to a namespace where this identity may update Leases, "
            "or run one replica with --standalone (PULSAR_STANDALONE=true)")


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

    from pulsar_operator import handlers, logs, metrics
    from pulsar_operator.login import connection_info

    try:  # no credentials at all is a setup error: say so once and exit, not retry for good
        info = connection_info(settings.kube_api_url, kopf.OperatorSettings(),
                               settings.service_account_dir)
    except kopf.LoginError as error:
        print(f"pulsar operator: {error}", file=sys.stderr)
        return 2
    if args.standalone:
        settings = settings.model_copy(update={"standalone": True})
    if problem := lease_problem(settings, info):
        print(f"pulsar operator: {problem}", file=sys.stderr)
        return 2
    logs.configure(settings.log_format, args.verbose)
    metrics.serve_metrics(settings.metrics_port, settings.host)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    liveness = (f"http://{host}:{settings.liveness_port}/healthz"
                if settings.liveness_port else None)
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
