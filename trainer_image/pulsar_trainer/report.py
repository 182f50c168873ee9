"""The human summary `pulsar train` prints: table, gate verdict, version and where it is."""

from __future__ import annotations

from pulsar_core.settings import TrainSettings
from pulsar_trainer.pipeline import TrainOutcome

REUSE_NOTES = {
    "new": "",
    "resumed-run": " (resumed the unfinished run of this run key)",
    "logged-run": " (registered the run this run key had already logged)",
    "registered-version": " (already registered by this run key: nothing retrained)",
}


def where(settings: TrainSettings, outcome: TrainOutcome) -> str:
    """Where to look at the version: the UI link for a server, the `mlflow ui` command else."""
    uri = settings.mlflow_tracking_uri
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/#/models/{outcome.model_name}/versions/{outcome.version}"
    return f"mlflow ui --backend-store-uri {uri}"


def render(settings: TrainSettings, outcome: TrainOutcome) -> str:
    lines = [f"time-ordered evaluation: a rolling-origin backtest, {settings.holdout_days:g} "
             "calendar day(s) tested per fold; the bundle is the last fold's model:",
             outcome.table, ""]
    verdict = outcome.verdict
    gate = "PASS" if verdict.passed else ("AWAITING APPROVAL" if verdict.awaiting_approval
                                          else "FAIL")
    against = (f" (champion: version {outcome.champion_version})"
               if outcome.champion_version and outcome.champion_version != outcome.version
               else " (no other champion)")
    lines.append(f"gate: {gate}{against}: {verdict.reason}")
    lines.append(f"registered: {outcome.model_name} version {outcome.version}"
                 f"{REUSE_NOTES[outcome.reused]}")
    lines.append(f"  model uri: {outcome.model_uri}   run: {outcome.run_id}")
    lines.append(f"  open: {where(settings, outcome)}")
    if outcome.published:
        lines.append(f"  event: pulsar.events.model.registered published ({outcome.published})")
    elif outcome.publish_error:
        lines.append(f"  event NOT published: {outcome.publish_error}")
    lines.append("promotion is the operator's decision (policy in the SurgeModel); "
                 "the verdict above uses the default policy")
    return "\n".join(lines)
