"""Helpers for the reliability tests: fault-matrix rows, polling, direct AdmissionReview calls,
CPU and log checks, manifests, and RBAC as the chart ships it.

The faults themselves come from real servers in the local environment: ``localenv.faultproxy``
(an HTTP proxy in front of Prometheus, a TCP proxy in front of kube-apiserver) and
``localenv.chaoswebhook`` (an admission webhook the real API server calls, refusing on command).
"""

from __future__ import annotations

import contextlib
import json
import ssl
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml

from localenv.certs import CertificateAuthority
from localenv.controlplane import ControlPlane
from localenv.objects import fresh_slo_status
from localenv.processes import Process
from localenv.roles import WebhookProcess
from slogate.core.timetext import rfc3339

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def matrix_row(fault: str, expected: str) -> Callable[[F], F]:
    """Declare the fault-matrix row a test stands for (see ``reliability_matrix``)."""

    def mark(fn: F) -> F:
        fn.reliability_row = (fault, expected)  # type: ignore[attr-defined]
        return fn

    return mark


def matrix_rows_from(param: str) -> Callable[[F], F]:
    """One matrix row per value of the parameter ``param`` (its ``title`` and ``expected``)."""

    def mark(fn: F) -> F:
        fn.reliability_row_param = param  # type: ignore[attr-defined]
        return fn

    return mark


