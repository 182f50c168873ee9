"""The docs match the code: generated references are current, every subject, setting and
condition/Event reason is documented, examples validate, and relative links resolve."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pulsar_operator.conditions import CONDITION_TYPES
from pulsar_operator.config import OperatorSettings

from pulsar_core import events
from pulsar_core.settings import ServeSettings, TrainSettings

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gen_docs.py"
REFERENCE = ROOT / "docs" / "reference"
OPERATOR = ROOT / "operator" / "pulsar_operator"
PACKAGES = ("pulsar_core", "pulsar_cli", "operator", "trainer_image", "predictor_image")


def _gen_docs() -> Any:
    spec = importlib.util.spec_from_file_location("gen_docs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_docs"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


gen_docs = _gen_docs()


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=120, check=False, cwd=ROOT)


def test_generated_docs_are_current():
    result = run_script("--check")
    assert result.returncode == 0, result.stderr


def test_check_names_stale_and_missing_files(tmp_path: Path):
    out = tmp_path / "reference"
    shutil.copytree(REFERENCE, out)
    assert run_script("--check", "--out", str(out)).returncode == 0
    (out / "nats.md").write_text((out / "nats.md").read_text().replace("JetStream", "Jetstream"))
    (out / "env.md").unlink()
    result = run_script("--check", "--out", str(out))
    assert result.returncode == 1
    assert f"{out / 'nats.md'}: stale" in result.stderr
    assert f"{out / 'env.md'}: missing" in result.stderr
    assert run_script("--out", str(out)).returncode == 0
    assert run_script("--check", "--out", str(out)).returncode == 0


# ---- SurgeModel reference -------------------------------------------------------------------

def _crd_version() -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "crds" / "surgemodels.forecasting.pulsar.dev.yaml").read_text())
    return next(v for v in crd["spec"]["versions"] if v.get("storage"))


def _fields(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, child in (schema.get("properties") or {}).items():
        yield f"{path}.{name}", child
        yield from _fields(child, f"{path}.{name}")
        yield from _fields(child.get("items") or {}, f"{path}.{name}[]")


def test_every_crd_field_is_documented_with_its_default_and_enum():
    page = (REFERENCE / "surgemodel.md").read_text()
    root = _crd_version()["schema"]["openAPIV3Schema"]["properties"]
    fields = [*_fields(root["spec"], "spec"), *_fields(root["status"], "status")]
    assert len(fields) > 40
    for path, schema in fields:
        row = next((line for line in page.splitlines() if line.startswith(f"| `{path}` |")), None)
        assert row is not None, f"{path} has no row in docs/reference/surgemodel.md"
        if "default" in schema:
            assert f"`{json.dumps(schema['default'])}`" in row, path
        for value in schema.get("enum", []):
            assert f"`{value}`" in row, f"{path}: enum value {value}"
        if schema.get("description"):
            assert " ".join(schema["description"].split())[:40] in row, path
    for title in ("spec.training", "spec.serving", "spec.promotion", "spec.data", "status",
                  "status.conditions[]"):
        assert f"### `{title}`" in page


def test_printer_columns_are_documented():
    page = (REFERENCE / "surgemodel.md").read_text()
    for column in _crd_version()["additionalPrinterColumns"]:
        assert f"| {column['name']} | {column['type']} | `{column['jsonPath']}` |" in page


# ---- NATS -----------------------------------------------------------------------------------

def _subject_literals(path: Path) -> list[str]:
    """String constants and f-string heads that look like Pulsar subjects."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and re.match(r"pulsar\.(signals|retrain|events)\b", node.value):
            found.append(node.value)
    return found


