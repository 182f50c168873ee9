"""The model bundle: one MLflow pyfunc per run holding the Forecaster (both models), the feature
spec, the data window and the metrics.

The Forecaster's directory (JSON + torch state_dict + .npz, no pickles) travels as a pyfunc
artifact; `SurgeBundle` imports `pulsar_core` from the environment (the images install it).
`load_forecaster` is the predictor's fast path: resolve a version through the Registry,
download the artifacts, `Forecaster.load` them, no pyfunc wrapper in between.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

# Runtime, not TYPE_CHECKING: SurgeBundle subclasses PythonModel, and MLflow resolves
# predict()'s type hints (typing.get_type_hints) when the class is defined.
from mlflow.pyfunc import PythonModel, PythonModelContext

import pulsar_core
from pulsar_core.contract import SNAPSHOT_DTYPES, Col, ForecastCol
from pulsar_core.data.frames import snapshot_frame
from pulsar_core.registry import CHAMPION, LOGGED_MODEL_PREFIX, Registry, logged_model_location

if TYPE_CHECKING:
    from mlflow.models.model import ModelInfo

    from pulsar_core.evaluation import EvaluationReport
    from pulsar_core.forecaster import Forecaster

log = logging.getLogger(__name__)

ARTIFACT = "forecaster"
# MLflow "models from code": the bundle stores this script, not a pickled Python object.
MODEL_CODE = """from mlflow.models import set_model

from pulsar_core.bundle import SurgeBundle

set_model(SurgeBundle())
"""
BUNDLE_NAME = "bundle"
# What build_features reads; everything else in the contract is optional at serving time.
REQUIRED_INPUT = (
    Col.HEXAGON, Col.SERVICE_TYPE, Col.PERIOD_START, Col.DEMAND_SIGNAL, Col.SURGE_PERCENT,
    Col.SURGE_ABSOLUTE, Col.CUMULATIVE_SURGE_PERCENT, Col.CUMULATIVE_SURGE_ABSOLUTE,
)
OPTIONAL_INPUT = (
    Col.CITY_ID, Col.PERIOD_END, Col.ACCEPTANCE_RATE, Col.PRICE_CONVERSION, Col.SUPPLY_SIGNAL,
)


class IncompatibleBundle(RuntimeError):
    """The bundle was written in another major format than this pulsar_core reads."""


class UnsafeBundle(ValueError):
    """The bundle's MLmodel names a file outside its own download (`..`, an absolute path)."""


class BundleNotFound(LookupError):
    """No version (or alias) of the registered model matches the request."""


@dataclass(frozen=True)
class LoadedBundle:
    forecaster: Forecaster
    version: str
    run_id: str | None
    metadata: dict[str, Any]


@dataclass(frozen=True)
class LoggedBundle:
    model_uri: str  # models:/m-<id>, the source a registered version points at
    model_id: str | None
    run_id: str


def snapshot_input(frame: pd.DataFrame) -> pd.DataFrame:
    """Serving input -> the contract frame (core defaults; timestamps naive = UTC, or tz-aware),
    one row per (hexagon, service type, period), the last sent kept."""
    missing = [c.value for c in REQUIRED_INPUT if c not in frame.columns]
    if missing:
        raise ValueError(
            f"forecast input lacks column(s) {', '.join(missing)}: send recent snapshot rows "
            f"with {', '.join(c.value for c in REQUIRED_INPUT)}"
        )
    ordered = snapshot_frame(frame, typed=True).sort_values(
        [Col.HEXAGON, Col.SERVICE_TYPE, Col.PERIOD_START])
    return ordered.drop_duplicates([Col.HEXAGON, Col.SERVICE_TYPE, Col.PERIOD_START], keep="last")


def _naive(frame: pd.DataFrame) -> pd.DataFrame:
    """MLflow schemas hold timezone-naive datetimes only: UTC, tz dropped."""
    out = frame.copy()
    for column in out.columns:
        if isinstance(out[column].dtype, pd.DatetimeTZDtype):
            out[column] = out[column].dt.tz_convert("UTC").dt.tz_localize(None)
    return out


