"""A real Kubernetes control plane for tests, following controller-runtime's envtest convention.

Binaries come from `KUBEBUILDER_ASSETS`, else they are unpacked (and checksum-verified) from
`../shared/envtest` into a cache outside the checkout; otherwise `AssetsMissing` says how to get
them. `ControlPlane` starts etcd + kube-apiserver (TLS, token and client-certificate auth,
Node,RBAC authorization) and optionally kube-controller-manager and kube-scheduler on free
127.0.0.1 ports, and stops them by PID.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import yaml

from pulsar_cli.demo_stack import free_port

if TYPE_CHECKING:
    from tests.support.kubeapi import Api

ROOT = Path(__file__).resolve().parents[2]
SHARED_ASSETS = ROOT.parent / "shared" / "envtest"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
ISSUER = "https://kubernetes.default.svc.cluster.local"
HOW_TO_GET = (
    "no envtest binaries: set KUBEBUILDER_ASSETS to a folder holding etcd, kube-apiserver, "
    "kube-controller-manager and kube-scheduler (e.g. `setup-envtest use 1.36 -p path` from "
    "controller-runtime), or place the project's ../shared/envtest beside the checkout")


class AssetsMissing(RuntimeError):
    """No control-plane binaries; the message says how to get them."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _unpack_shared(shared: Path, cache_root: Path) -> Path:
    """Unpack `<name>.xz` once into a cache keyed by the expected checksums; verify each."""
    sums_file = shared / "SHA256SUMS.unpacked"
    expected = dict(reversed(line.split()) for line in sums_file.read_text().splitlines()
                    if line.strip())
    target = cache_root / hashlib.sha256(sums_file.read_bytes()).hexdigest()[:16]
    target.mkdir(parents=True, exist_ok=True)
    for name, digest in expected.items():
        binary = target / name
        if binary.exists() and _sha256(binary) == digest:
            continue
        partial = target / f".{name}.partial-{os.getpid()}"
        with lzma.open(shared / f"{name}.xz") as source, partial.open("wb") as sink:
            shutil.copyfileobj(source, sink, 1 << 20)
        if _sha256(partial) != digest:
            partial.unlink()
            raise AssetsMissing(f"{shared / name}.xz does not unpack to its SHA256SUMS.unpacked")
        partial.chmod(0o755)
        partial.replace(binary)
    return target


def find_assets() -> Path:
    """The folder holding the binaries (envtest convention), unpacking the shared copy if needed."""
    configured = os.environ.get("KUBEBUILDER_ASSETS")
    if configured:
        folder = Path(configured)
        missing = [name for name in BINARIES if not (folder / name).exists()]
        if missing:
            raise AssetsMissing(f"KUBEBUILDER_ASSETS={folder} lacks {', '.join(missing)}; "
                                + HOW_TO_GET)
        return folder
    if (SHARED_ASSETS / "SHA256SUMS.unpacked").exists():
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        return _unpack_shared(SHARED_ASSETS, cache / "pulsar-envtest")
    raise AssetsMissing(HOW_TO_GET)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@dataclass(frozen=True)
class Pki:
    """A throw-away CA, the API server's serving cert, an admin client cert, the SA key pair."""

    folder: Path

    @classmethod
    def create(cls, folder: Path) -> Pki:
        folder.mkdir(parents=True, exist_ok=True)
        days = "2"
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
                 "-out", "ca.crt", "-days", days, "-subj", "/CN=pulsar-envtest-ca", cwd=folder)
        san = "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc"
        for name, subject, extension in (
                ("apiserver", "/CN=kube-apiserver", san),
                ("admin", "/O=system:masters/CN=pulsar-envtest-admin",
                 "extendedKeyUsage=clientAuth")):
            _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                     "-out", f"{name}.csr", "-subj", subject, cwd=folder)
            (folder / f"{name}.ext").write_text(extension + "\n")
            _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                     "-CAcreateserial", "-out", f"{name}.crt", "-days", days,
                     "-extfile", f"{name}.ext", cwd=folder)
        _openssl("genrsa", "-out", "sa.key", "2048", cwd=folder)
        _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=folder)
        return cls(folder)

    def __getattr__(self, name: str) -> Path:  # pki.ca_crt -> folder/ca.crt
        if name.startswith("_"):
            raise AttributeError(name)
        return self.folder / name.replace("_", ".")