def test_every_subject_is_defined_once_and_documented():
    page = (REFERENCE / "nats.md").read_text()
    defined = [value for name, value in vars(events).items()
               if name.isupper() and isinstance(value, str) and value.startswith("pulsar.")]
    defined += [events.signals_subject("<city>", "<service>"),
                events.retrain_subject("<city>", "<service>"),
                events.dead_letter_subject("<source>")]
    documented = {item.subject for item in gen_docs.subjects()}
    for subject in defined:
        assert f"`{subject}`" in page, subject
    assert documented <= set(defined)
    strays = [f"{path.relative_to(ROOT)}: {literal}" for package in PACKAGES
              for path in (ROOT / package).rglob("*.py") if path.name != "events.py"
              for literal in _subject_literals(path)]
    assert strays == [], "subjects belong in pulsar_core/events.py only"


def test_publishers_and_subscribers_named_in_the_docs_use_the_subject():
    for item in gen_docs.subjects():
        for file in [*item.publishers, *item.subscribers]:
            if file.startswith("("):
                continue
            assert item.symbol in (ROOT / file).read_text(), f"{file} never uses {item.symbol}"


def test_examples_validate_against_their_models():
    from pulsar_predictor.feed import parse_message

    for item in gen_docs.subjects():
        assert item.examples, item.subject
        for example in item.examples:
            item.payload.model_validate(example)
    signals = next(s for s in gen_docs.subjects() if s.symbol == "signals_subject")
    rows, raw = parse_message(json.dumps(signals.examples).encode())
    assert len(rows) == len(signals.examples) and raw == []
    with pytest.raises(ValueError):
        events.RetrainRequest.model_validate({"reason": "x", "unknown": 1})


# ---- environment contracts ------------------------------------------------------------------

def _section(page: str, title: str) -> str:
    start = page.index(title)
    end = page.find("\n## ", start + 1)
    return page[start:end if end > 0 else None]


@pytest.mark.parametrize(("title", "settings"), [
    ("## Trainer", TrainSettings), ("## Predictor", ServeSettings),
    ("## Operator", OperatorSettings)])
def test_env_contracts_list_exactly_the_settings_variables(title: str, settings: type):
    section = _section((REFERENCE / "env.md").read_text(), title)
    documented = set(re.findall(r"^\| `(PULSAR_[A-Z0-9_]+)` \|", section, flags=re.M))
    assert documented == {f"PULSAR_{name.upper()}" for name in settings.model_fields}


def test_predictor_flags_in_the_docs_are_accepted_by_pulsar_serve():
    from pulsar_predictor.cli import build_parser, settings_from

    section = _section((REFERENCE / "env.md").read_text(), "## Predictor")
    args = build_parser().parse_args(["--port", "9000", "--model-version", "3"])
    assert settings_from(args).to_env()["PULSAR_PORT"] == "9000"
    for row in section.splitlines()[4:]:
        variable, flag = re.findall(r"`([^`]+)`", row)[:2]
        name = variable.removeprefix("PULSAR_").lower()
        assert flag == f"--{name.replace('_', '-')}", row


# ---- troubleshooting: every reason the operator can set -------------------------------------

def _strings(node: ast.expr) -> tuple[set[str], list[ast.expr]]:
    """Constants an expression can evaluate to, and the sub-expressions left unresolved."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}, []
    if isinstance(node, ast.Starred):  # *(reason, message) unpacked into the reason position
        return _strings(node.value)
    if isinstance(node, ast.Tuple):
        return _strings(node.elts[0])
    parts = ([node.body, node.orelse] if isinstance(node, ast.IfExp) else
             node.values if isinstance(node, ast.BoolOp) else None)
    if parts is None:
        return set(), [node]
    values, open_ = set(), []
    for part in parts:
        more, rest = _strings(part)
        values |= more
        open_ += rest
    return values, open_


def _calls(name: str, paths: Iterable[Path] | None = None) -> Iterator[tuple[Path, ast.Call]]:
    for path in sorted(OPERATOR.glob("*.py")) if paths is None else paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == name:
                yield path, node


def _argument(call: ast.Call, index: int, keyword: str) -> ast.expr | None:
    if len(call.args) > index:
        return call.args[index]
    return next((k.value for k in call.keywords if k.arg == keyword), None)


def _job_outcomes() -> set[str]:
    """First elements of job_outcome()'s returned tuples (names resolved within the function)."""
    tree = ast.parse((OPERATOR / "training.py").read_text())
    function = next(n for n in ast.walk(tree)
                    if isinstance(n, ast.FunctionDef) and n.name == "job_outcome")
    assigned = {t.id: n.value for n in ast.walk(function) if isinstance(n, ast.Assign)
                for t in n.targets if isinstance(t, ast.Name)}
    outcomes: set[str] = set()
    for node in ast.walk(function):
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple):
            first = node.value.elts[0]
            outcomes |= _strings(assigned.get(getattr(first, "id", ""), first))[0]
    return outcomes