class SurgeBundle(PythonModel):
    """pyfunc: recent snapshot rows in, the forecast frame out (column `model` says who answered).

    params: `use_cnn` (bool, default True) — False asks ElasticNet / the baselines directly.
    """

    def load_context(self, context: PythonModelContext) -> None:
        from pulsar_core.forecaster import Forecaster

        self._forecaster = Forecaster.load(Path(context.artifacts[ARTIFACT]))
        self.last_cnn_error: str | None = None

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        use_cnn = bool((params or {}).get("use_cnn", True))
        result = self._forecaster.predict(snapshot_input(model_input), use_cnn=use_cnn)
        self.last_cnn_error = result.cnn_error
        if result.cnn_error:
            log.warning("bundle: CNN failed for this request, fell back: %s", result.cnn_error)
        return result.frame


def bundle_metadata(forecaster: Forecaster, report: EvaluationReport) -> dict[str, Any]:
    """What the MLmodel file records beside the artifacts: versions, spec, window, metrics."""
    meta = forecaster.metadata
    return {
        "pulsar_core_version": pulsar_core.__version__,
        "bundle_format_version": pulsar_core.BUNDLE_FORMAT_VERSION,
        "feature_spec": forecaster.spec.to_dict(),
        "served": {f"{h:g}": m for h, m in report.served.items()},
        "data_window": {k: meta.get(k) for k in ("data_start", "valid_start", "test_start",
                                                 "data_end", "rows")},
        "metrics": report.metrics(),
    }