@dataclass
class ControlPlane:
    """etcd + kube-apiserver (+ controllers, + scheduler) under one work folder."""

    assets: Path
    workdir: Path
    admission_plugins: tuple[str, ...] = ()
    audit_policy: dict[str, Any] | None = None  # written as the API server's audit policy
    admin_token: str = field(default_factory=lambda: secrets.token_hex(16))
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    port: int = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def audit_log(self) -> Path:
        return self.workdir / "audit.log"

    @property
    def pki(self) -> Pki:
        return Pki(self.workdir / "pki")

    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.workdir / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            [str(self.assets / name), *args], stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)

    def start(self, controllers: bool = True) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        pki = Pki.create(self.workdir / "pki")
        client, peer = free_port(), free_port()
        self._spawn("etcd", [
            "--data-dir", str(self.workdir / "etcd"), "--name", "envtest",
            "--listen-client-urls", f"http://127.0.0.1:{client}",
            "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"envtest=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync"])
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(f'{self.admin_token},pulsar-envtest-admin,1,"system:masters"\n')
        self.port = free_port()
        args = [
            f"--etcd-servers=http://127.0.0.1:{client}", "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={pki.apiserver_crt}", f"--tls-private-key-file={pki.apiserver_key}",
            f"--client-ca-file={pki.ca_crt}", f"--token-auth-file={tokens}",
            f"--service-account-issuer={ISSUER}", f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}", f"--api-audiences={ISSUER}",
            "--service-cluster-ip-range=10.96.0.0/16", "--authorization-mode=Node,RBAC",
            "--allow-privileged=false", "--endpoint-reconciler-type=none"]
        if self.audit_policy is not None:
            policy = self.workdir / "audit-policy.yaml"
            policy.write_text(yaml.safe_dump(self.audit_policy))
            args += [f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}",
                     "--audit-log-format=json", "--audit-log-maxsize=0"]
        if self.admission_plugins:
            args.append("--enable-admission-plugins=" + ",".join(self.admission_plugins))
        self._spawn("kube-apiserver", args)
        self._wait_ready()
        if controllers:
            kubeconfig = self.write_kubeconfig(self.workdir / "admin.kubeconfig")
            self._spawn("kube-controller-manager", [
                f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}", "--leader-elect=false",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_crt}", "--use-service-account-credentials",
                "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
                "--controllers=*,-nodeipam,-service-lb-controller,-cloud-node-lifecycle",
                "--concurrent-gc-syncs=5", "--node-monitor-grace-period=60s"])
            self._spawn("kube-scheduler", [
                f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}", "--leader-elect=false",
                "--bind-address=127.0.0.1", f"--secure-port={free_port()}"])

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        with self.client() as http:
            while time.monotonic() < deadline:
                self._check_alive()
                try:
                    if http.get("/readyz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        raise TimeoutError(f"kube-apiserver not ready in {timeout}s; see "
                           f"{self.workdir / 'kube-apiserver.log'}")

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}; see "
                                   f"{self.workdir / (name + '.log')}")

    def client(self, token: str | None = None) -> httpx.Client:
        """An HTTPS client that verifies the API server against the test CA."""
        return httpx.Client(base_url=self.url, timeout=30,
                            verify=ssl.create_default_context(cafile=str(self.pki.ca_crt)),
                            headers={"Authorization": f"Bearer {token or self.admin_token}"})

    def write_kubeconfig(self, path: Path, token: str | None = None) -> Path:
        """A kubeconfig for the admin (client certificate) or for a bearer token."""
        pki = self.pki
        user: dict[str, str] = ({"token": token} if token else
                                {"client-certificate": str(pki.admin_crt),
                                 "client-key": str(pki.admin_key)})
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "envtest",
            "clusters": [{"name": "envtest", "cluster": {
                "server": self.url, "certificate-authority": str(pki.ca_crt)}}],
            "users": [{"name": "envtest", "user": user}],
            "contexts": [{"name": "envtest",
                          "context": {"cluster": "envtest", "user": "envtest"}}]}
        path.write_text(yaml.safe_dump(config))
        return path

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            stop_group(self.processes.pop(name), grace=15)


def stop_group(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the process group started with `start_new_session`, SIGKILL after `grace` s."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextmanager
def running_plane(workdir: Path, namespace: str, controllers: bool = False,
                  audit_policy: dict[str, Any] | None = None
                  ) -> Iterator[tuple[ControlPlane, Api]]:
    """A fresh control plane with Pulsar's CRDs installed and `namespace` created."""
    from tests.support.kubeapi import Api, install_crds

    control = ControlPlane(find_assets(), workdir, audit_policy=audit_policy)
    control.start(controllers=controllers)
    try:
        with control.client() as http:
            api = Api(http)
            install_crds(api)
            api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
            yield control, api
    finally:
        control.stop()
