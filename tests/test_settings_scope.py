"""Settings that name a NATS subject or a numeric id refuse what would widen or break them."""

from __future__ import annotations

import pytest
from pulsar_predictor.cli import build_parser, settings_from
from pulsar_predictor.cli import main as serve
from pydantic import ValidationError

from pulsar_core.settings import ServeSettings, TrainSettings


@pytest.mark.parametrize("field", ["city", "service_type"])
@pytest.mark.parametrize("value", ["*", ">", "teh.ran", "teh ran", "", "eco\n", "a*b", "é"])
def test_serve_settings_refuse_subject_wildcards_dots_and_spaces(field: str, value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ServeSettings(**{field: value})
    [problem] = caught.value.errors()
    assert problem["loc"] == (field,)
    assert "NATS subject" in problem["msg"] and "letters, digits" in problem["msg"]


def test_serve_settings_keep_ordinary_slugs() -> None:
    settings = ServeSettings(city="tehran", service_type="eco-plus_2")
    assert (settings.city, settings.service_type) == ("tehran", "eco-plus_2")


@pytest.mark.parametrize("subject", ["pulsar.retrain.*.eco", "pulsar.retrain.>", "pulsar..x",
                                     "pulsar.retrain.teh ran.eco"])
def test_a_retrain_subject_must_be_one_concrete_subject(subject: str) -> None:
    with pytest.raises(ValidationError, match="retrain_subject"):
        ServeSettings(retrain_subject=subject)
    assert ServeSettings(retrain_subject="pulsar.retrain.tehran.eco").retrain_subject


def test_pulsar_serve_refuses_a_wildcard_city_with_exit_2(capsys) -> None:
    args = build_parser().parse_args(["--city", "*"])
    with pytest.raises(ValidationError):  # before main() would start a server on it
        settings_from(args)
    assert serve(["--city", "*"]) == 2
    err = capsys.readouterr().err
    assert "--city (PULSAR_CITY)" in err and "wildcard" in err


@pytest.mark.parametrize("field", ["city_id", "service_type_id"])
@pytest.mark.parametrize("value", [2**62, -1, 2**31])
def test_train_settings_refuse_ids_out_of_range(field: str, value: int) -> None:
    with pytest.raises(ValidationError) as caught:
        TrainSettings(**{field: value})
    assert caught.value.errors()[0]["loc"] == (field,)
    assert TrainSettings(**{field: 2**31 - 1}).model_dump()[field] == 2**31 - 1