def _signature() -> Any:
    """Input: snapshot columns (naive UTC datetimes); output: the forecast frame; use_cnn."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    kinds = {"int64": "long", "float64": "double", "datetime64[ns, UTC]": "datetime"}
    inputs = Schema([
        ColSpec(kinds[SNAPSHOT_DTYPES[c]], c.value, required=c in REQUIRED_INPUT)
        for c in (*REQUIRED_INPUT, *OPTIONAL_INPUT)
    ])
    text = {ForecastCol.DIRECTION, ForecastCol.MODEL, ForecastCol.EXPLANATION}
    stamps = {ForecastCol.ISSUED_FOR, ForecastCol.TARGET_PERIOD_START}
    whole = {ForecastCol.HEXAGON, ForecastCol.SERVICE_TYPE}
    outputs = Schema([
        ColSpec("string" if c in text else "datetime" if c in stamps
                else "long" if c in whole else "double", c.value)
        for c in ForecastCol
    ])
    params = ParamSchema([ParamSpec("use_cnn", "boolean", True)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def log_bundle(
    forecaster: Forecaster, report: EvaluationReport, example: pd.DataFrame,
) -> LoggedBundle:
    """Log the bundle into the active MLflow run; `example` = a few recent snapshot rows."""
    import mlflow

    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_bundle needs an active MLflow run (mlflow.start_run())")
    columns = [c.value for c in (*REQUIRED_INPUT, *OPTIONAL_INPUT)]
    input_example = _naive(snapshot_input(example)[columns])
    with tempfile.TemporaryDirectory(prefix="pulsar-bundle-") as tmp:
        forecaster.save(Path(tmp) / ARTIFACT)
        code = Path(tmp) / "surge_bundle.py"
        code.write_text(MODEL_CODE)
        info: ModelInfo = mlflow.pyfunc.log_model(
            name=BUNDLE_NAME,
            python_model=str(code),
            artifacts={ARTIFACT: str(Path(tmp) / ARTIFACT)},
            signature=_signature(),
            input_example=input_example,
            # Explicit: requirement inference would import and time the model (slow).
            pip_requirements=[f"pulsar-surge=={pulsar_core.__version__}"],
            metadata=bundle_metadata(forecaster, report),
        )
    return LoggedBundle(model_uri=info.model_uri, model_id=getattr(info, "model_id", None),
                        run_id=run.info.run_id)


def example_rows(snapshots: pd.DataFrame, series: int = 3) -> pd.DataFrame:
    """The last window of a few series: a realistic input example."""
    keys = snapshots[[Col.HEXAGON, Col.SERVICE_TYPE]].drop_duplicates().head(series)
    picked = snapshots.merge(keys, on=[Col.HEXAGON.value, Col.SERVICE_TYPE.value])
    return picked.groupby([Col.HEXAGON.value, Col.SERVICE_TYPE.value]).tail(16)


def _check_format(metadata: dict[str, Any], where: str) -> None:
    found = metadata.get("bundle_format_version")
    if found is None or int(found) != pulsar_core.BUNDLE_FORMAT_VERSION:
        raise IncompatibleBundle(
            f"{where} has bundle format {found!r}, this pulsar_core "
            f"{pulsar_core.__version__} reads format {pulsar_core.BUNDLE_FORMAT_VERSION}: "
            "retrain the model with this version, or run a matching image"
        )


def read_bundle(local_dir: Path, where: str = "bundle") -> tuple[Forecaster, dict[str, Any]]:
    """Forecaster + metadata from a downloaded pyfunc directory (MLmodel + artifacts/)."""
    from mlflow.models import Model

    from pulsar_core.forecaster import Forecaster

    model = Model.load(str(local_dir))
    metadata = dict(model.metadata or {})
    _check_format(metadata, where)
    pyfunc = model.flavors.get("python_function", {})
    artifact = (pyfunc.get("artifacts") or {}).get(ARTIFACT, {})
    relative = str(artifact.get("path", f"artifacts/{ARTIFACT}"))
    return Forecaster.load(_inside(Path(local_dir), relative, where)), metadata


def _inside(local_dir: Path, relative: str, where: str) -> Path:
    """`relative` under the download, refused when it (or a link in it) leads outside: an
    MLmodel written by anyone who can register a version must not choose which files load."""
    root = local_dir.resolve()
    target = (root / relative).resolve()
    if not target.is_relative_to(root):
        raise UnsafeBundle(
            f"{where}: MLmodel's python_function.artifacts.{ARTIFACT}.path {relative[:80]!r} "
            f"leads outside the downloaded bundle ({root}); a bundle's files must stay inside "
            "it: register a version logged by pulsar train (log_bundle)")
    return target


def _files_uri(tracking_uri: str, source: str, where: str) -> str:
    """A version's source as a URI that download_artifacts resolves with `tracking_uri`."""
    from mlflow.exceptions import MlflowException

    if not source.startswith("models:/"):
        return source  # runs:/, file:, mlflow-artifacts:, s3:... honour tracking_uri
    if not source.startswith(LOGGED_MODEL_PREFIX):
        raise BundleNotFound(f"{where} points at {source}, another registered version: "
                             "register the logged model (models:/m-<id>) itself")
    try:
        return logged_model_location(tracking_uri, source)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise BundleNotFound(f"{where} points at {source}, which {tracking_uri} does not hold "
                             f"({error.message}): register a model logged to this tracking "
                             "server") from error


def load_forecaster(
    tracking_uri: str, model_name: str, *, version: str | None = None, alias: str = CHAMPION,
    dst_dir: Path | None = None,
) -> LoadedBundle:
    """Load a registered version (pinned `version`, else `alias`) without the pyfunc wrapper."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    registry = Registry(tracking_uri)
    try:
        info = (registry.get_version(model_name, version) if version is not None
                else registry.get_alias(model_name, alias))
    except MlflowException as error:
        raise BundleNotFound(f"{model_name} version {version}: {error.message}") from error
    if info is None:
        raise BundleNotFound(f"{model_name} has no version with alias {alias!r}: train and "
                             "promote one, or pin a version")
    where = f"{model_name} version {info.version}"
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=_files_uri(tracking_uri, info.source, where),
        dst_path=str(dst_dir) if dst_dir else None, tracking_uri=tracking_uri,
    )
    forecaster, metadata = read_bundle(Path(local), where)
    return LoadedBundle(forecaster=forecaster, version=info.version, run_id=info.run_id,
                        metadata=metadata)
