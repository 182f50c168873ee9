"""The trainer pipeline on a real sqlite MLflow store and a real nats-server."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import mlflow
import nats
import pytest
from pulsar_trainer.pipeline import run_training, train_run
from pulsar_trainer.tracking import BUNDLE_TAG, TABLE_ARTIFACT

from pulsar_core.data.synthetic import generate_snapshots
from pulsar_core.events import MODEL_REGISTERED
from pulsar_core.gate import Paired, PromotionPolicy, decide, paired_from_tags, scores_from_tags
from pulsar_core.registry import RUN_KEY_TAG, Registry
from pulsar_core.settings import TrainSettings
from tests.support.services import NatsServer


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "snapshots.parquet"
    generate_snapshots(n_hexagons=20, service_types=(1, 2), days=4, seed=5).to_parquet(path)
    return path


def _settings(uri: str, data: Path, **extra: object) -> TrainSettings:
    values: dict[str, object] = dict(
        mlflow_tracking_uri=uri, data_uri=[str(data)], city="testville", service_type="all",
        horizons_minutes=[7.5, 30], cnn_epochs=1, cnn_channels=8, model_namespace="ns",
        model_name="testville-all", rejected_dir=str(data.parent / "rejected"),
    )
    values.update(extra)
    return TrainSettings(**values)


def test_registration_publishes_and_a_retry_reuses_the_version(mlflow_uri, data_file,
                                                               nats_server: NatsServer):
    settings = _settings(mlflow_uri, data_file, run_key="job-1", nats_url=nats_server.url)

    async def collect() -> list[dict[str, object]]:
        client = await nats.connect(nats_server.url)
        subscription = await client.subscribe(MODEL_REGISTERED)
        await client.flush()
        first = await asyncio.to_thread(run_training, settings)
        second = await asyncio.to_thread(run_training, settings)
        messages = [json.loads((await subscription.next_msg(timeout=10)).data) for _ in (1, 2)]
        await client.close()
        assert first.reused == "new" and second.reused == "registered-version"
        assert first.version == second.version and first.run_id == second.run_id
        return messages

    events = asyncio.run(collect())
    registry = Registry(mlflow_uri)
    versions = registry.versions("pulsar-testville-all")
    assert [v.version for v in versions] == ["1"]
    version = versions[0]
    assert version.tags[RUN_KEY_TAG] == "job-1"
    scores = scores_from_tags(version.tags)
    assert set(scores) == {7.5, 30.0} and scores[7.5].evaluable and scores[7.5].coverage > 0
    for event in events:  # the retry publishes again; JetStream would dedupe by model:version
        assert event["model_name"] == "pulsar-testville-all"
        assert event["version"] == "1" and event["run_id"] == version.run_id
        assert event["surge_model"] == {"namespace": "ns", "name": "testville-all"}
        assert event["metrics"]["mae_7.5m_served"] == pytest.approx(scores[7.5].mae, rel=1e-5)

    run = mlflow.get_run(version.run_id)
    assert run.data.params["cnn_epochs"] == "1"
    assert run.data.metrics["rows_read"] == run.data.metrics["rows_kept"] > 0
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(version.run_id, "evaluation")}
    assert {"evaluation/table.csv", TABLE_ARTIFACT, "evaluation/report.json",
            "evaluation/forecast_vs_actual.png"} <= logged


def test_crashes_mid_training_and_before_registration_are_resumed(mlflow_uri, data_file):
    settings = _settings(mlflow_uri, data_file, run_key="job-2")
    mlflow.set_tracking_uri(mlflow_uri)
    # Not mlflow.set_experiment: it would leave a process-wide active experiment behind.
    experiment = mlflow.MlflowClient().create_experiment(settings.registered_model)
    # Attempt 1 died mid-training: a run carrying the key, no bundle.
    with mlflow.start_run(experiment_id=experiment) as crashed:
        mlflow.set_tag(RUN_KEY_TAG, "job-2")
    mlflow.MlflowClient().set_terminated(crashed.info.run_id, "FAILED")

    # Attempt 2 trains inside that run, then dies before registering (only the run step ran).
    logged = train_run(settings)
    assert logged.reused == "resumed-run" and logged.run_id == crashed.info.run_id
    registry = Registry(mlflow_uri)
    assert registry.versions(settings.registered_model) == []

    # Attempt 3 registers the logged run without training; attempt 4 finds the version.
    third = run_training(settings)
    fourth = run_training(settings)
    assert third.reused == "logged-run" and third.run_id == crashed.info.run_id
    assert fourth.reused == "registered-version" and fourth.version == third.version
    assert [v.version for v in registry.versions(settings.registered_model)] == [third.version]
    runs = mlflow.search_runs([experiment], output_format="list")
    assert [r.info.run_id for r in runs] == [crashed.info.run_id]
    assert BUNDLE_TAG in runs[0].data.tags
    assert third.table == fourth.table and "strongest baseline" in third.table


def test_gate_compares_with_the_current_champion(mlflow_uri, data_file):
    registry = Registry(mlflow_uri)
    first = run_training(_settings(mlflow_uri, data_file, run_key="a"))
    assert first.champion_version is None
    registry.set_alias(first.model_name, first.version)
    # A champion whose 7.5-minute skill no candidate can match.
    registry.set_version_tag(first.model_name, first.version, "pulsar.gate.h7.5.mae", "0.001")
    second = run_training(_settings(mlflow_uri, data_file, run_key="b", seed=8))
    assert second.version != first.version
    assert second.champion_version == first.version
    # The trainer scored the champion on the candidate's test rows: the gate judged that
    # paired comparison, not the champion's (tampered) skill from its own test day.
    tags = registry.get_version(second.model_name, second.version).tags
    paired = paired_from_tags(tags, first.version)
    assert paired is not None and paired.scores and all(s.rows > 0 for s in paired.scores)
    assert {s.horizon_minutes for s in paired.scores} == {7.5, 30.0}
    assert not any("skill" in f for f in second.verdict.failures)
    # On those same rows, a champion twice as accurate keeps its place, and the reason says
    # on which fold and rows.
    better = Paired(first.version, tuple(replace(s, champion_mae=s.mae / 2)
                                         for s in paired.scores))
    verdict = decide(second.scores, None, PromotionPolicy(), paired=better)
    assert not verdict.passed
    assert f"same rows as champion version {first.version}" in verdict.reason
    assert paired.scores[0].fold in verdict.reason
