"""Build the three Pulsar images and start them, without a Docker engine: buildah and podman.

- A local base image stands in for `python:3.11.<patch>-slim-bookworm` (no registry here):
  Debian bookworm from the Debian mirror via `mmdebstrap`, made to behave like the official slim
  image where the Dockerfiles rely on it. The difference, honestly: the official image carries
  CPython built from source in /usr/local (its own patch release, pip and setuptools from PyPI);
  this one carries Debian's `python3.11` package in /usr (3.11.2 with Debian's patches), with pip
  and setuptools installed from Debian's bundled wheels (what `ensurepip` would use) into
  /usr/local. Debian
  marks its Python externally managed (PEP 668); the marker is removed, so `pip` works outside a
  venv as it does in the official image, and `python` and `pip` are on PATH. Both are glibc 2.36
  and ABI cp311, so the same wheels install; what the build proves (COPY paths, constraints that
  resolve, the venv's layout, the entrypoints under the pod's security settings) holds for both.
  Built once, cached as a tarball under ~/.cache/pulsar-images (PULSAR_IMAGE_CACHE) and imported
  into the containers/storage that buildah and podman share.
- torch comes from the same local file the host's `pip install torch==2.13.0` takes (its
  find-links folder), served to the build as a one-package PEP 503 index, so `TORCH_INDEX` is the
  only thing a test build changes besides `BASE_IMAGE`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("PULSAR_IMAGE_CACHE", Path.home() / ".cache" / "pulsar-images"))
BASE_TAG = "localhost/pulsar-base:bookworm-py311"
# Bumped whenever the recipe below changes, so a stale cached tarball is rebuilt.
BASE_RECIPE = "1"
SUITE = "bookworm"
MIRRORS = ("deb http://deb.debian.org/debian bookworm main",
           "deb http://deb.debian.org/debian bookworm-updates main",
           "deb http://deb.debian.org/debian-security bookworm-security main")
# What python:3.11-slim-bookworm has beyond Debian's minbase (ca-certificates, netbase, tzdata),
# plus Python itself, ensurepip's wheels (python3-venv) and /usr/bin/python.
PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates", "netbase",
            "tzdata", "passwd")
# As debian:bookworm-slim (the official image's own base): no docs, man pages or locales.
DPKG_EXCLUDES = ("path-exclude=/usr/share/man/*", "path-exclude=/usr/share/doc/*",
                 "path-include=/usr/share/doc/*/copyright", "path-exclude=/usr/share/locale/*",
                 "path-exclude=/usr/share/info/*")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
TORCH = "torch==2.13.0"
TOOLS = ("buildah", "mmdebstrap", "podman", "runc")
# podman's default rlimits (nofile 1048576, and nproc) are more than a sandboxed root may set
# here ("error setting rlimit type 7: operation not permitted"); a kubelet leaves them to the
# runtime too, so any value that starts every container is as faithful as another.
ULIMITS = ("--ulimit", "nofile=16384:16384", "--ulimit", "nproc=16384:16384")


@dataclass(frozen=True)
class ImageSpec:
    """One image: its Dockerfile and the `pulsar` subcommands it must start."""

    name: str
    dockerfile: str
    commands: tuple[tuple[str, ...], ...]

    @property
    def tag(self) -> str:
        return f"localhost/pulsar-{self.name}:test"


IMAGES = (ImageSpec("operator", "operator/Dockerfile", (("operator",),)),
          ImageSpec("trainer", "trainer_image/Dockerfile", (("train",),)),
          ImageSpec("predictor", "predictor_image/Dockerfile", (("serve",), ("bridge",))))


def missing_prerequisites() -> str | None:
    """Why images cannot be built here, with the fix; None when they can."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return (f"{', '.join(missing)} not found: apt-get install -y --no-install-recommends "
                f"{' '.join(TOOLS)} (.ci/run does this as root)")
    if os.geteuid() != 0:
        return "building images needs root (buildah --isolation chroot, mmdebstrap, podman)"
    if find_torch_wheel() is None:
        return f"no local {TORCH} wheel found in pip's find-links (pip config list)"
    return None


