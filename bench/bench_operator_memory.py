"""The operator's memory before its first reconcile: its modules plus its registry client.

Each variant runs in a fresh process against a real `mlflow server` holding one model with a
champion: import the operator (handlers, cli), open its registry and make the calls of one
registry step (list versions, read the alias). Printed: peak RSS, the heavy packages that got
imported, and the ratio of this tree's REST client to MLflow's own client (the baseline).

Usage: python bench/bench_operator_memory.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pulsar_core.registry import Registry  # noqa: E402
from tests.support.services import running_mlflow_server  # noqa: E402

MODEL = "pulsar-bench-memory"
PROBE = """
import json, sys
import pulsar_operator.handlers, pulsar_operator.cli
from pulsar_core.registry import Registry
from pulsar_core.registry_rest import RestRegistry
registry = {client}(sys.argv[1])
versions, champion = registry.versions(sys.argv[2]), registry.get_alias(sys.argv[2])
assert versions and champion is not None
heavy = [m for m in ("mlflow", "pandas", "pyarrow", "scipy", "numpy") if m in sys.modules]
# VmHWM: this process image's own peak (ru_maxrss would carry the forking parent's over exec)
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({{"rss_mb": peak / 1024, "heavy": heavy}}))
"""


def measure(client: str, url: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(client=client), url, MODEL],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    with tempfile.TemporaryDirectory() as root, running_mlflow_server(Path(root)) as url:
        registry = Registry(url)
        version = registry.create_version(MODEL, "s3://bucket/model", run_id="", tags={})
        registry.set_alias(MODEL, version.version)
        base = measure("Registry", url)
        ours = measure("RestRegistry", url)
    print(f"MLflow's client (baseline): {base['rss_mb']:.1f} MB peak RSS, imports {base['heavy']}")
    print(f"REST client (this tree):    {ours['rss_mb']:.1f} MB peak RSS, imports {ours['heavy']}")
    print(f"ratio: {float(ours['rss_mb']) / float(base['rss_mb']):.2f}")


if __name__ == "__main__":
    main()