def eventually(check: Callable[[], T], timeout: float = 30, interval: float = 0.3) -> T:
    """Call ``check`` until it stops raising AssertionError; re-raise the last one on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(interval)


def log_problems(proc: Process) -> list[str]:
    """Lines of a slogate process log that show a crash or an unexpected exception."""
    text = proc.log_path.read_text(errors="replace")
    markers = (
        "Traceback (most recent call last)",
        "evaluation round failed",
        "evaluating its SLOs one by one",
        "admission failed",
    )
    return [line for line in text.splitlines() if any(m in line for m in markers)]


def apply(cp: ControlPlane, *docs: dict[str, Any], kubeconfig: Path | None = None) -> None:
    result = cp.kubectl(
        "apply",
        "-f",
        "-",
        input="\n---\n".join(json.dumps(d) for d in docs),
        kubeconfig=kubeconfig,
    )
    assert result.returncode == 0, result.stderr


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in status.get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


# --- direct AdmissionReviews, as the API server sends them ------------------------------------


def admission_review(
    old: dict[str, Any],
    new: dict[str, Any],
    *,
    user: str = "alice",
    groups: tuple[str, ...] = ("system:authenticated",),
    dry_run: bool = True,
    operation: str = "UPDATE",
) -> dict[str, Any]:
    meta = new["metadata"]
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "requestKind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "requestResource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "name": meta["name"],
            "namespace": meta["namespace"],
            "operation": operation,
            "userInfo": {"username": user, "groups": list(groups)},
            "object": new,
            "oldObject": old if operation == "UPDATE" else None,
            "dryRun": dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "UpdateOptions"},
        },
    }


def tls_context(ca: CertificateAuthority) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
    return ctx


def post_review(
    url: str, review: dict[str, Any], context: ssl.SSLContext, timeout: float = 5
) -> dict[str, Any]:
    """POST an AdmissionReview over a fresh TLS connection; the response's ``response``."""
    req = urllib.request.Request(
        url,
        data=json.dumps(review).encode(),
        headers={"content-type": "application/json", "connection": "close"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
        body = json.loads(resp.read())
    response: dict[str, Any] = body["response"]
    assert response["uid"] == review["request"]["uid"]
    return response


@contextlib.contextmanager
def webhook_configuration(cp: ControlPlane, config: dict[str, Any]) -> Iterator[None]:
    apply(cp, config)
    try:
        yield
    finally:
        cp.kubectl(
            "delete",
            "validatingwebhookconfiguration",
            config["metadata"]["name"],
            "--ignore-not-found",
        )


class StartingWebhook(WebhookProcess):
    """A webhook process whose constructor returns once the process is alive (``/healthz``),
    not once it is ready, so a test can watch what it does before its indexes are loaded."""

    def ready(self) -> bool:
        url = f"http://127.0.0.1:{self.metrics_port}/healthz"
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)

    def readyz(self) -> int:
        url = f"http://127.0.0.1:{self.metrics_port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)


# --- manifests ----------------------------------------------------------------------------------


def now_rfc3339(offset_s: float = 0) -> str:
    return rfc3339(time.time() + offset_s)


def slo_manifest(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    """An SLO; ``spec`` overrides the defaults (a ratio of e_total / t_total, target 99.9)."""
    body: dict[str, Any] = {
        "service": name,
        "target": 99.9,
        "indicator": {"ratio": {"errors": "e_total", "total": "t_total"}},
        **spec,
    }
    return {
        "apiVersion": "slogate.dev/v1alpha1",
        "kind": "ServiceLevelObjective",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def ratio_indicator(metric: str, job: str) -> dict[str, Any]:
    return {
        "ratio": {
            "errors": f'{metric}{{job="{job}",code="500"}}',
            "total": f'{metric}{{job="{job}"}}',
        }
    }


def written_status(remaining: float, risk: str, burn1h: float = 1.0) -> dict[str, Any]:
    """An SLO status as the controller writes it, fresh, for webhook-only tests."""
    return fresh_slo_status(remaining, risk, burn1h)


def set_slo_status(cp: ControlPlane, namespace: str, name: str, status: dict[str, Any]) -> None:
    body = [{"op": "add", "path": "/status", "value": status}]
    result = cp.kubectl(
        "patch",
        "slo",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=json",
        "-p",
        json.dumps(body),
    )
    assert result.returncode == 0, result.stderr


def remove_objects(cp: ControlPlane, namespace: str) -> None:
    """Delete this namespace's SLOs and gates (namespaces themselves never finish terminating
    here), so that controllers of later tests, which may watch every namespace, never meet
    them. Finalizers left by a controller that no longer runs are removed by hand."""
    for kind in ("slo", "gate"):
        cp.kubectl("delete", kind, "--all", "-n", namespace, "--wait=false")
    for item in cp.get_json("slo", "-n", namespace)["items"]:
        if item["metadata"].get("finalizers"):
            cp.kubectl(
                "patch",
                "slo",
                item["metadata"]["name"],
                "-n",
                namespace,
                "--type=merge",
                "-p",
                '{"metadata": {"finalizers": null}}',
            )


# --- RBAC as the chart ships it ------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
CHART_TEMPLATES = REPO / "charts" / "slogate" / "templates"
RBAC = "rbac.authorization.k8s.io/v1"


def _chart_cluster_roles(template: str) -> list[dict[str, Any]]:
    """The ClusterRoles of a chart template as shipped (template lines dropped; the names are
    the ones the template gives after ``{{ include ... }}`` is stripped)."""
    lines = (CHART_TEMPLATES / template).read_text().splitlines()
    text = "\n".join(line for line in lines if "{{" not in line and "}}" not in line)
    return [d for d in yaml.safe_load_all(text) if d and d.get("kind") == "ClusterRole"]


def chart_webhook_rules() -> list[dict[str, Any]]:
    """The webhook ClusterRole's rules exactly as the chart ships them."""
    rules: list[dict[str, Any]] = _chart_cluster_roles("rbac-webhook.yaml")[0]["rules"]
    assert any("subjectaccessreviews" in r["resources"] for r in rules)
    return rules


def chart_user_roles(prefix: str) -> list[dict[str, Any]]:
    """The ClusterRoles the chart aggregates into view/edit/admin, and the overrider role, named
    ``prefix-<n>`` (the chart's names are templated); their labels aggregate them as shipped."""
    roles = []
    for i, role in enumerate(_chart_cluster_roles("rbac-users.yaml")):
        meta = role.get("metadata") or {}
        labels = {k: v for k, v in (meta.get("labels") or {}).items() if "aggregate" in k}
        roles.append({**role, "metadata": {"name": f"{prefix}-{i}", "labels": labels}})
    return roles


def binding(kind: str, name: str, ns: str | None, role_kind: str, role: str, subjects: Any):  # type: ignore[no-untyped-def]
    meta: dict[str, Any] = {"name": name}
    if ns:
        meta["namespace"] = ns
    return {
        "apiVersion": RBAC,
        "kind": kind,
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
        "subjects": subjects,
    }


def user(name: str) -> dict[str, str]:
    return {"kind": "User", "name": name, "apiGroup": "rbac.authorization.k8s.io"}