def _camel_constants(module: str, function: str) -> set[str]:
    """CamelCase string constants inside one function: the reasons it can return."""
    tree = ast.parse((OPERATOR / module).read_text())
    body = next(n for n in ast.walk(tree)
                if isinstance(n, ast.FunctionDef) and n.name == function)
    return {n.value for n in ast.walk(body) if isinstance(n, ast.Constant)
            and isinstance(n.value, str) and re.fullmatch(r"[A-Z]+[a-z]+[A-Za-z]*", n.value)}


def _plan_reasons() -> set[str]:
    # The plan is pulsar_core's (shared with the trainer and the demo); the operator posts it.
    return {s for _, call in _calls("PromotionPlan", [ROOT / "pulsar_core" / "promotion.py"])
            for s in _strings(_argument(call, 3, "event_reason") or ast.Constant(""))[0] if s}


def _dynamic() -> dict[str, set[str]]:
    """Reason expressions that are not literals -> the values they can take."""
    # "Running" is excluded: a running Job makes Training True (reason = trigger kind) and
    # observe_job() returns before posting an Event for it.
    finished = _job_outcomes() - {"Running"}
    kinds = {s.capitalize() for _, call in _calls("Trigger") for s in _strings(call.args[0])[0]}
    return {
        "plan.event_reason": _plan_reasons(),
        "promotion.get('eventReason')": _plan_reasons(),
        "training.outcome": finished,  # 'NeverTrained', its fallback, is a literal
        "(training.trigger_kind or 'Idle').capitalize()": kinds | {"Idle"},
        "f'Training{outcome}'": {f"Training{o}" for o in finished},
        "degraded": _camel_constants("reconciler.py", "degraded_by"),
        "ready_reason": _camel_constants("reconciler.py", "_readiness"),
        "promoted_reason": _camel_constants("reconciler.py", "_promotion_state")
        | _plan_reasons(),
        "phase": _camel_constants("rollout.py", "_condition") - {"Rollout"},  # its type
    }


def _resolve(node: ast.expr, where: str) -> set[str]:
    values, unresolved = _strings(node)
    dynamic = _dynamic()
    for expression in unresolved:
        text = ast.unparse(expression)
        assert text in dynamic, (f"{where}: reason `{text}` is not a literal; teach _dynamic() in "
                                 "tests/test_docs.py its values and document them")
        values |= dynamic[text]
    return values


def test_known_dynamic_reasons_resolve_to_values():
    dynamic = _dynamic()
    assert {"Succeeded", "Failed"} <= dynamic["training.outcome"]
    assert {"Spec", "Retrain", "Schedule"} <= dynamic[
        "(training.trigger_kind or 'Idle').capitalize()"]
    assert {"GateFailed", "Promoted", "AwaitingApproval"} <= dynamic["plan.event_reason"]
    assert {"MLflowUnavailable", "NatsUnavailable"} <= dynamic["degraded"]