def run(argv: Sequence[str], *, timeout: float = 1800, check: bool = True,
        capture: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise with its output tail, so a test shows why."""
    result = subprocess.run(list(argv), text=True, timeout=timeout,
                            stdout=subprocess.PIPE if capture else None,
                            stderr=subprocess.STDOUT if capture else None, check=False)
    if check and result.returncode != 0:
        tail = (result.stdout or "")[-6000:]
        raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}:\n{tail}")
    return result


def image_exists(tag: str) -> bool:
    return run(["buildah", "inspect", "--type", "image", tag], check=False).returncode == 0


def ensure_base(cache: Path = CACHE) -> str:
    """The local python slim stand-in, in the shared image store; built once, then cached."""
    tarball = cache / f"base-{SUITE}-r{BASE_RECIPE}.tar"
    if not tarball.exists():
        cache.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(".partial.tar")
        hooks = ['rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED',
                 # Debian disables ensurepip for its system Python; pip's own wheel (the one
                 # python3-venv seeds venvs with) installs pip and setuptools instead.
                 'chroot "$1" sh -c \'wheel=$(echo /usr/share/python-wheels/pip-*.whl)'
                 ' && python3 "$wheel/pip" install --no-index --no-cache-dir'
                 ' --find-links /usr/share/python-wheels pip setuptools\'',
                 'chroot "$1" python3 -m pip --version',
                 'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/root/.cache',
                 'find "$1"/usr "$1"/usr/local -name __pycache__ -prune -exec rm -rf {} +']
        argv = ["mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar",
                f"--include={','.join(PACKAGES)}",
                *(f"--dpkgopt={option}" for option in DPKG_EXCLUDES),
                *(f"--customize-hook={hook}" for hook in hooks),
                SUITE, str(partial), *MIRRORS]
        run(argv, timeout=900)
        partial.rename(tarball)
    stamp = cache / f"base-{SUITE}-r{BASE_RECIPE}.imported"
    if not image_exists(BASE_TAG) or not stamp.exists():
        changes = ['ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin',
                   "ENV LANG=C.UTF-8", 'CMD ["python3"]']
        run(["podman", "import", *(f"--change={change}" for change in changes),
             str(tarball), BASE_TAG], timeout=600)
        stamp.touch()
    return BASE_TAG


def find_torch_wheel() -> Path | None:
    """The torch 2.13.0 file that the host's pip takes (its find-links folders)."""
    folders = [entry for entry in os.environ.get("PIP_FIND_LINKS", "").split() if entry]
    config = subprocess.run(["python3", "-m", "pip", "config", "list"], text=True,
                            capture_output=True, check=False).stdout
    for line in config.splitlines():
        key, _, value = line.partition("=")
        if key.endswith("find-links"):
            folders += value.strip("'\"").split()
    version = TORCH.split("==")[1]
    for folder in dict.fromkeys(folders):
        path = Path(folder.removeprefix("file://"))
        wheels = sorted(path.glob(f"torch-{version}+cpu-cp311-*.whl")) if path.is_dir() else []
        if wheels:
            return wheels[0]
    return None


def torch_index(workdir: Path, wheel: Path) -> Path:
    """A one-package PEP 503 index (`<workdir>/simple/torch/`) holding `wheel` (hard-linked)."""
    package = workdir / "simple" / "torch"
    package.mkdir(parents=True, exist_ok=True)
    target = package / wheel.name
    if not target.exists():
        try:
            os.link(wheel, target)
        except OSError:
            shutil.copy2(wheel, target)
    (package / "index.html").write_text(
        f'<!DOCTYPE html><html><body><a href="{wheel.name}">{wheel.name}</a></body></html>\n')
    (workdir / "simple" / "index.html").write_text(
        '<!DOCTYPE html><html><body><a href="torch/">torch</a></body></html>\n')
    return workdir


INDEX_MOUNT = "/run/pulsar-torch-index"


def build(image: ImageSpec, *, base: str, index_dir: Path, tag: str | None = None,
          context: Path = ROOT, dockerfile: Path | None = None,
          extra: Iterable[str] = ()) -> float:
    """`buildah bud` one image from the local base and torch index; returns seconds taken."""
    started = time.monotonic()
    run(["buildah", "bud", "--isolation", "chroot", "--network", "host", "--layers",
         "--build-arg", f"BASE_IMAGE={base}",
         "--build-arg", f"TORCH_INDEX=file://{INDEX_MOUNT}/simple",
         # pip in the build trusts what the host trusts (a TLS-inspecting proxy's CA included).
         "--volume", f"{CA_BUNDLE}:{CA_BUNDLE}:ro",
         "--volume", f"{index_dir}:{INDEX_MOUNT}:ro",
         *extra,
         "-f", str(dockerfile or context / image.dockerfile), "-t", tag or image.tag,
         str(context)], timeout=1800)
    return time.monotonic() - started


def image_size(tag: str) -> int:
    """Bytes of the image's layers, uncompressed (what `podman images` shows)."""
    data = json.loads(run(["podman", "image", "inspect", tag]).stdout)
    return int(data[0]["Size"])


def config(tag: str) -> dict[str, Any]:
    data = json.loads(run(["podman", "image", "inspect", tag]).stdout)
    return dict(data[0].get("Config") or {})


def podman_run_argv(tag: str, pod: dict[str, Any], args: Sequence[str], *,
                    entrypoint: Sequence[str] | None = None,
                    container: dict[str, Any] | None = None, network: str = "none",
                    options: Sequence[str] = ()) -> list[str]:
    """`podman run` with the pod spec's own security settings and writable mounts.

    The uid/gid, read-only root filesystem, privilege escalation and dropped capabilities come
    from the pod's and the container's (default: the first) securityContext; every emptyDir
    volume the container mounts becomes a tmpfs at its mountPath, as a kubelet gives it.
    `options` go before the image (names, env files, bind mounts).
    """
    container = container if container is not None else pod["containers"][0]
    pod_security = pod.get("securityContext", {})
    security = {**pod_security, **container.get("securityContext", {})}
    argv = ["podman", "--runtime", "runc", "run", "--rm", "--network", network, *ULIMITS]
    if "runAsUser" in security:
        argv += ["--user", f"{security['runAsUser']}:{security.get('runAsGroup', 0)}"]
    if "fsGroup" in pod_security:
        argv += ["--group-add", str(pod_security["fsGroup"])]
    if security.get("readOnlyRootFilesystem"):
        argv += ["--read-only", "--read-only-tmpfs=false"]
    if security.get("allowPrivilegeEscalation") is False:
        argv += ["--security-opt", "no-new-privileges"]
    for capability in security.get("capabilities", {}).get("drop", []):
        argv += ["--cap-drop", capability]
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        if "emptyDir" in volumes.get(mount["name"], {}):
            argv += ["--tmpfs", f"{mount['mountPath']}:rw,mode=1777"]
    if entrypoint is not None:
        argv += ["--entrypoint", json.dumps(list(entrypoint))]
    return [*argv, *options, tag, *args]


def remove(tags: Iterable[str]) -> None:
    """Remove the images and every dangling layer the builds left (intermediates included)."""
    for tag in tags:
        run(["buildah", "rmi", "--force", tag], check=False)
    run(["buildah", "rmi", "--prune"], check=False)
    run(["buildah", "rm", "--all"], check=False)
