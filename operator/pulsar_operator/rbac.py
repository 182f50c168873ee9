"""The exact ClusterRole rules the operator needs: the one place the chart takes them from."""

from __future__ import annotations

from typing import Any

from pulsar_operator.names import GROUP, PLURAL

RULES: list[dict[str, Any]] = [
    # Exactly the calls tests/operator/test_rbac_coverage.py sees on the wire (kopf never GETs a
    # single object: it lists and watches); the few it cannot exercise are listed there.
    {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["list", "watch", "patch"]},
    {"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"], "verbs": ["patch"]},
    # Never called: OwnerReferencesPermissionEnforcement (OpenShift's default) requires it to
    # set blockOwnerDeletion on children owned by a SurgeModel.
    {"apiGroups": [GROUP], "resources": [f"{PLURAL}/finalizers"], "verbs": ["update"]},
    # a Job whose pods cannot start is deleted (pods and all) once its reason is recorded
    {"apiGroups": ["batch"], "resources": ["jobs"],
     "verbs": ["get", "list", "watch", "create", "delete"]},
    # read-only, and only for such a Job: the Job controller's FailedCreate Events, its pods'
    # waiting reasons (a bad image); and a failed Job's pods, for the trainer's own message
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    {"apiGroups": ["apps"], "resources": ["deployments"],
     "verbs": ["get", "list", "watch", "create", "patch"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch", "create",
                                                             "patch"]},
    # predictors with 2+ replicas get a PodDisruptionBudget (deleted when scaled below 2)
    {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"],
     "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    # predictors with spec.serving.autoscaling (deleted when it is removed)
    {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"],
     "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    # each model's trainer ServiceAccount (no permissions, no token), created once, owned
    {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "list"]},
    # kopf: CRD discovery and namespace watching (only with PULSAR_NAMESPACES).
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
     "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    # leader election among replicas (leader.py); the chart grants it in its own namespace only
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
     "verbs": ["get", "create", "update"]},
]


def cluster_role(name: str = "pulsar-operator") -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "pulsar"}},
            "rules": RULES}


if __name__ == "__main__":
    import yaml

    print(yaml.safe_dump(cluster_role(), sort_keys=False), end="")
