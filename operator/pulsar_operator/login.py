"""How the operator finds the API server: explicit URL, in-cluster service account, kubeconfig.

kopf's own `login_with_service_account` always dials `https://kubernetes.default.svc`; client-go
(and so kubectl in a pod) uses `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT`, which also
works where cluster DNS does not resolve that name. We do the same.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import kopf

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def in_cluster(account_dir: Path = SERVICE_ACCOUNT_DIR,
               environ: Mapping[str, str] = os.environ) -> kopf.ConnectionInfo | None:
    """The pod's service account (token, CA, namespace), or None outside a pod."""
    token_file = account_dir / "token"
    if not token_file.exists():
        return None
    host = environ.get("KUBERNETES_SERVICE_HOST")
    port = environ.get("KUBERNETES_SERVICE_PORT", "443")
    if host:
        server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    else:
        server = "https://kubernetes.default.svc"
    ca_file = account_dir / "ca.crt"
    namespace_file = account_dir / "namespace"
    return kopf.ConnectionInfo(
        server=server, token=token_file.read_text().strip() or None,
        ca_path=str(ca_file) if ca_file.exists() else None,
        default_namespace=namespace_file.read_text().strip() if namespace_file.exists()
        else None)


def connection_info(api_url: str | None, settings: kopf.OperatorSettings,
                    account_dir: Path = SERVICE_ACCOUNT_DIR) -> kopf.ConnectionInfo:
    """Explicit URL (kubectl proxy, tests) first, then the service account, then kubeconfig."""
    if api_url:
        return kopf.ConnectionInfo(server=api_url, insecure=True)
    try:
        info = in_cluster(account_dir) or kopf.login_with_kubeconfig(settings=settings)
    except FileNotFoundError as missing:  # KUBECONFIG names a file that is not there
        raise kopf.LoginError(f"KUBECONFIG names a missing file ({missing.filename}); fix it, "
                              "or unset it to use ~/.kube/config") from None
    if info is None:
        raise kopf.LoginError(
            "no Kubernetes credentials: run in a pod with a service account token "
            f"({account_dir}/token), set KUBECONFIG (or provide ~/.kube/config), "
            "or set PULSAR_KUBE_API_URL (kubectl proxy)")
    return info
