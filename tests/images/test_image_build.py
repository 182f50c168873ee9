"""The three images built for real (buildah) and started the way their pods start them (podman).

What this proves that tests/test_images.py (static) cannot: every COPY path exists, the pinned
constraints resolve, `pip check` is clean inside the final image, the venv sits where the
entrypoint expects it, and each `pulsar` entrypoint starts as uid 10001 under a read-only root
filesystem with only the pod's writable mounts — the security settings read from the pod specs
the operator builds (trainer Job, predictor Deployment) and from the chart (operator).

The base is a local stand-in for `python:3.11.<patch>-slim-bookworm` (no registry is reachable
here): Debian bookworm from the Debian mirror via mmdebstrap, with Debian's Python 3.11.2 in
/usr instead of the official image's source-built CPython in /usr/local, pip and setuptools
installed into /usr/local from Debian's bundled wheels, and Debian's "externally managed" marker
removed so pip works outside a venv as in the official image (tests/support/images.py says more).
torch 2.13.0+cpu comes from the same local file the host's `pip install torch==2.13.0` takes.
Everything else comes from PyPI over the build's host network, with the host's CA bundle.

Run alone with `make images`; `make test` (and so .ci/run) runs it too. Skips, saying why, where
buildah, mmdebstrap, podman or runc is missing or not running as root. Removes what it built
(images and layers, about 8 GB) unless PULSAR_IMAGES_KEEP=1, which keeps the layer cache for the
next run.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pulsar_operator.builders import build_predictor_deployment, build_training_job
from pulsar_operator.domain import Platform, SurgeModel, Trigger
from pulsar_operator.spec import parse_spec

from tests.support import images
from tests.support.images import IMAGES, ImageSpec

pytestmark = pytest.mark.images
log = logging.getLogger(__name__)


def _operator_pod() -> dict[str, Any]:
    """The operator's pod spec as the chart renders it with default values."""
    pytest.importorskip("helm_python", reason="pip install helm-python-sdk (the dev extra)")
    from tests.e2e.stack import render_chart

    deployment = next(doc for doc in render_chart({}) if doc["kind"] == "Deployment")
    return dict(deployment["spec"]["template"]["spec"])