def test_every_condition_reason_is_documented_under_its_condition():
    page = (REFERENCE / "troubleshooting.md").read_text()
    seen: dict[str, set[str]] = {}
    for path, call in _calls("set_condition"):
        kind = _argument(call, 1, "kind")
        assert isinstance(kind, ast.Constant), f"{path.name}:{call.lineno}: condition type"
        where = f"{path.name}:{call.lineno}"
        seen.setdefault(kind.value, set()).update(
            _resolve(_argument(call, 3, "reason"), where))
    assert set(seen) == set(CONDITION_TYPES)
    for kind, reasons in seen.items():
        section = _section(page, f"## Condition `{kind}`")
        undocumented = sorted(r for r in reasons if f"| `{r}` |" not in section)
        assert undocumented == [], f"condition {kind}: document {undocumented} in troubleshooting"


def test_every_event_reason_is_documented_with_its_type():
    section = _section((REFERENCE / "troubleshooting.md").read_text(), "## Events")
    reasons = 0
    for path, call in _calls("Decision"):
        where = f"{path.name}:{call.lineno}"
        warning = _argument(call, 2, "warning")
        for reason in _resolve(_argument(call, 0, "reason"), where):
            reasons += 1
            row = next((line for line in section.splitlines()
                        if line.startswith(f"| `{reason}` |")), None)
            assert row is not None, f"{where}: Event reason {reason} is not documented"
            if warning is None or isinstance(warning, ast.Constant):
                expected = "Warning" if warning is not None and warning.value else "Normal"
                assert f"| {expected} |" in row, f"{reason} is a {expected} Event"
    assert reasons >= 12


# ---- links ----------------------------------------------------------------------------------

def test_every_relative_link_points_to_an_existing_file():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    broken = []
    for page in pages:
        prose = re.sub(r"```.*?```|`[^`\n]*`", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", prose):
            if re.match(r"[a-z]+://|#|mailto:", target):
                continue
            if not (page.parent / target.split("#")[0]).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []


# ---- README commands ------------------------------------------------------------------------

def _readme_commands() -> list[str]:
    """Shell lines of the README's code blocks, continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    text = "\n".join(blocks).replace("\\\n", " ")
    return [line.split("  #")[0].strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_readme_keeps_the_two_commands_at_the_top():
    assert (ROOT / "README.md").read_text().startswith("# Pulsar\n\n```bash\nmake demo ")
    assert {"make demo", "make test"} <= {line.split("#")[0].strip()
                                          for line in _readme_commands()}


def test_readme_commands_exist():
    from pulsar_cli.main import COMMANDS

    makefile = (ROOT / "Makefile").read_text()
    values = yaml.safe_load((ROOT / "charts" / "pulsar" / "values.yaml").read_text())
    checked = 0
    for line in _readme_commands():
        words = line.split()
        if words[0] == "make":
            assert re.search(rf"^{words[1]}:", makefile, flags=re.M), line
        elif words[0].endswith("pulsar") and words[1] != "--help":
            assert words[1] in COMMANDS, line
            command = words[1:3] if words[1] == "data" else words[1:2]
            helped = subprocess.run([sys.executable, "-m", "pulsar_cli.main", *command, "--help"],
                                    capture_output=True, text=True, timeout=60, cwd=ROOT)
            assert helped.returncode == 0, line
            for flag in re.findall(r"\s(--[a-z][a-z-]*)", line):
                assert flag in helped.stdout, f"{line}: pulsar {' '.join(command)} has no {flag}"
        for setting in re.findall(r"--set ([\w.]+)=", line):
            node: Any = values
            for part in setting.split("."):
                assert isinstance(node, dict) and part in node, f"{line}: no chart value {setting}"
                node = node[part]
        for path in re.findall(r"(?:^|\s|=)((?:[a-z_]+/)+[\w.-]+)", line):
            if path.split("/")[0] in {"operator", "trainer_image", "predictor_image", "charts",
                                      "examples", "bench", "scripts", "docs", "crds"}:
                assert (ROOT / path).exists(), f"{line}: {path} does not exist"
                checked += 1
    assert checked >= 8
