"""The predictors' HTTP limits as the platform sets them (chart values predictor.http ->
PULSAR_PREDICTOR_* of the operator -> PULSAR_* of every predictor Deployment), refused at the
operator's start when a predictor would refuse them."""

from __future__ import annotations

from typing import Any

import pytest
from pulsar_operator.builders import build_predictor_deployment
from pulsar_operator.config import PREDICTOR_HTTP, OperatorSettings, SettingsError, load_settings
from pulsar_operator.domain import Platform, SurgeModel
from pulsar_operator.handlers import platform_of
from pulsar_operator.spec import parse_spec
from pydantic import ValidationError

from pulsar_core.settings import ServeSettings

MLFLOW = "http://mlflow.pulsar:5000"
# one value inside every bound, none of them a default
SET = {"max_headers": 40, "max_header_bytes": 65536, "header_timeout_seconds": 2.5,
       "keep_alive_seconds": 30, "max_concurrency": 250}


def _model(platform: Platform) -> SurgeModel:
    spec = parse_spec({"city": "tehran", "serviceType": "eco", "data": {"uris": ["s3://b/t/"]}})
    return SurgeModel("tehran-eco", "pulsar", "uid-1", spec, platform)


def _predictor_env(platform: Platform) -> dict[str, str]:
    container = build_predictor_deployment(_model(platform), "7")["spec"]["template"]["spec"][
        "containers"][0]
    return {item["name"]: item["value"] for item in container["env"] if "value" in item}


def test_the_mapping_names_every_http_limit_once() -> None:
    assert sorted(PREDICTOR_HTTP.values()) == sorted(SET)
    assert all(name in ServeSettings.model_fields for name in PREDICTOR_HTTP.values())


def test_the_predictor_deployment_gets_the_platforms_http_limits(monkeypatch) -> None:
    env = _predictor_env(Platform(MLFLOW, predictor_http=SET))
    assert {key: env[f"PULSAR_{key.upper()}"] for key in SET} == {
        key: str(value) for key, value in SET.items()}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    served = ServeSettings()  # read back exactly as the image reads it
    assert {key: getattr(served, key) for key in SET} == SET


def test_unset_limits_keep_the_predictors_defaults() -> None:
    env = _predictor_env(Platform(MLFLOW, predictor_http={"max_concurrency": 250}))
    assert env["PULSAR_MAX_CONCURRENCY"] == "250"
    for key in set(SET) - {"max_concurrency"}:
        assert env[f"PULSAR_{key.upper()}"] == str(ServeSettings.model_fields[key].default)
    # nothing set: the very Deployment of before (no rollout of every predictor on upgrade)
    assert _predictor_env(Platform(MLFLOW)) == _predictor_env(Platform(MLFLOW, predictor_http={}))


def test_the_operators_settings_reach_the_platform() -> None:
    config = OperatorSettings(mlflow_tracking_uri=MLFLOW,
                              **{f"predictor_{key}": value for key, value in SET.items()})
    assert platform_of(config).predictor_http == SET
    assert platform_of(OperatorSettings(mlflow_tracking_uri=MLFLOW)).predictor_http == {}


def _limit(info: Any) -> dict[str, float]:
    return {name: getattr(item, name) for item in info.metadata
            for name in ("ge", "gt", "le", "lt") if getattr(item, name, None) is not None}


@pytest.mark.parametrize(("field", "served"), sorted(PREDICTOR_HTTP.items()))
def test_the_operator_takes_type_and_bounds_from_serve_settings(field: str, served: str) -> None:
    mine, owner = OperatorSettings.model_fields[field], ServeSettings.model_fields[served]
    assert mine.default is None and mine.annotation == owner.annotation | None
    assert _limit(mine) == _limit(owner) != {}


@pytest.mark.parametrize(("field", "served"), sorted(PREDICTOR_HTTP.items()))
def test_the_operator_refuses_at_start_what_a_predictor_refuses(field: str, served: str,
                                                                  monkeypatch) -> None:
    bounds = _limit(ServeSettings.model_fields[served])
    outside = [bounds["ge"] - 1] if "ge" in bounds else [bounds["gt"]]
    outside += [bounds["le"] + 1] if "le" in bounds else []
    monkeypatch.setenv("PULSAR_MLFLOW_TRACKING_URI", MLFLOW)
    for value in outside:
        with pytest.raises(ValidationError):
            ServeSettings(**{served: value})
        monkeypatch.setenv(f"PULSAR_{field.upper()}", str(value))
        with pytest.raises(SettingsError, match=f"PULSAR_{field.upper()}: Input should be"):
            load_settings()
