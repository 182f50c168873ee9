"""A process kubelet for the real-control-plane tier: pods run as local processes.

It registers a Node and keeps it Ready (status heartbeat + Lease), runs every container of every
pod bound to it with the pod's `command`, `args` and `env` (the image is not pulled: the
project's virtual environment stands in for it, first on PATH), gives each pod its own 127.0.0.N
address, probes readiness for real (httpGet against that address) and reports phase, conditions,
container states and exit codes through `pods/status` — so the real Job and Deployment
controllers decide completion and availability.

What stands in for the pod sandbox, because there is no container runtime:
- network: `PULSAR_HOST=<pod IP>` makes Pulsar's servers bind the pod's own address;
- the service-account volume: a projected token (TokenRequest, as a kubelet asks for it), the
  cluster CA and the namespace are written to a folder named by `PULSAR_SERVICE_ACCOUNT_DIR`,
  with `KUBERNETES_SERVICE_HOST/PORT` pointing at the API server;
- HOME and TMPDIR are a folder per pod;
- the termination message file: `PULSAR_TERMINATION_MESSAGE_PATH` names a file per container
  (processes only; a container under podman falls back to its log tail). Its content (at most
  4 KiB), or with `terminationMessagePolicy: FallbackToLogsOnError` and an empty file after a
  failure the log's last 80 lines (at most 2 KiB), is `state.terminated.message`, as a kubelet
  reports it.
Probes run every min(periodSeconds, 1) s so tests do not wait on production periods.

Container mode (`images={pod image: local image}`): a container whose image is in the map runs
from that image under podman (runc) instead, with the pod's security settings (user, read-only
root, dropped capabilities; tests/support/images.py), its env as the kubelet resolved it, each
emptyDir as a tmpfs, the service-account files bind-mounted read-only at their real path, and
the host network, so `PULSAR_HOST` and the probes work as above. `shared_paths` are bind-mounted
read-only at the same path (test data the SurgeModel's URIs name), made readable to the pod's
fsGroup first as a kubelet does for a volume. Other images stay processes.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tests.support.envtest import stop_group
from tests.support.images import podman_run_argv
from tests.support.kubeapi import Api, ApiError

NODE = "pulsar-envtest-node"
SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Container:
    spec: dict[str, Any]
    process: subprocess.Popen[bytes] | None = None
    started_at: str = ""
    finished_at: str = ""
    exit_code: int | None = None
    restarts: int = 0
    ready: bool = False
    probe_failures: int = 0
    next_probe: float = 0.0
    restart_at: float = 0.0
    container_name: str = ""  # set when it runs from an image (container mode)
    message: str = ""  # state.terminated.message once it exited


@dataclass
class PodRun:
    namespace: str
    name: str
    uid: str
    ip: str
    folder: Path
    restart_policy: str
    containers: list[Container] = field(default_factory=list)
    started_at: str = field(default_factory=_now)
    reported: dict[str, Any] = field(default_factory=dict)


def _grant_group_read(root: Path, group: int) -> None:
    """Make `root` readable by the pod's fsGroup, as a kubelet does for a volume with fsGroup.

    pytest's temporary folders are 0700 root's; the pod runs as uid 10001 with that group.
    """
    for folder, _, files in os.walk(root):
        for path, extra in ((folder, stat.S_IRGRP | stat.S_IXGRP),
                            *((os.path.join(folder, name), stat.S_IRGRP) for name in files)):
            with contextlib.suppress(FileNotFoundError):
                info = os.lstat(path)
                if stat.S_ISLNK(info.st_mode):
                    continue
                if info.st_gid != group:
                    os.chown(path, -1, group)
                if info.st_mode & extra != extra:
                    os.chmod(path, stat.S_IMODE(info.st_mode) | extra)


class ProcessKubelet:
    """Plays the kubelet for one Node; `start()` runs it in a thread, `stop()` ends every pod."""

    def __init__(self, api: Api, workdir: Path, api_host: str, api_port: int, ca_file: Path,
                 node: str = NODE, bin_dir: Path | None = None,
                 stand_ins: dict[tuple[str, ...], list[str]] | None = None,
                 images: dict[str, str] | None = None,
                 shared_paths: list[Path] | None = None) -> None:
        self.api = api
        self.workdir = workdir
        self.node = node
        self.api_host, self.api_port, self.ca_file = api_host, api_port, ca_file
        self.bin_dir = bin_dir or Path(sys.executable).parent
        # argv prefix -> command run instead (benchmarks: a trainer that exits at once)
        self.stand_ins = stand_ins or {}
        # pod image -> local image it runs from (container mode); other images run as processes
        self.images = images or {}
        self.shared_paths = shared_paths or []
        self.runs: dict[str, PodRun] = {}
        # a block of pod IPs per process: two test sessions on one machine never collide
        first = 8 + (os.getpid() % 200) * 250
        self._addresses = (f"127.{i // 62500}.{i // 250 % 250}.{i % 250 + 2}"
                           for i in itertools.count(first))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._probe = httpx.Client(timeout=1.0)
        self.errors: list[str] = []

    # -- node ---------------------------------------------------------------------------------
    def _node_status(self) -> dict[str, Any]:
        now = _now()
        resources = {"cpu": "16", "memory": "64Gi", "pods": "250", "ephemeral-storage": "100Gi"}
        return {"capacity": resources, "allocatable": resources,
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                "message": "process kubelet is posting ready status",
                                "lastHeartbeatTime": now, "lastTransitionTime": now}],
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                              {"type": "Hostname", "address": self.node}],
                "nodeInfo": {"machineID": "envtest", "systemUUID": "envtest", "bootID": "1",
                             "kernelVersion": os.uname().release, "osImage": "process-kubelet",
                             "containerRuntimeVersion": "process://1", "kubeletVersion":
                             "v1.36.2", "kubeProxyVersion": "", "operatingSystem": "linux",
                             "architecture": "amd64"}}

    def register(self) -> None:
        with contextlib.suppress(ApiError):
            self.api.create({"apiVersion": "v1", "kind": "Node", "metadata": {
                "name": self.node, "labels": {"kubernetes.io/hostname": self.node,
                                              "kubernetes.io/os": "linux",
                                              "kubernetes.io/arch": "amd64"}}})
        self.api.patch("Node", self.node, {"status": self._node_status()}, sub="status")
        self._renew_lease()

    def _renew_lease(self) -> None:
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": self.node, "namespace": "kube-node-lease"},
                 "spec": {"holderIdentity": self.node, "leaseDurationSeconds": 40,
                          "renewTime": _micro_now()}}
        self.api.apply(lease, manager="process-kubelet")

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self.register()
        self._thread = threading.Thread(target=self._loop, name="process-kubelet", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for run in list(self.runs.values()):
            self._kill(run)
        self._probe.close()

    def _loop(self) -> None:
        last_lease = last_heartbeat = time.monotonic()
        while not self._stop.is_set():
            try:
                if time.monotonic() - last_lease > 10:
                    self._renew_lease()
                    last_lease = time.monotonic()
                if time.monotonic() - last_heartbeat > 30:
                    self.api.patch("Node", self.node, {"status": self._node_status()},
                                   sub="status")
                    last_heartbeat = time.monotonic()
                self._sync()
            except (ApiError, httpx.HTTPError) as error:
                self.errors.append(str(error))
            self._stop.wait(0.3)

    def _sync(self) -> None:
        pods = self.api.list("Pod", fieldSelector=f"spec.nodeName={self.node}")
        seen = set()
        for pod in pods:
            uid = pod["metadata"]["uid"]
            seen.add(uid)
            if pod["metadata"].get("deletionTimestamp"):
                self._finalize_delete(pod)
                continue
            run = self.runs.get(uid)
            if run is None and pod.get("status", {}).get("phase") in (None, "Pending"):
                run = self._start_pod(pod)
            if run is not None:
                self._tend(run, pod)
        for uid in set(self.runs) - seen:
            self._kill(self.runs.pop(uid))

    # -- pods ---------------------------------------------------------------------------------
    def _start_pod(self, pod: dict[str, Any]) -> PodRun:
        meta, spec = pod["metadata"], pod["spec"]
        run = PodRun(meta["namespace"], meta["name"], meta["uid"], next(self._addresses),
                     self.workdir / f"{meta['namespace']}-{meta['name']}",
                     spec.get("restartPolicy", "Always"))
        (run.folder / "tmp").mkdir(parents=True, exist_ok=True)
        self.runs[run.uid] = run
        for container in spec["containers"]:
            entry = Container(container)
            run.containers.append(entry)
            self._launch(run, pod, entry)
        return run

    def _launch(self, run: PodRun, pod: dict[str, Any], container: Container) -> None:
        spec = container.spec
        if spec.get("image") in self.images:
            self._launch_container(run, pod, container)
            return
        argv = [*spec.get("command", []), *spec.get("args", [])]
        env = self._environment(run, pod, spec)
        for prefix, replacement in self.stand_ins.items():
            if tuple(argv[:len(prefix)]) == prefix:
                argv = list(replacement)
        if argv and not os.path.isabs(argv[0]) and (self.bin_dir / argv[0]).exists():
            argv[0] = str(self.bin_dir / argv[0])
        termination = run.folder / f"{spec['name']}.termination-log"
        termination.write_bytes(b"")  # a restarted container starts with an empty one
        env["PULSAR_TERMINATION_MESSAGE_PATH"] = str(termination)
        log = (run.folder / f"{spec['name']}.log").open("ab")
        container.process = subprocess.Popen(argv, env=env, cwd=run.folder, stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True)
        container.started_at, container.exit_code, container.ready = _now(), None, False
        probe = spec.get("readinessProbe") or {}
        container.next_probe = time.monotonic() + min(float(probe.get("initialDelaySeconds",
                                                                      0)), 2.0)

    def _launch_container(self, run: PodRun, pod: dict[str, Any], container: Container) -> None:
        """Run the container from its local image under podman (see the module docstring)."""
        spec = container.spec
        env = self._environment(run, pod, spec)
        options = []
        account = env.pop("PULSAR_SERVICE_ACCOUNT_DIR", None)
        if account is not None:
            options += ["--volume", f"{account}:{SA_MOUNT}:ro"]
        group = (pod["spec"].get("securityContext") or {}).get("fsGroup")
        for path in self.shared_paths:
            if group is not None:
                _grant_group_read(path, int(group))
            options += ["--volume", f"{path}:{path}:ro"]
        # The image's own PATH, HOME, TMPDIR and LANG hold inside (HOME=TMPDIR=/tmp, the emptyDir).
        for name in ("PATH", "HOME", "TMPDIR", "LANG"):
            env.pop(name, None)
        # One line per variable in the env file; a multi-line value goes on the command line.
        env_file = run.folder / f"{spec['name']}.env"
        env_file.write_text("".join(f"{key}={value}\n" for key, value in env.items()
                                    if "\n" not in value))
        options += [f"--env={key}={value}" for key, value in env.items() if "\n" in value]
        container.container_name = f"pulsar-kubelet-{run.uid[:13]}-{spec['name']}"
        options += ["--env-file", str(env_file), "--name", container.container_name, "--replace"]
        argv = podman_run_argv(self.images[spec["image"]], pod["spec"], spec.get("args", []),
                               entrypoint=spec.get("command"), container=spec,
                               network="host", options=options)
        log = (run.folder / f"{spec['name']}.log").open("ab")
        container.process = subprocess.Popen(argv, cwd=run.folder, stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True)
        container.started_at, container.exit_code, container.ready = _now(), None, False
        probe = spec.get("readinessProbe") or {}
        container.next_probe = time.monotonic() + min(float(probe.get("initialDelaySeconds",
                                                                      0)), 2.0)

    def _environment(self, run: PodRun, pod: dict[str, Any],
                     spec: dict[str, Any]) -> dict[str, str]:
        env = {"PATH": f"{self.bin_dir}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
               "HOME": str(run.folder), "TMPDIR": str(run.folder / "tmp"),
               "HOSTNAME": run.name, "KUBERNETES_SERVICE_HOST": self.api_host,
               "KUBERNETES_SERVICE_PORT": str(self.api_port)}
        for source in spec.get("envFrom") or []:
            ref = source.get("configMapRef") or source.get("secretRef") or {}
            kind = "ConfigMap" if "configMapRef" in source else "Secret"
            env.update(self._data(kind, run.namespace, ref["name"]))
        for item in spec.get("env") or []:
            value = self._env_value(run, pod, item)
            if value is not None:
                env[item["name"]] = value
        if env.get("PULSAR_HOST", "0.0.0.0") in ("0.0.0.0", "::"):
            env["PULSAR_HOST"] = run.ip  # "all addresses" in a pod's own netns = its pod IP
        if self._mounts_service_account(pod, spec):
            env["PULSAR_SERVICE_ACCOUNT_DIR"] = str(self._service_account_files(run, pod))
        return env

    def _env_value(self, run: PodRun, pod: dict[str, Any], item: dict[str, Any]) -> str | None:
        if "value" in item:
            return str(item["value"])
        source = item.get("valueFrom") or {}
        if "fieldRef" in source:
            fields = {"metadata.name": run.name, "metadata.namespace": run.namespace,
                      "metadata.uid": run.uid, "spec.nodeName": self.node,
                      "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
                      "status.podIP": run.ip, "status.hostIP": "127.0.0.1"}
            return fields[source["fieldRef"]["fieldPath"]]
        for key, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
            if key in source:
                ref = source[key]
                return self._data(kind, run.namespace, ref["name"]).get(ref["key"])
        return None

    def _data(self, kind: str, namespace: str, name: str) -> dict[str, str]:
        found = self.api.get(kind, name, namespace) or {}
        data = found.get("data") or {}
        if kind == "Secret":
            return {key: base64.b64decode(value).decode() for key, value in data.items()}
        return dict(data)

    @staticmethod
    def _mounts_service_account(pod: dict[str, Any], spec: dict[str, Any]) -> bool:
        return any(mount.get("mountPath") == SA_MOUNT for mount in spec.get("volumeMounts")
                   or []) and pod["spec"].get("automountServiceAccountToken", True) is not False

    def _service_account_files(self, run: PodRun, pod: dict[str, Any]) -> Path:
        folder = run.folder / "serviceaccount"
        folder.mkdir(exist_ok=True)
        account = pod["spec"].get("serviceAccountName") or "default"
        (folder / "token").write_text(self.api.token_for(account, run.namespace))
        (folder / "ca.crt").write_bytes(self.ca_file.read_bytes())
        (folder / "namespace").write_text(run.namespace)
        return folder

    def _tend(self, run: PodRun, pod: dict[str, Any]) -> None:
        for container in run.containers:
            process = container.process
            if process is not None and process.poll() is not None and container.exit_code is None:
                container.exit_code, container.finished_at = process.returncode, _now()
                container.message = self._termination_message(run, container)
                container.ready = False
                if self._restarts(run, container):
                    container.restart_at = time.monotonic() + min(2 ** container.restarts, 10)
            if (container.exit_code is not None and container.restart_at
                    and time.monotonic() >= container.restart_at):
                container.restarts += 1
                container.restart_at = 0.0
                self._launch(run, pod, container)
            if container.exit_code is None and time.monotonic() >= container.next_probe:
                self._probe_readiness(run, container)
        self._report(run)

    @staticmethod
    def _termination_message(run: PodRun, container: Container) -> str:
        """What a kubelet reports as state.terminated.message: the termination message file
        (4 KiB at most), else after a failure with FallbackToLogsOnError the log's tail (the
        last 80 lines, 2 KiB at most)."""
        name = container.spec["name"]
        with contextlib.suppress(OSError):
            written = (run.folder / f"{name}.termination-log").read_bytes()[:4096]
            if written:
                return written.decode(errors="replace")
        if (container.exit_code == 0 or container.spec.get("terminationMessagePolicy")
                != "FallbackToLogsOnError"):
            return ""
        with contextlib.suppress(OSError):
            lines = (run.folder / f"{name}.log").read_bytes().splitlines(keepends=True)
            return b"".join(lines[-80:])[-2048:].decode(errors="replace")
        return ""

    @staticmethod
    def _restarts(run: PodRun, container: Container) -> bool:
        return run.restart_policy == "Always" or (
            run.restart_policy == "OnFailure" and container.exit_code != 0)

    def _probe_readiness(self, run: PodRun, container: Container) -> None:
        probe = container.spec.get("readinessProbe")
        if not probe:
            container.ready = True
            return
        container.next_probe = time.monotonic() + min(float(probe.get("periodSeconds", 10)),
                                                      1.0)
        get = probe.get("httpGet") or {}
        port = get.get("port")
        if isinstance(port, str):
            port = next(p["containerPort"] for p in container.spec.get("ports", [])
                        if p.get("name") == port)
        try:
            answer = self._probe.get(f"http://{run.ip}:{port}{get.get('path', '/')}")
            ok = 200 <= answer.status_code < 400
        except httpx.HTTPError:
            ok = False
        if ok:
            container.ready, container.probe_failures = True, 0
        else:
            container.probe_failures += 1
            if container.probe_failures >= int(probe.get("failureThreshold", 3)):
                container.ready = False

    def _container_status(self, container: Container) -> dict[str, Any]:
        spec = container.spec
        if container.exit_code is None:
            state: dict[str, Any] = {"running": {"startedAt": container.started_at}}
        elif container.restart_at:
            state = {"waiting": {"reason": "CrashLoopBackOff",
                                 "message": f"exited with {container.exit_code}"}}
        else:
            state = {"terminated": {
                "exitCode": container.exit_code,
                "reason": "Completed" if container.exit_code == 0 else "Error",
                "startedAt": container.started_at, "finishedAt": container.finished_at}}
            if container.message:
                state["terminated"]["message"] = container.message
        return {"name": spec["name"], "image": spec.get("image", ""), "imageID": "",
                "containerID": f"process://{container.process.pid if container.process else 0}",
                "ready": container.ready, "started": container.exit_code is None,
                "restartCount": container.restarts, "state": state}

    def _report(self, run: PodRun) -> None:
        done = [c.exit_code is not None and not c.restart_at for c in run.containers]
        if all(done):
            phase = "Succeeded" if all(c.exit_code == 0 for c in run.containers) else "Failed"
        else:
            phase = "Running"
        ready = phase == "Running" and all(c.ready for c in run.containers)
        flag = "True" if ready else "False"
        status = {
            "phase": phase, "podIP": run.ip, "podIPs": [{"ip": run.ip}],
            "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}], "startTime": run.started_at,
            "conditions": [{"type": kind, "status": value}
                           for kind, value in (("PodScheduled", "True"), ("Initialized", "True"),
                                               ("ContainersReady", flag), ("Ready", flag))],
            "containerStatuses": [self._container_status(c) for c in run.containers]}
        if status == run.reported:
            return
        stamped = {**status, "conditions": [{**c, "lastTransitionTime": _now()}
                                            for c in status["conditions"]]}
        self.api.patch("Pod", run.name, {"status": stamped}, run.namespace, sub="status")
        run.reported = status

    def _finalize_delete(self, pod: dict[str, Any]) -> None:
        """The kubelet's part of a graceful delete: stop the processes, then remove the pod."""
        run = self.runs.pop(pod["metadata"]["uid"], None)
        if run is not None:
            self._kill(run)
        meta = pod["metadata"]
        with contextlib.suppress(ApiError):
            self.api.delete("Pod", meta["name"], meta["namespace"], gracePeriodSeconds=0,
                            preconditions={"uid": meta["uid"]})

    @staticmethod
    def _kill(run: PodRun) -> None:
        for container in run.containers:
            if container.process is not None:
                stop_group(container.process, grace=10)
            if container.container_name:  # podman forwards SIGTERM; this catches a SIGKILL
                subprocess.run(["podman", "rm", "--force", "--time", "0",
                                container.container_name], capture_output=True, check=False)
