import mlflow

from pulsar_core.registry import RUN_KEY_TAG, Registry


def _run_with_artifact(uri: str) -> str:
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run() as run:
        mlflow.log_dict({"x": 1}, "model/x.json")
    return run.info.run_id


def test_versions_aliases_and_run_keys(mlflow_uri: str) -> None:
    registry = Registry(mlflow_uri)
    assert registry.versions("pulsar-x-y") == []
    assert registry.get_alias("pulsar-x-y") is None
    run_id = _run_with_artifact(mlflow_uri)
    first = registry.create_version("pulsar-x-y", f"runs:/{run_id}/model", run_id,
                                    {RUN_KEY_TAG: "k1"})
    second = registry.create_version("pulsar-x-y", f"runs:/{run_id}/model", run_id, {})
    assert [v.version for v in registry.versions("pulsar-x-y")] == [second.version, first.version]
    assert registry.version_for_run_key("pulsar-x-y", "k1") == registry.get_version(
        "pulsar-x-y", first.version)
    assert registry.version_for_run_key("pulsar-x-y", "nope") is None
    registry.set_alias("pulsar-x-y", first.version)
    champion = registry.get_alias("pulsar-x-y")
    assert champion is not None and champion.version == first.version
    registry.set_version_tag("pulsar-x-y", second.version, "a", "b")
    assert registry.get_version("pulsar-x-y", second.version).tags["a"] == "b"