def pod_for(image: ImageSpec) -> dict[str, Any]:
    """The pod spec that runs `image` in a cluster, as the operator (or the chart) writes it."""
    if image.name == "operator":
        return _operator_pod()
    model = SurgeModel("tehran-eco", "pulsar", "uid", parse_spec(
        {"city": "tehran", "serviceType": "eco", "data": {"uris": ["s3://b/"]}}),
        Platform("http://mlflow:5000"))
    if image.name == "trainer":
        return dict(build_training_job(model, Trigger("spec", "s"))["spec"]["template"]["spec"])
    return dict(build_predictor_deployment(model, "1")["spec"]["template"]["spec"])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, float]]:
    """Build the base (cached) and the three images; yield seconds per step; remove them."""
    reason = images.missing_prerequisites()
    if reason:
        pytest.skip(f"images not built: {reason}")
    wheel = images.find_torch_wheel()
    assert wheel is not None
    seconds: dict[str, float] = {}
    started = time.monotonic()
    base = images.ensure_base()
    seconds["base"] = time.monotonic() - started
    index = images.torch_index(tmp_path_factory.mktemp("torch-index"), wheel)
    try:
        for image in IMAGES:
            seconds[image.name] = images.build(image, base=base, index_dir=index)
            log.info("built %s in %.0f s (%d MB)", image.tag, seconds[image.name],
                     images.image_size(image.tag) // 10**6)
        yield seconds
    finally:
        if os.environ.get("PULSAR_IMAGES_KEEP") != "1":  # kept: the next run builds from cache
            images.remove(image.tag for image in IMAGES)


def _run(image: ImageSpec, pod: dict[str, Any], argv: list[str]) -> str:
    """Run `argv` (command + args) in `image` with `pod`'s security; return its output."""
    command = images.podman_run_argv(image.tag, pod, argv[1:], entrypoint=argv[:1])
    result = images.run(command, timeout=300, check=False)
    assert result.returncode == 0, f"{' '.join(command)} exited {result.returncode}:\n" \
                                   f"{result.stdout[-4000:]}"
    return result.stdout


PIP_CHECK = ("import glob, runpy, sys; "
             "sys.path.insert(0, sorted(glob.glob('/usr/share/python-wheels/pip-*.whl'))[-1]); "
             "sys.argv = ['pip', 'check']; runpy.run_module('pip', run_name='__main__')")


@pytest.mark.parametrize("image", IMAGES, ids=lambda image: image.name)
def test_pip_check_is_clean_in_the_final_image(built: dict[str, float],
                                               image: ImageSpec) -> None:
    """The final stage has no pip (by design): the base's pip wheel checks the venv from outside."""
    out = _run(image, pod_for(image), ["/opt/pulsar/bin/python", "-c", PIP_CHECK])
    assert "No broken requirements found." in out


@pytest.mark.parametrize(("image", "command"),
                         [(image, command) for image in IMAGES for command in image.commands],
                         ids=lambda value: value.name if isinstance(value, ImageSpec)
                         else "-".join(value))
def test_entrypoint_starts_with_the_pods_security(built: dict[str, float], image: ImageSpec,
                                                  command: tuple[str, ...]) -> None:
    pod = pod_for(image)
    container = pod["containers"][0]
    argv = [*container["command"], *container.get("args", [])]
    assert argv[0] == "pulsar", argv
    argv = [argv[0], *command, "--help"]
    out = _run(image, pod, argv)
    assert "usage" in out.lower(), out


@pytest.mark.parametrize("image", IMAGES, ids=lambda image: image.name)
def test_runs_as_the_pods_user_with_only_its_mounts_writable(built: dict[str, float],
                                                             image: ImageSpec) -> None:
    pod = pod_for(image)
    script = ("import json, os, tempfile\n"
              "def writable(folder):\n"
              "    try:\n"
              "        tempfile.NamedTemporaryFile(dir=folder).close()\n"
              "        return True\n"
              "    except OSError:\n"
              "        return False\n"
              "print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(),"
              " 'home': os.environ['HOME'], 'scratch': writable(os.environ['TMPDIR']),"
              " 'root': writable('/'), 'venv': writable('/opt/pulsar')}))\n")
    seen = json.loads(_run(image, pod, ["python", "-c", script]).strip().splitlines()[-1])
    security = {**pod["securityContext"], **pod["containers"][0]["securityContext"]}
    assert (seen["uid"], seen["gid"]) == (security["runAsUser"], security["runAsGroup"])
    assert security["readOnlyRootFilesystem"] and not seen["root"] and not seen["venv"]
    mounts = [mount["mountPath"] for mount in pod["containers"][0]["volumeMounts"]]
    assert seen["home"] in mounts and seen["scratch"], (seen, mounts)


IMPORT_ALL = """
import importlib, pkgutil, sys
failed = []
for top in sys.argv[1:]:
    package = importlib.import_module(top)
    for module in pkgutil.walk_packages(package.__path__, top + "."):
        try:
            importlib.import_module(module.name)
        except Exception as error:  # reported, then the run fails
            failed.append(f"{module.name}: {type(error).__name__}: {error}")
print("\\n".join(failed) or "all imported")
"""
# What runs in each image: the operator image carries all of pulsar_core but runs only what
# pulsar_operator imports (the ml extra, h3 and scipy, is not installed there); the predictor's
# pulsar_cli is the `pulsar` command alone (pulsar_cli.main).
PACKAGES = {"operator": ("pulsar_operator",),
            "trainer": ("pulsar_core", "pulsar_cli", "pulsar_trainer"),
            "predictor": ("pulsar_core", "pulsar_cli", "pulsar_predictor", "pulsar_bridge")}


@pytest.mark.parametrize("image", IMAGES, ids=lambda image: image.name)
def test_every_module_of_the_images_packages_imports(built: dict[str, float],
                                                     image: ImageSpec) -> None:
    """What the image ships runs: no module misses a dependency, nothing pruned is needed."""
    argv = ["python", "-c", IMPORT_ALL, *PACKAGES[image.name]]
    out = _run(image, pod_for(image), argv).strip().splitlines()
    missing = [line for line in out if "Error" in line]
    # Another image's package is absent by design (pulsar_cli.demo imports them all).
    foreign = [line for line in missing if "No module named 'pulsar_" in line]
    assert [line for line in missing if line not in foreign] == [], "\n".join(missing)


@pytest.mark.parametrize("image", IMAGES, ids=lambda image: image.name)
def test_each_image_has_the_pulsar_command_but_not_the_demo(built: dict[str, float],
                                                           image: ImageSpec) -> None:
    names = ("pulsar_cli.main", "pulsar_cli.demo", "pulsar_cli.report", "pulsar_core.pages.live")
    script = f"import importlib.util as u; print([n for n in {names!r} if u.find_spec(n)])"
    out = _run(image, pod_for(image), ["python", "-c", script]).strip().splitlines()[-1]
    assert out == "['pulsar_cli.main', 'pulsar_core.pages.live']", out


@pytest.mark.parametrize("image", [image for image in IMAGES if image.name != "operator"],
                         ids=lambda image: image.name)
def test_torch_is_the_cpu_build_and_computes(built: dict[str, float], image: ImageSpec) -> None:
    script = ("import torch; print(torch.__version__, float(torch.ones(3).sum()), "
              "torch.cuda.is_available())")
    out = _run(image, pod_for(image), ["python", "-c", script]).strip().splitlines()[-1]
    assert out == "2.13.0+cpu 3.0 False", out


def test_sizes_are_reported(built: dict[str, float]) -> None:
    """Sizes and build times go to the log (bench/bench_images.py prints them with ratios)."""
    for image in IMAGES:
        size = images.image_size(image.tag)
        assert size > 0
        log.info("%s: %.0f MB, built in %.0f s", image.tag, size / 1e6, built[image.name])
