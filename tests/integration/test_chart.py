"""The Helm chart: lint, render, server-side dry-run, least-privilege RBAC, and the real processes
running under exactly the RBAC the chart grants.

Rendering is `helm template` (no cluster); what the API server thinks of the result is asked of
the real kube-apiserver with `kubectl apply --dry-run=server`. cert-manager and
prometheus-operator are not installed in the test cluster, so minimal stand-in CRDs for their
kinds (schema: anything goes) let the dry-run check everything else in those manifests; the
PrometheusRule CRD is the Prometheus Operator's own (tools/crds.sh), since the controller writes
PrometheusRules and the chart renders one.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from localenv.binaries import tool
from localenv.certs import CertificateAuthority
from localenv.controlplane import ControlPlane
from localenv.processes import Process, free_port, wait_until
from tests.conftest import third_party_crds

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "slogate"
KUBE_VERSION = "v1.33.13"
RELEASE = "slogate"

CERT_MANAGER: dict[str, Any] = {"webhook": {"certificates": {"source": "cert-manager"}}}
PROMETHEUS_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
}
EVERYTHING_ON: dict[str, Any] = {
    "webhook": {
        "certificates": {"source": "cert-manager"},
        "clientCA": {"existingConfigMap": "apiserver-webhook-client-ca"},
        "networkPolicy": {
            "enabled": True,
            "apiServerCidrs": ["10.0.0.10/32", "fd00::/64"],
            "metricsFrom": [PROMETHEUS_PEER],
        },
    },
    "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "selfAlerts": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "prometheusRules": {
        "labels": {"release": "kube-prometheus-stack", "app.kubernetes.io/part-of": "slogate"},
        "intervalSeconds": 30,
        "resyncSeconds": 120,
    },
    "grafanaDashboard": {"enabled": True},
    "prometheus": {
        "bearerToken": {"existingSecret": "prometheus-token"},
        "ca": {"existingConfigMap": "prometheus-ca"},
        "headers": {"X-Scope-OrgID": "team-a"},
        "allowedUrls": ["http://prometheus.team-b:9090", "http://mimir-query-frontend.mimir:8080/"],
        "trustedUrls": ["http://thanos-query.monitoring:9090"],
        "tenantHeader": "X-Scope-OrgID",
    },
}
STRICT_VALUES = CHART / "values-strict.yaml"
# What values-strict.yaml leaves to the user: the API server's addresses and its client CA.
STRICT_SETS = (
    "--set",
    "webhook.networkPolicy.apiServerCidrs={10.0.0.10/32}",
    "--set",
    "webhook.clientCA.existingConfigMap=apiserver-webhook-client-ca",
)
STRICT = ("-f", str(STRICT_VALUES), *STRICT_SETS)

# --- helm ------------------------------------------------------------------------------------


@functools.cache
def _helm_home() -> dict[str, str]:
    # Helm keeps caches and repository config under $HOME; tests must not touch the user's.
    home = Path(tempfile.mkdtemp(prefix="slogate-helm-"))
    return {
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }


def helm(*args: str, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **_helm_home()}
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return subprocess.run(
        [tool("helm"), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def _values_file(values: dict[str, Any]) -> str:
    path = Path(_helm_home()["HELM_CONFIG_HOME"]).parent / f"values-{uuid.uuid4().hex}.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def template_text(
    values: dict[str, Any] | None = None,
    namespace: str = "slogate-system",
    extra: tuple[str, ...] = (),
) -> str:
    """``helm template``; ``extra`` comes before ``values``, e.g. ``-f values-strict.yaml``."""
    result = helm(
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
        *extra,
        "-f",
        _values_file(values or {}),
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@functools.cache
def _render_cached(
    values_json: str, namespace: str, extra: tuple[str, ...]
) -> tuple[dict[str, Any], ...]:
    text = template_text(json.loads(values_json), namespace, extra)
    return tuple(d for d in yaml.safe_load_all(text) if d)


def render(
    values: dict[str, Any] | None = None,
    namespace: str = "slogate-system",
    extra: tuple[str, ...] = (),
) -> list[Any]:
    """Rendered documents; copies, so a test may not change what another one sees."""
    docs = _render_cached(json.dumps(values or {}, sort_keys=True), namespace, extra)
    return json.loads(json.dumps(docs))  # type: ignore[no-any-return]


def refused(values: dict[str, Any], *extra: str) -> str:
    """``helm template`` that must fail: its error output."""
    result = helm(
        "template",
        RELEASE,
        str(CHART),
        "--kube-version",
        KUBE_VERSION,
        *extra,
        "-f",
        _values_file(values),
    )
    assert result.returncode != 0, "rendered, but should have been refused"
    return result.stderr


def only(docs: list[Any], kind: str, name: str | None = None) -> Any:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def controller_of(docs: list[Any]) -> Any:
    return only(docs, "Deployment", "slogate-controller")


def webhook_of(docs: list[Any]) -> Any:
    return only(docs, "Deployment", "slogate-webhook")


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]  # type: ignore[no-any-return]


def args_of(workload: dict[str, Any]) -> list[str]:
    return [str(a) for a in container(workload)["args"]]


def flag_values(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


# --- CRDs and chart metadata -------------------------------------------------------------------


def test_chart_crds_are_byte_copies_of_generated_crds() -> None:
    generated = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    assert generated, "crds/ is empty"
    in_chart = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert in_chart == sorted([*generated, "kopf-peering.yaml"])
    for name in generated:
        assert (CHART / "crds" / name).read_bytes() == (REPO / "crds" / name).read_bytes(), (
            f"charts/slogate/crds/{name} is stale: run `make crds`, then "
            "`cp crds/*.yaml charts/slogate/crds/`"
        )


def test_kopf_peering_crd_uses_the_group_kopf_looks_for() -> None:
    # kopf finds peering objects in kopf.dev (or legacy zalando.org) only; with a CRD in any
    # other group a controller started with --peering stays paused and never says why.
    from kopf._cogs.structs import references

    docs = list(yaml.safe_load_all((CHART / "crds" / "kopf-peering.yaml").read_text()))
    assert len(docs) == 1
    crd = docs[0]
    assert crd["spec"]["group"] == references.CLUSTER_PEERINGS_K.group == "kopf.dev"
    assert (crd["spec"]["scope"], crd["spec"]["names"]["plural"]) == (
        "Cluster",
        references.CLUSTER_PEERINGS_K.any_name,
    )
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1"
    assert "subresources" not in version  # kopf patches .status on the object itself
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert status == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def test_chart_app_version_is_the_package_version() -> None:
    import tomllib

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]


def _value_paths(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    # Maps that are one setting (resources, labels, security contexts) count as one key.
    whole = {"resources", "labels", "podSecurityContext", "containerSecurityContext"}
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in whole:
            yield from _value_paths(value, path + ".")
        else:
            yield path


def _documented_paths(readme: str) -> set[str]:
    """Keys in the README's values table; `.x` in a cell is relative to its first key."""
    table = readme.split("## Values", 1)[1]
    documented = set()
    for line in table.splitlines():
        if not line.startswith("| `"):
            continue
        keys = re.findall(r"`([\w.]+)`", line.split(" | ")[0])
        parent = keys[0].rsplit(".", 1)[0] if "." in keys[0] else ""
        documented |= {f"{parent}{k}" if k.startswith(".") else k for k in keys}
    return documented


def test_chart_readme_documents_every_value() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    documented = _documented_paths((CHART / "README.md").read_text())
    missing = sorted(set(_value_paths(values)) - documented)
    assert not missing, f"charts/slogate/README.md does not document {missing}"
    unknown = sorted(documented - set(_value_paths(values)))
    assert not unknown, f"charts/slogate/README.md documents values that do not exist: {unknown}"


# --- lint and schema ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "extra"),
    [
        ({}, ()),
        (CERT_MANAGER, ()),
        (EVERYTHING_ON, ()),
        ({"watchNamespaces": ["shop", "payments"]}, ()),
        ({}, STRICT),
    ],
    ids=["default", "cert-manager", "everything-on", "namespaced", "strict"],
)
def test_helm_lint_is_clean(values: dict[str, Any], extra: tuple[str, ...]) -> None:
    result = helm(
        "lint",
        str(CHART),
        "--strict",
        "--kube-version",
        KUBE_VERSION,
        *extra,
        "-f",
        _values_file(values),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"webhook": {"timeoutSeconds": 10}}, "/webhook/timeoutSeconds"),
        ({"webhook": {"timeoutSeconds": 0}}, "/webhook/timeoutSeconds"),
        ({"webhook": {"failurePolicy": "Sometimes"}}, "/webhook/failurePolicy"),
        ({"webhook": {"certificates": {"source": "vault"}}}, "/webhook/certificates/source"),
        ({"webhook": {"timeoutSecond": 3}}, "timeoutSecond"),  # a typo is not ignored
        ({"prometheus": {"url": "prometheus:9090"}}, "/prometheus/url"),
        ({"prometheus": {"url": "http://admin:secret@prometheus:9090"}}, "/prometheus/url"),
        ({"logFormat": "xml"}, "/logFormat"),
        ({"prometheus": {"allowedUrls": ["prom.team-b:9090"]}}, "/prometheus/allowedUrls/0"),
        (
            {"prometheus": {"allowedUrls": ["http://u:p@prom.team-b:9090"]}},
            "/prometheus/allowedUrls/0",
        ),
        ({"prometheus": {"trustedUrls": ["http://thanos/?x=1"]}}, "/prometheus/trustedUrls/0"),
        ({"prometheus": {"tenantHeader": "X Scope"}}, "/prometheus/tenantHeader"),
        ({"prometheus": {"maxResponseBytes": 100}}, "/prometheus/maxResponseBytes"),
        ({"prometheus": {"maxClients": 0}}, "/prometheus/maxClients"),
        ({"controller": {"evaluationDeadlineSeconds": 0}}, "/controller/evaluationDeadlineSeconds"),
        ({"webhook": {"callDeadlineSeconds": 0}}, "/webhook/callDeadlineSeconds"),
        ({"webhook": {"maxReviewBytes": 1024}}, "/webhook/maxReviewBytes"),
        # An empty list cannot mean "nobody": the webhook would fall back to its defaults.
        ({"webhook": {"clusterControllers": []}}, "/webhook/clusterControllers"),
        ({"webhook": {"clientCA": {"configMap": "ca"}}}, "configMap"),
        (
            {"webhook": {"networkPolicy": {"apiServerCidrs": ["10.0.0.10"]}}},
            "/webhook/networkPolicy/apiServerCidrs/0",
        ),
        (
            {"webhook": {"networkPolicy": {"metricsFrom": [{"pods": {}}]}}},
            "/webhook/networkPolicy/metricsFrom/0",
        ),
        ({"prometheusRules": {"intervalSeconds": 0}}, "/prometheusRules/intervalSeconds"),
        ({"prometheusRules": {"intervalSeconds": 1.5}}, "/prometheusRules/intervalSeconds"),
        ({"prometheusRules": {"resyncSeconds": 1}}, "/prometheusRules/resyncSeconds"),
        ({"prometheusRules": {"labels": {"release": 1}}}, "/prometheusRules/labels/release"),
        # A key the API server refuses would fail the write of every SLO's PrometheusRule.
        ({"prometheusRules": {"labels": {"team a": "x"}}}, "team a"),
        ({"selfAlerts": {"enable": True}}, "enable"),
    ],
    ids=[
        "timeout-10",
        "timeout-0",
        "failure-policy",
        "cert-source",
        "unknown-key",
        "url-without-scheme",
        "url-with-password",
        "log-format",
        "allowed-url-without-scheme",
        "allowed-url-with-password",
        "trusted-url-with-query",
        "tenant-header-not-a-token",
        "max-response-bytes-tiny",
        "max-clients-0",
        "evaluation-deadline-0",
        "call-deadline-0",
        "max-review-bytes-tiny",
        "no-cluster-controllers",
        "client-ca-typo",
        "cidr-without-prefix",
        "metrics-peer-unknown-key",
        "rule-interval-0",
        "rule-interval-fraction",
        "rule-resync-tiny",
        "rule-label-not-a-string",
        "rule-label-bad-key",
        "self-alerts-typo",
    ],
)
def test_values_schema_refuses_bad_values(values: dict[str, Any], complaint: str) -> None:
    stderr = refused(values)
    assert "values don't meet the specifications of the schema" in stderr, stderr
    assert complaint in stderr, stderr


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        (
            {
                "prometheus": {
                    "bearerToken": {"existingSecret": "t"},
                    "basicAuth": {"username": "u", "existingSecret": "p"},
                }
            },
            "use either bearerToken or basicAuth",
        ),
        ({"prometheus": {"basicAuth": {"username": "u"}}}, "needs both username"),
        (
            {"prometheus": {"ca": {"existingSecret": "a", "existingConfigMap": "b"}}},
            "not both",
        ),
        (
            {"webhook": {"timeoutSeconds": 2}},  # the default deadline, 2, is not below it
            "webhook.callDeadlineSeconds (2) must be below webhook.timeoutSeconds (2)",
        ),
        (
            {"webhook": {"callDeadlineSeconds": 2.5, "timeoutSeconds": 2}},
            "Lower callDeadlineSeconds, e.g. to 1.",
        ),
        (
            {"webhook": {"clientCA": {"existingSecret": "a", "existingConfigMap": "b"}}},
            "webhook.clientCA: set existingSecret or existingConfigMap, not both",
        ),
        (
            {"webhook": {"clientCA": {"required": True}}},
            "set webhook.clientCA.existingConfigMap",
        ),
        (
            {"webhook": {"networkPolicy": {"enabled": True}}},
            "webhook.networkPolicy.apiServerCidrs is empty: list the CIDRs",
        ),
    ],
    ids=[
        "bearer-and-basic",
        "basic-without-password",
        "ca-twice",
        "call-deadline-at-timeout",
        "call-deadline-past-timeout",
        "client-ca-twice",
        "client-ca-required",
        "network-policy-without-cidrs",
    ],
)
def test_conflicting_values_fail_with_a_clear_message(
    values: dict[str, Any], complaint: str
) -> None:
    stderr = refused(values)
    # The chart's own words (`fail`), not a schema error: the schema cannot compare fields.
    assert "values don't meet the specifications of the schema" not in stderr, stderr
    assert complaint in stderr, stderr


# --- the real API server -----------------------------------------------------------------------


def _stand_in_crd(group: str, kind: str, plural: str) -> dict[str, Any]:
    """A CRD that accepts any spec: enough for a dry-run of the chart's objects of that kind."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}", "labels": {"slogate.dev/test": "stand-in"}},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


STAND_INS = [
    _stand_in_crd("cert-manager.io", "Issuer", "issuers"),
    _stand_in_crd("cert-manager.io", "Certificate", "certificates"),
    _stand_in_crd("monitoring.coreos.com", "ServiceMonitor", "servicemonitors"),
]


PROMETHEUS_RULE_CRD = "prometheusrules.monitoring.coreos.com"


def install_chart_crds(cp: ControlPlane, stand_ins: bool = True) -> None:
    docs = [*STAND_INS] if stand_ins else []
    # --force-conflicts: other test modules may have created kopf's peering CRD (or the
    # PrometheusRule one) already.
    for path in (CHART / "crds", third_party_crds() / "monitoring.coreos.com_prometheusrules.yaml"):
        applied = cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
        assert applied.returncode == 0, applied.stderr
    if docs:
        text = "\n---\n".join(yaml.safe_dump(d) for d in docs)
        applied = cp.kubectl("apply", "--server-side", "-f", "-", input=text)
        assert applied.returncode == 0, applied.stderr
    names = ["clusterkopfpeerings.kopf.dev", PROMETHEUS_RULE_CRD]
    names += [d["metadata"]["name"] for d in docs]
    waited = cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", *names)
    assert waited.returncode == 0, waited.stderr


def fresh_namespace(cp: ControlPlane, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    created = cp.kubectl("create", "namespace", name)
    assert created.returncode == 0, created.stderr
    return name


@pytest.fixture(scope="module")
def chart_cluster(control_plane: ControlPlane) -> Iterator[ControlPlane]:
    found = control_plane.kubectl(
        "get", "crd", PROMETHEUS_RULE_CRD, "-o", "jsonpath={.metadata.deletionTimestamp}"
    )
    had_rules_crd = found.returncode == 0 and not found.stdout.strip()
    if found.returncode == 0 and found.stdout.strip():
        # Another module's teardown is still removing it: applying now would not stop that.
        gone = control_plane.kubectl(
            "wait", "--for=delete", f"crd/{PROMETHEUS_RULE_CRD}", "--timeout=60s"
        )
        assert gone.returncode == 0, gone.stderr
    install_chart_crds(control_plane)
    yield control_plane
    # Other modules' controllers run without the CRD, as most installs would: leave it as found.
    if not had_rules_crd:
        control_plane.kubectl("delete", "crd", PROMETHEUS_RULE_CRD, "--wait=false")


@pytest.mark.parametrize(
    ("values", "extra"),
    [
        ({}, ()),
        (CERT_MANAGER, ()),
        (EVERYTHING_ON, ()),
        ({"watchNamespaces": ["default", "kube-public"]}, ()),
        ({}, STRICT),
    ],
    ids=["default", "cert-manager", "everything-on", "namespaced", "strict"],
)
def test_rendered_chart_passes_server_side_dry_run(
    chart_cluster: ControlPlane, values: dict[str, Any], extra: tuple[str, ...]
) -> None:
    ns = fresh_namespace(chart_cluster, "chart")
    text = template_text(values, ns, extra)
    result = chart_cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=text)
    assert result.returncode == 0, result.stderr
    kinds = {line.split("/")[0] for line in result.stdout.splitlines()}
    expected = {
        "serviceaccount",
        "clusterrole.rbac.authorization.k8s.io",
        "clusterrolebinding.rbac.authorization.k8s.io",
        "service",
        "deployment.apps",
        "clusterkopfpeering.kopf.dev",
        "poddisruptionbudget.policy",
        "validatingwebhookconfiguration.admissionregistration.k8s.io",
    }
    if values is CERT_MANAGER or values is EVERYTHING_ON:
        expected |= {"issuer.cert-manager.io", "certificate.cert-manager.io"}
    else:
        expected.add("secret")
    if values is EVERYTHING_ON:
        expected |= {
            "servicemonitor.monitoring.coreos.com",
            "prometheusrule.monitoring.coreos.com",
            "configmap",
        }
    if values is EVERYTHING_ON or extra is STRICT:
        expected.add("networkpolicy.networking.k8s.io")
    assert expected <= kinds, result.stdout


def test_upgrade_keeps_the_chart_generated_certificate(chart_cluster: ControlPlane) -> None:
    """`lookup` finds the Secret of an earlier install: same certificate, same caBundle."""
    ns = fresh_namespace(chart_cluster, "chart-upgrade")
    first = only(render({}, ns), "Secret")
    # As an earlier `helm install` of this release leaves it.
    first["metadata"]["annotations"] = {
        "meta.helm.sh/release-name": RELEASE,
        "meta.helm.sh/release-namespace": ns,
    }
    applied = chart_cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(first))
    assert applied.returncode == 0, applied.stderr
    # --dry-run=server renders against the cluster (lookup works) and creates nothing.
    result = helm(
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        ns,
        "--dry-run=server",
        kubeconfig=chart_cluster.kubeconfig,
    )
    assert result.returncode == 0, result.stderr
    manifest, _, notes = result.stdout.partition("NOTES:")
    docs = [d for d in yaml.safe_load_all(manifest.split("MANIFEST:", 1)[1]) if d]
    again = only(docs, "Secret")
    assert again["data"] == first["data"]
    for webhook in only(docs, "ValidatingWebhookConfiguration")["webhooks"]:
        assert webhook["clientConfig"]["caBundle"] == first["data"]["ca.crt"]
    # NOTES.txt renders and tells the user what to do next.
    hints = (
        "kubectl get slo",
        "kubectl get gate",
        "--clusterrole=slogate-overrider",
        "security.md",
    )
    for hint in hints:
        assert hint in notes, notes


# --- RBAC ---------------------------------------------------------------------------------------

Rule = tuple[str, str, frozenset[str]]  # (apiGroup, resource, verbs)


def rules_of(role: dict[str, Any]) -> set[Rule]:
    """Every (group, resource) a role touches, with its verbs; one entry per pair."""
    merged: dict[tuple[str, str], set[str]] = {}
    for rule in role.get("rules") or []:
        assert "nonResourceURLs" not in rule, role["metadata"]["name"]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                merged.setdefault((group, resource), set()).update(rule["verbs"])
    return {(g, r, frozenset(v)) for (g, r), v in merged.items()}


def _rules(*spec: tuple[str, list[str], list[str]]) -> set[Rule]:
    return {(g, r, frozenset(verbs)) for g, resources, verbs in spec for r in resources}


SLO_GATE = ["servicelevelobjectives", "releasegates"]
# One PrometheusRule per SLO, re-listed every resync and never watched; only with
# prometheusRules.enabled.
PROMETHEUS_RULE_RULES = _rules(
    ("monitoring.coreos.com", ["prometheusrules"], ["get", "list", "create", "patch", "delete"])
)
CONTROLLER_RULES = PROMETHEUS_RULE_RULES | _rules(
    ("slogate.dev", SLO_GATE, ["get", "list", "watch", "patch"]),
    ("slogate.dev", [f"{r}/status" for r in SLO_GATE], ["get", "patch"]),
    ("", ["events"], ["create"]),
    ("kopf.dev", ["clusterkopfpeerings"], ["get", "list", "watch", "patch"]),
    ("apiextensions.k8s.io", ["customresourcedefinitions"], ["get", "list", "watch"]),
    ("", ["namespaces"], ["get", "list", "watch"]),
)
# No CustomResourceDefinitions or Namespaces: only kopf needed those, and the webhook runs none.
WEBHOOK_RULES = _rules(
    ("slogate.dev", SLO_GATE, ["get", "list", "watch"]),
    ("slogate.dev", ["releasegates/status"], ["get", "patch"]),
    ("apps", ["deployments", "replicasets"], ["get", "list", "watch"]),
    ("authorization.k8s.io", ["subjectaccessreviews"], ["create"]),
    ("", ["events"], ["create", "patch"]),
)


def roles(docs: list[Any]) -> list[Any]:
    return [d for d in docs if d["kind"] in ("ClusterRole", "Role")]


@pytest.mark.parametrize(
    "values",
    [{}, EVERYTHING_ON, {"watchNamespaces": ["shop"]}],
    ids=["default", "everything-on", "namespaced"],
)
def test_no_role_has_wildcards_or_touches_secrets(values: dict[str, Any]) -> None:
    found = roles(render(values))
    assert len(found) >= 4
    for role in found:
        name = role["metadata"]["name"]
        assert not role.get("aggregationRule"), name
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], f"{name}: wildcard in {key}: {rule}"
                assert not any("*" in item for item in rule[key]), f"{name}: {rule}"
            assert "secrets" not in rule["resources"], f"{name} may access Secrets: {rule}"
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), name


def test_controller_role_is_exactly_what_the_controller_calls() -> None:
    docs = render()
    assert rules_of(only(docs, "ClusterRole", "slogate-controller")) == CONTROLLER_RULES


def test_without_prometheus_rules_the_controller_may_not_touch_them() -> None:
    docs = render({"prometheusRules": {"enabled": False, "labels": {"release": "kps"}}})
    role = only(docs, "ClusterRole", "slogate-controller")
    assert rules_of(role) == CONTROLLER_RULES - PROMETHEUS_RULE_RULES
    args = args_of(controller_of(docs))
    assert flag_values(args, "--prometheus-rules") == ["off"]
    assert not [a for a in args if a.startswith("--prometheus-rule-")]


def test_webhook_role_is_exactly_what_the_webhook_calls() -> None:
    docs = render()
    assert rules_of(only(docs, "ClusterRole", "slogate-webhook")) == WEBHOOK_RULES


def test_namespaced_install_keeps_cluster_wide_peering() -> None:
    docs = render({"watchNamespaces": ["shop", "payments"]})
    assert rules_of(only(docs, "ClusterRole", "slogate-controller")) == CONTROLLER_RULES
    assert only(docs, "ClusterKopfPeering")["metadata"]["name"] == "slogate"
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding", "KopfPeering")]
    for workload in (controller_of(docs), webhook_of(docs)):
        assert flag_values(args_of(workload), "--namespace") == ["shop", "payments"]


def test_bindings_give_each_role_to_its_own_service_account() -> None:
    docs = render()
    for component in ("controller", "webhook"):
        binding = only(docs, "ClusterRoleBinding", f"slogate-{component}")
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": f"slogate-{component}",
        }
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": f"slogate-{component}",
                "namespace": "slogate-system",
            }
        ]
    for component in ("controller", "webhook"):
        workload = only(docs, "Deployment", f"slogate-{component}")
        assert workload["spec"]["template"]["spec"]["serviceAccountName"] == f"slogate-{component}"
    # Only the two operator roles are bound; the people roles are bound by the user.
    assert sorted(b["metadata"]["name"] for b in docs if b["kind"] == "ClusterRoleBinding") == [
        "slogate-controller",
        "slogate-webhook",
    ]


def test_overrider_role_grants_only_override_on_releasegates() -> None:
    docs = render()
    role = only(docs, "ClusterRole", "slogate-overrider")
    assert rules_of(role) == _rules(("slogate.dev", ["releasegates"], ["override"]))
    labels = role["metadata"].get("labels") or {}
    assert not [k for k in labels if k.startswith("rbac.authorization.k8s.io/aggregate-to")]
    assert not [
        d
        for d in render({"rbac": {"overriderRole": {"create": False}}})
        if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "slogate-overrider"
    ]


def test_user_roles_aggregate_reading_everywhere_and_writing_slos_only() -> None:
    docs = render()
    view = only(docs, "ClusterRole", "slogate-view")
    assert rules_of(view) == _rules(("slogate.dev", SLO_GATE, ["get", "list", "watch"]))
    assert {k for k, v in view["metadata"]["labels"].items() if v == "true"} == {
        f"rbac.authorization.k8s.io/aggregate-to-{r}" for r in ("view", "edit", "admin")
    }
    edit = only(docs, "ClusterRole", "slogate-edit")
    # Writing gates is nobody's by default: whoever a gate holds back must not delete it.
    assert rules_of(edit) == _rules(
        (
            "slogate.dev",
            ["servicelevelobjectives"],
            ["create", "update", "patch", "delete", "deletecollection"],
        )
    )
    off = render({"rbac": {"aggregateToDefaultRoles": False}})
    assert sorted(r["metadata"]["name"] for r in roles(off)) == [
        "slogate-controller",
        "slogate-overrider",
        "slogate-webhook",
    ]


# --- workloads ------------------------------------------------------------------------------------


@pytest.mark.parametrize("component", ["controller", "webhook"])
def test_pods_are_locked_down(component: str) -> None:
    workload = only(render(), "Deployment", f"slogate-{component}")
    pod = workload["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert isinstance(pod["securityContext"]["runAsUser"], int)
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = container(workload)
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    for section in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][section])
    assert c["image"] == "ghcr.io/slogate/slogate:0.1.0"
    assert not any("secretKeyRef" in json.dumps(e) for e in c.get("env") or [])
    assert "hostNetwork" not in pod and "hostPID" not in pod


def test_image_digest_wins_over_tag() -> None:
    digest = "sha256:" + "a" * 64
    docs = render({"image": {"repository": "registry.example/slogate", "digest": digest}})
    for workload in (controller_of(docs), webhook_of(docs)):
        assert container(workload)["image"] == f"registry.example/slogate@{digest}"


def test_controller_runs_the_contract_command_with_peering() -> None:
    docs = render()
    dep = controller_of(docs)
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    args = args_of(dep)
    assert args[0] == "controller"
    assert flag_values(args, "--prometheus-url") == [
        "http://prometheus-operated.monitoring.svc:9090"
    ]
    assert flag_values(args, "--metrics-port") == ["8080"]
    assert flag_values(args, "--liveness-port") == ["8081"]
    assert flag_values(args, "--peering") == ["slogate"]
    assert flag_values(args, "--log-format") == ["json"]
    # kopf pauses every replica that ties for the top priority, and replicas share their
    # arguments: a fixed --priority would stop them all. The controller picks a random one.
    assert "--priority" not in args
    c = container(dep)
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
        "metrics": 8080,
        "liveness": 8081,
    }
    peering = only(docs, "ClusterKopfPeering")
    assert peering["apiVersion"] == "kopf.dev/v1"
    assert peering["metadata"]["name"] == "slogate"


def test_prometheus_credentials_are_mounted_files_not_arguments() -> None:
    dep = controller_of(render(EVERYTHING_ON))
    args = args_of(dep)
    token = flag_values(args, "--prometheus-bearer-token-file")
    ca = flag_values(args, "--prometheus-ca-file")
    assert token == ["/etc/slogate/prometheus/bearer-token/token"]
    assert ca == ["/etc/slogate/prometheus/ca/ca.crt"]
    assert flag_values(args, "--prometheus-header") == ["X-Scope-OrgID=team-a"]
    assert flag_values(args, "--prometheus-trusted-url") == ["http://thanos-query.monitoring:9090"]
    assert flag_values(args, "--prometheus-timeout") == ["10"]
    pod = dep["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["prometheus-bearer-token"]["secret"]["secretName"] == "prometheus-token"
    assert volumes["prometheus-ca"]["configMap"]["name"] == "prometheus-ca"
    mounts = {m["name"]: m["mountPath"] for m in container(dep)["volumeMounts"]}
    assert token[0].startswith(mounts["prometheus-bearer-token"] + "/")
    assert ca[0].startswith(mounts["prometheus-ca"] + "/")

    basic = controller_of(
        render(
            {"prometheus": {"basicAuth": {"username": "slogate", "existingSecret": "prom-pass"}}}
        )
    )
    args = args_of(basic)
    assert flag_values(args, "--prometheus-basic-auth-username") == ["slogate"]
    assert flag_values(args, "--prometheus-basic-auth-password-file") == [
        "/etc/slogate/prometheus/basic-auth/password"
    ]
    assert "--prometheus-bearer-token-file" not in args


def test_webhook_is_highly_available_and_ready_only_with_its_indexes() -> None:
    docs = render()
    dep = webhook_of(docs)
    assert dep["spec"]["replicas"] >= 2
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    args = args_of(dep)
    assert args[0] == "webhook"
    assert flag_values(args, "--port") == ["8443"]
    assert flag_values(args, "--tls-cert-file") == ["/certs/tls.crt"]
    assert flag_values(args, "--tls-key-file") == ["/certs/tls.key"]
    assert flag_values(args, "--metrics-port") == ["8080"]
    assert "--stale-after" not in args
    c = container(dep)
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/certs")
    assert "subPath" not in mount  # a subPath mount never sees a renewed certificate
    pod = dep["spec"]["template"]["spec"]
    certs = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert certs["secret"]["secretName"] == "slogate-webhook-tls"
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    pdb = only(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == dep["spec"]["selector"]
    hard = webhook_of(render({"webhook": {"antiAffinity": "hard"}}))
    assert (
        "requiredDuringSchedulingIgnoredDuringExecution"
        in (hard["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"])
    )
    # Both roles judge staleness alike, so a gate's status and the webhook's answer agree.
    stale = render({"staleAfterSeconds": 600})
    for workload in (controller_of(stale), webhook_of(stale)):
        assert flag_values(args_of(workload), "--stale-after") == ["600"]


DEPLOYMENT_CONTROLLERS = [
    "system:serviceaccount:kube-system:deployment-controller",
    "system:serviceaccount:kube-system:namespace-controller",
    "system:serviceaccount:kube-system:generic-garbage-collector",
    "system:kube-controller-manager",
]
CUSTOM_LIMITS: dict[str, Any] = {
    "prometheus": {
        "allowedUrls": ["http://prometheus.team-b:9090", "http://mimir.mimir:8080/prometheus/"],
        "tenantHeader": "X-Scope-OrgID",
        "maxResponseBytes": 16777216,
        "maxClients": 64,
    },
    "controller": {"evaluationDeadlineSeconds": 45, "livenessAfterSeconds": 300},
    "webhook": {
        "timeoutSeconds": 2,
        "callDeadlineSeconds": 1.5,
        "maxReviewBytes": 4194304,
        "watchGraceSeconds": 10,
        "clusterControllers": ["system:serviceaccount:kube-system:deployment-controller"],
    },
}


def test_tenancy_and_admission_limits_reach_the_container_args() -> None:
    docs = render()
    controller, webhook = args_of(controller_of(docs)), args_of(webhook_of(docs))
    # Written out even at their defaults (int64 in the template: Helm's float64 would print
    # 8388608 as 8.388608e+06), so the pod spec says what runs.
    assert flag_values(controller, "--prometheus-max-response-bytes") == ["8388608"]
    assert flag_values(controller, "--prometheus-max-clients") == ["32"]
    assert flag_values(controller, "--evaluation-deadline") == ["120"]
    assert flag_values(controller, "--liveness-after") == ["120"]
    assert "--prometheus-allowed-url" not in controller
    assert "--prometheus-tenant-header" not in controller
    assert flag_values(webhook, "--call-deadline") == ["2"]
    assert flag_values(webhook, "--max-review-bytes") == ["8388608"]
    assert flag_values(webhook, "--watch-grace-seconds") == ["30"]
    assert flag_values(webhook, "--cluster-controller") == DEPLOYMENT_CONTROLLERS
    assert "--client-ca-file" not in webhook

    docs = render(CUSTOM_LIMITS)
    controller, webhook = args_of(controller_of(docs)), args_of(webhook_of(docs))
    assert flag_values(controller, "--prometheus-allowed-url") == [
        "http://prometheus.team-b:9090",
        "http://mimir.mimir:8080/prometheus/",
    ]
    assert flag_values(controller, "--prometheus-tenant-header") == ["X-Scope-OrgID"]
    assert flag_values(controller, "--prometheus-max-response-bytes") == ["16777216"]
    assert flag_values(controller, "--prometheus-max-clients") == ["64"]
    assert flag_values(controller, "--evaluation-deadline") == ["45"]
    assert flag_values(controller, "--liveness-after") == ["300"]
    assert flag_values(webhook, "--call-deadline") == ["1.5"]
    assert flag_values(webhook, "--max-review-bytes") == ["4194304"]
    assert flag_values(webhook, "--watch-grace-seconds") == ["10"]
    assert flag_values(webhook, "--cluster-controller") == DEPLOYMENT_CONTROLLERS[:1]
    hooks = only(docs, "ValidatingWebhookConfiguration")["webhooks"]
    assert {h["timeoutSeconds"] for h in hooks} == {2}


@pytest.mark.parametrize(
    ("values", "extra"),
    [({}, ()), (EVERYTHING_ON, ()), (CUSTOM_LIMITS, ()), ({}, STRICT)],
    ids=["default", "everything-on", "custom-limits", "strict"],
)
def test_the_command_line_takes_what_the_chart_passes(
    values: dict[str, Any], extra: tuple[str, ...]
) -> None:
    """The chart's arguments through slogate's own parser into the options each role runs
    with: a renamed flag or a value the CLI reads differently fails here, not in a pod."""
    from slogate import cli

    docs = render(values, extra=extra)
    parser = cli.build_parser()
    controller = cli.controller_options(parser.parse_args(args_of(controller_of(docs))))
    webhook = cli.webhook_options(parser.parse_args(args_of(webhook_of(docs))))
    prometheus = {**values.get("prometheus", {})}
    limits = {**values.get("controller", {})}
    admission = {**values.get("webhook", {})}
    assert controller.allowed_urls == tuple(prometheus.get("allowedUrls", ()))
    assert controller.trusted_urls == tuple(prometheus.get("trustedUrls", ()))
    assert controller.evaluator.tenant_header == (prometheus.get("tenantHeader") or None)
    assert controller.prometheus.max_response_bytes == prometheus.get("maxResponseBytes", 8388608)
    assert controller.max_clients == prometheus.get("maxClients", 32)
    assert controller.evaluator.unit_deadline_s == limits.get("evaluationDeadlineSeconds", 120)
    assert controller.liveness_after_s == limits.get("livenessAfterSeconds", 120)
    assert webhook.call_deadline_s == admission.get("callDeadlineSeconds", 2)
    assert webhook.max_review_bytes == admission.get("maxReviewBytes", 8388608)
    assert webhook.watch_grace_s == admission.get("watchGraceSeconds", 30)
    assert list(webhook.cluster_controllers) == admission.get(
        "clusterControllers", DEPLOYMENT_CONTROLLERS
    )
    rules = {**values.get("prometheusRules", {})}
    assert controller.prometheus_rules is rules.get("enabled", True)
    assert controller.rule_labels == rules.get("labels", {})
    assert controller.rule_interval_s == rules.get("intervalSeconds", 60)
    assert controller.rule_resync_s == rules.get("resyncSeconds", 300)
    with_ca = values is EVERYTHING_ON or extra is STRICT
    assert webhook.client_ca_file == ("/etc/slogate/client-ca/ca.crt" if with_ca else None)


def test_prometheus_rule_settings_reach_the_controller_args() -> None:
    args = args_of(controller_of(render()))
    assert flag_values(args, "--prometheus-rules") == ["on"]
    assert "--prometheus-rule-label" not in args
    assert flag_values(args, "--prometheus-rule-interval") == ["60"]
    assert flag_values(args, "--prometheus-rule-resync") == ["300"]
    args = args_of(controller_of(render(EVERYTHING_ON)))
    # One flag per label, sorted by key: the pod spec does not change between renders.
    assert flag_values(args, "--prometheus-rule-label") == [
        "app.kubernetes.io/part-of=slogate",
        "release=kube-prometheus-stack",
    ]
    assert flag_values(args, "--prometheus-rule-interval") == ["30"]
    assert flag_values(args, "--prometheus-rule-resync") == ["120"]


@pytest.mark.parametrize("source", ["existingConfigMap", "existingSecret"])
def test_client_ca_is_mounted_read_only_and_passed_to_the_webhook(source: str) -> None:
    dep = webhook_of(render({"webhook": {"clientCA": {source: "apiserver-ca", "key": "ca.pem"}}}))
    (path,) = flag_values(args_of(dep), "--client-ca-file")
    mount = next(m for m in container(dep)["volumeMounts"] if m["name"] == "client-ca")
    assert mount["readOnly"] is True
    assert "subPath" not in mount  # a subPath mount never sees an updated CA
    assert path == f"{mount['mountPath']}/ca.pem"
    volume = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "client-ca")
    items = [{"key": "ca.pem", "path": "ca.pem"}]
    if source == "existingConfigMap":
        assert volume["configMap"] == {"name": "apiserver-ca", "items": items}
    else:
        assert volume["secret"] == {"secretName": "apiserver-ca", "items": items}
    default = webhook_of(render())
    assert "--client-ca-file" not in args_of(default)
    assert "client-ca" not in {v["name"] for v in default["spec"]["template"]["spec"]["volumes"]}


def test_network_policy_admits_only_the_api_server_to_the_admission_port() -> None:
    assert not [d for d in render() if d["kind"] == "NetworkPolicy"]  # off by default
    values: dict[str, Any] = {
        "webhook": {
            "containerPort": 10250,
            "networkPolicy": {
                "enabled": True,
                "apiServerCidrs": ["10.0.0.10/32", "172.16.0.0/28"],
                "metricsFrom": [PROMETHEUS_PEER],
            },
        }
    }
    docs = render(values)
    spec = only(docs, "NetworkPolicy", "slogate-webhook")["spec"]
    selector = spec["podSelector"]["matchLabels"]
    webhook, controller = webhook_of(docs), controller_of(docs)
    assert selector.items() <= webhook["spec"]["template"]["metadata"]["labels"].items()
    assert not selector.items() <= controller["spec"]["template"]["metadata"]["labels"].items()
    assert spec["policyTypes"] == ["Ingress"]  # the webhook's own calls stay unrestricted
    admission, metrics = spec["ingress"]
    # The pod's ports (policies see traffic after the Service), not the Service's 443.
    assert admission == {
        "from": [{"ipBlock": {"cidr": "10.0.0.10/32"}}, {"ipBlock": {"cidr": "172.16.0.0/28"}}],
        "ports": [{"port": 10250, "protocol": "TCP"}],
    }
    assert metrics == {"from": [PROMETHEUS_PEER], "ports": [{"port": 8080, "protocol": "TCP"}]}
    assert {p["containerPort"] for p in container(webhook)["ports"]} == {10250, 8080}
    # Without metricsFrom no pod reaches port 8080 (kubelet's probes come from the node).
    values["webhook"]["networkPolicy"]["metricsFrom"] = []
    assert len(only(render(values), "NetworkPolicy")["spec"]["ingress"]) == 1


def test_network_policy_is_stored_by_the_api_server_as_rendered(
    chart_cluster: ControlPlane,
) -> None:
    ns = fresh_namespace(chart_cluster, "chart-netpol")
    policy = only(render(EVERYTHING_ON, ns), "NetworkPolicy")
    applied = chart_cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(policy))
    assert applied.returncode == 0, applied.stderr
    stored = chart_cluster.get_json("networkpolicy", "-n", ns, "slogate-webhook")
    assert stored["spec"] == policy["spec"]


# --- the strict profile -----------------------------------------------------------------------


def test_strict_profile_renders_only_once_the_cluster_specific_values_are_given() -> None:
    strict = ("-f", str(STRICT_VALUES))
    for extra, complaint in [
        (
            ("--set", "webhook.clientCA.existingConfigMap=apiserver-webhook-client-ca"),
            "holds 192.0.2.0/24, a documentation placeholder",
        ),
        (
            ("--set", "webhook.networkPolicy.apiServerCidrs={10.0.0.10/32}"),
            "webhook.clientCA.required is true",
        ),
    ]:
        stderr = refused({}, *strict, *extra)
        assert "values don't meet the specifications of the schema" not in stderr, stderr
        assert complaint in stderr, stderr


def test_strict_profile_fails_closed_and_answers_only_the_api_server() -> None:
    docs = render(extra=STRICT)
    hooks = only(docs, "ValidatingWebhookConfiguration")["webhooks"]
    assert [h["failurePolicy"] for h in hooks] == ["Fail"] * 3
    webhook = webhook_of(docs)
    assert webhook["spec"]["replicas"] == 3
    pod = webhook["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    anti = pod["affinity"]["podAntiAffinity"]
    assert list(anti) == ["requiredDuringSchedulingIgnoredDuringExecution"]
    assert anti["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"] == (
        "kubernetes.io/hostname"
    )
    assert only(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 2
    controller_pod = controller_of(docs)["spec"]["template"]["spec"]
    assert controller_pod["priorityClassName"] == "system-cluster-critical"
    policy = only(docs, "NetworkPolicy")["spec"]
    assert policy["ingress"][0]["from"] == [{"ipBlock": {"cidr": "10.0.0.10/32"}}]
    assert flag_values(args_of(webhook), "--client-ca-file") == ["/etc/slogate/client-ca/ca.crt"]
    volume = next(v for v in pod["volumes"] if v["name"] == "client-ca")
    assert volume["configMap"]["name"] == "apiserver-webhook-client-ca"


def test_services_route_to_their_pods() -> None:
    docs = render()
    for service in ("slogate-webhook", "slogate-controller"):
        workload = only(docs, "Deployment", service)
        svc = only(docs, "Service", service)
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= labels.items()
        assert workload["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]
        ports = {p["name"] for p in container(workload)["ports"]}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports
    webhook_svc = only(docs, "Service", "slogate-webhook")
    assert {(p["port"], p["targetPort"]) for p in webhook_svc["spec"]["ports"]} == {
        (443, "https"),
        (8080, "metrics"),
    }
    assert only(docs, "Service", "slogate-controller")["spec"]["clusterIP"] == "None"


# --- admission configuration and certificates -------------------------------------------------


ROUTES = [
    ("deployments.slogate.dev", "/validate-deployments", "apps", "v1", "deployments",
     ["CREATE", "UPDATE"]),
    ("servicelevelobjectives.slogate.dev", "/validate-servicelevelobjectives", "slogate.dev",
     "v1alpha1", "servicelevelobjectives", ["CREATE", "UPDATE", "DELETE"]),
    ("replicasets.slogate.dev", "/validate-replicasets", "apps", "v1", "replicasets",
     ["CREATE", "UPDATE"]),
]  # fmt: skip


def test_webhook_configuration_is_the_contract() -> None:
    docs = render({"webhook": {"excludedNamespaces": ["legacy"]}}, namespace="ops")
    config = only(docs, "ValidatingWebhookConfiguration")
    assert [h["name"] for h in config["webhooks"]] == [r[0] for r in ROUTES]
    for hook, (name, path, group, version, resource, operations) in zip(
        config["webhooks"], ROUTES, strict=True
    ):
        assert hook["clientConfig"]["service"] == {
            "namespace": "ops",
            "name": "slogate-webhook",
            "path": path,
            "port": 443,
        }, name
        assert hook["rules"] == [
            {
                "apiGroups": [group],
                "apiVersions": [version],
                "operations": operations,
                "resources": [resource],
                "scope": "Namespaced",
            }
        ], name
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["sideEffects"] == "NoneOnDryRun"
        assert hook["timeoutSeconds"] == 3
        assert hook["failurePolicy"] == "Ignore"
        assert hook["matchPolicy"] == "Equivalent"
        assert hook["namespaceSelector"] == {
            "matchExpressions": [
                {
                    "key": "kubernetes.io/metadata.name",
                    "operator": "NotIn",
                    "values": ["kube-system", "legacy", "ops"],
                }
            ]
        }, name
    strict = only(
        render(
            {"webhook": {"failurePolicy": "Fail", "timeoutSeconds": 2, "callDeadlineSeconds": 1.5}}
        ),
        "ValidatingWebhookConfiguration",
    )["webhooks"]
    assert [(h["failurePolicy"], h["timeoutSeconds"]) for h in strict] == [("Fail", 2)] * 3


def test_webhook_configuration_matches_the_local_environment_one() -> None:
    # The local environment registers the webhooks from localenv.webhookconfig, on the
    # routes of slogate.core.webhookroutes; both must send the API server the same requests,
    # each to the path its handler serves.
    webhookconfig = pytest.importorskip("localenv.webhookconfig")
    webhookroutes = pytest.importorskip("slogate.core.webhookroutes")
    ours = only(render(namespace="ops"), "ValidatingWebhookConfiguration")["webhooks"]
    theirs = webhookconfig.validating_webhook_configuration({}, operator_namespace="ops")
    theirs = theirs["webhooks"]
    assert len(ours) == len(theirs) == len(webhookroutes.ROUTES) == 3
    for mine, its, route in zip(ours, theirs, webhookroutes.ROUTES, strict=True):
        assert mine.pop("clientConfig")["service"]["path"] == route.path
        its.pop("clientConfig")
        assert mine == its
        assert mine["name"] == route.name
    assert ours[0]["name"] == webhookroutes.DEPLOYMENTS.name


def _load(pem_b64: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(pem_b64))


def test_chart_generated_certificate_serves_the_webhook_service() -> None:
    docs = render(namespace="ops")
    secret = only(docs, "Secret", "slogate-webhook-tls")
    assert secret["type"] == "kubernetes.io/tls"
    cert, ca = _load(secret["data"]["tls.crt"]), _load(secret["data"]["ca.crt"])
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) >= {
        "slogate-webhook.ops.svc",
        "slogate-webhook.ops.svc.cluster.local",
    }
    assert cert.issuer == ca.subject
    key = ca.public_key()
    assert isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
    if isinstance(key, rsa.RSAPublicKey):
        assert cert.signature_hash_algorithm is not None
        key.verify(
            cert.signature,
            cert.tbs_certificate_bytes,
            padding.PKCS1v15(),
            cert.signature_hash_algorithm,
        )
    assert cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=3000)
    hook = only(docs, "ValidatingWebhookConfiguration")
    for webhook in hook["webhooks"]:
        assert webhook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    assert not hook["metadata"].get("annotations")


def test_cert_manager_variant_issues_and_injects() -> None:
    docs = render(CERT_MANAGER, namespace="ops")
    assert not [d for d in docs if d["kind"] == "Secret"]
    issuer = only(docs, "Issuer")
    assert issuer["spec"] == {"selfSigned": {}}
    cert = only(docs, "Certificate")
    assert cert["spec"]["secretName"] == "slogate-webhook-tls"
    assert "slogate-webhook.ops.svc" in cert["spec"]["dnsNames"]
    assert cert["spec"]["issuerRef"]["name"] == issuer["metadata"]["name"]
    hook = only(docs, "ValidatingWebhookConfiguration")
    assert hook["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": f"ops/{cert['metadata']['name']}"
    }
    assert not [w for w in hook["webhooks"] if "caBundle" in w["clientConfig"]]
    own = render(
        {
            "webhook": {
                "certificates": {
                    "source": "cert-manager",
                    "certManager": {"issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}},
                }
            }
        }
    )
    assert not [d for d in own if d["kind"] == "Issuer"]
    assert only(own, "Certificate")["spec"]["issuerRef"] == {
        "name": "corp-ca",
        "kind": "ClusterIssuer",
    }


# --- monitoring -----------------------------------------------------------------------------------

CONTRACT_METRICS = {
    "slogate_slo_error_budget_remaining",
    "slogate_slo_burn_rate",
    "slogate_slo_risk",
    "slogate_slo_forecast_exhaustion_seconds",
    "slogate_slo_sli",
    "slogate_admission_decisions_total",
    "slogate_admission_duration_seconds_bucket",
    "slogate_prometheus_requests_total",
    "slogate_evaluation_duration_seconds_bucket",
}


def _exported_series_names() -> set[str]:
    from slogate import metrics

    names: set[str] = set()
    for family in metrics.REGISTRY.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_count", "_sum")}
        else:
            names.add(family.name)
    return names


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads((CHART / "dashboards" / "slogate.json").read_text())
    exprs = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            exprs.append(target["expr"])
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(var["query"]["query"])
    return exprs


def test_dashboard_shows_the_operators_metrics() -> None:
    used = {m for e in _dashboard_exprs() for m in re.findall(r"\bslogate_[a-z_]+", e)}
    assert used >= CONTRACT_METRICS, CONTRACT_METRICS - used
    assert used <= _exported_series_names(), used - _exported_series_names()


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    rules = []
    for i, expr in enumerate(_dashboard_exprs()):
        m = re.fullmatch(r"label_values\((.*), (\w+)\)", expr)
        promql = m.group(1) if m else expr  # Grafana's variable query around a selector
        promql = promql.replace("$__rate_interval", "5m")
        promql = re.sub(r"\$\{?\w+\}?", ".*", promql)
        rules.append({"record": f"slogate:dashboard_query_{i}", "expr": promql})
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [tool("promtool"), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_config_map_carries_the_sidecar_label_and_the_json() -> None:
    docs = render({"grafanaDashboard": {"enabled": True, "namespace": "grafana"}})
    cm = only(docs, "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "grafana"
    assert json.loads(cm["data"]["slogate.json"]) == json.loads(
        (CHART / "dashboards" / "slogate.json").read_text()
    )
    assert not [d for d in render() if d["kind"] in ("ConfigMap", "ServiceMonitor")]


def test_service_monitor_scrapes_both_roles() -> None:
    docs = render(EVERYTHING_ON)
    monitor = only(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    selector = monitor["spec"]["selector"]
    selected = []
    for svc in (d for d in docs if d["kind"] == "Service"):
        labels = svc["metadata"]["labels"]
        if selector["matchLabels"].items() <= labels.items() and all(
            labels.get(e["key"]) in e["values"] for e in selector["matchExpressions"]
        ):
            selected.append(svc["metadata"]["name"])
            assert "metrics" in {p["name"] for p in svc["spec"]["ports"]}
    assert sorted(selected) == ["slogate-controller", "slogate-webhook"]


SELF_ALERTS: dict[str, Any] = {
    "selfAlerts": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "serviceMonitor": {"enabled": True},
}
SEVERITIES = {
    "SlogateControllerDown": "page",
    "SlogateEvaluationsStale": "page",
    "SlogateWebhookDown": "page",
    "SlogateUnrecordedRefusals": "ticket",
    "SlogateEvaluationFailures": "ticket",
}


def self_alert_rules(namespace: str = "ops") -> list[dict[str, Any]]:
    """spec.groups of the self-alert PrometheusRule: a plain Prometheus rule file's groups."""
    docs = render(SELF_ALERTS, namespace)
    rule = only(docs, "PrometheusRule")
    groups: list[dict[str, Any]] = rule["spec"]["groups"]
    return groups


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *args], capture_output=True, text=True, check=False, timeout=60
    )


def test_self_alerts_are_off_by_default() -> None:
    for values in (
        {},
        {"serviceMonitor": {"enabled": True}},
        {**EVERYTHING_ON, "selfAlerts": {"enabled": False}},
    ):
        assert not [d for d in render(values) if d["kind"] == "PrometheusRule"]


def test_self_alerts_watch_this_release_and_tell_what_to_check() -> None:
    docs = render(SELF_ALERTS, namespace="ops")
    rule = only(docs, "PrometheusRule")
    meta = rule["metadata"]
    assert (meta["name"], meta["namespace"]) == ("slogate-self", "ops")
    assert meta["labels"]["release"] == "kube-prometheus-stack"
    assert meta["labels"]["app.kubernetes.io/instance"] == RELEASE
    (group,) = rule["spec"]["groups"]
    assert group["name"] == "slogate-self"
    alerts = {r["alert"]: r for r in group["rules"]}
    assert {name: r["labels"]["severity"] for name, r in alerts.items()} == SEVERITIES
    for name, r in alerts.items():
        assert 'namespace="ops"' in r["expr"], name
        assert r["annotations"]["summary"] and r["annotations"]["description"], name
        assert "kubectl -n ops logs deploy/slogate-" in r["annotations"]["description"], name
    # The Service the webhook alert names is the webhook's, and the ServiceMonitor scrapes it:
    # the Prometheus Operator's `service` target label is that Service's name.
    webhook_svc = only(docs, "Service", "slogate-webhook")
    assert f'service="{webhook_svc["metadata"]["name"]}"' in alerts["SlogateWebhookDown"]["expr"]
    selector = only(docs, "ServiceMonitor")["spec"]["selector"]
    assert selector["matchLabels"].items() <= webhook_svc["metadata"]["labels"].items()


def test_self_alerts_pass_promtool(tmp_path: Path) -> None:
    path = tmp_path / "self-alerts.yaml"
    path.write_text(yaml.safe_dump({"groups": self_alert_rules()}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout, result.stdout


def _expected(alert: str, groups: list[dict[str, Any]], **labels: str) -> dict[str, Any]:
    rule = next(r for r in groups[0]["rules"] if r["alert"] == alert)
    return {"exp_labels": {**rule["labels"], **labels}, "exp_annotations": rule["annotations"]}


def _series(metric: str, labels: str, values: str) -> dict[str, str]:
    return {"series": f"{metric}{{{labels}}}", "values": values}


def test_self_alerts_fire_when_slogate_fails_and_stay_quiet_when_it_works(
    tmp_path: Path,
) -> None:
    """`promtool test rules` against series labelled as the Prometheus Operator's scrape labels
    them: `namespace` and `service` are the target's, slogate's own `namespace` and `service`
    labels become `exported_namespace` and `exported_service`."""
    groups = self_alert_rules("ops")
    c0 = 'namespace="ops", service="slogate-controller", pod="c-0"'
    c1 = 'namespace="ops", service="slogate-controller", pod="c-1"'
    w0 = 'namespace="ops", service="slogate-webhook", pod="w-0"'
    w1 = 'namespace="ops", service="slogate-webhook", pod="w-1"'
    failed = f'{c0}, reason="PrometheusUnreachable"'
    active = [
        _series("slogate_controller_active", c0, "1x60"),
        _series("slogate_controller_active", c1, "0x60"),
    ]
    an_slo = _series(
        "slogate_slo_target",
        f'{c0}, exported_namespace="shop", name="checkout", exported_service="checkout"',
        "0.999x60",
    )
    webhook_up = [_series("up", w0, "1x60"), _series("up", w1, "1x60")]
    # Another release's controller, down: not this release's business.
    elsewhere = _series("slogate_controller_active", 'namespace="other"', "0x60")

    def firing(alert: str, at: str, **labels: str) -> dict[str, Any]:
        return {
            "eval_time": at,
            "alertname": alert,
            "exp_alerts": [_expected(alert, groups, **labels)],
        }

    def quiet(*alerts: str, at: str = "50m") -> list[dict[str, Any]]:
        return [{"eval_time": at, "alertname": a, "exp_alerts": []} for a in alerts]

    scenarios = [
        (  # one active replica evaluating, the webhook up, nothing pending or failing
            [
                *active,
                an_slo,
                *webhook_up,
                elsewhere,
                _series("slogate_evaluations_total", c0, "0+6x60"),
                _series("slogate_evaluations_total", c1, "0x60"),
                _series("slogate_webhook_unrecorded_refusals", w0, "0x60"),
                _series("slogate_evaluation_failures_total", failed, "3x60"),
            ],
            quiet(*SEVERITIES),
        ),
        (  # nothing of this release is scraped at all
            [elsewhere],
            [
                firing("SlogateControllerDown", "10m", namespace="ops"),
                firing("SlogateWebhookDown", "10m", namespace="ops", service="slogate-webhook"),
                *quiet("SlogateEvaluationsStale", at="10m"),
            ],
        ),
        (  # controller pods run but none is active (peering stuck); webhook pods not up
            [
                _series("slogate_controller_active", c0, "0x60"),
                _series("up", w0, "0x60"),
                _series("up", w1, "0x60"),
            ],
            [firing("SlogateControllerDown", "10m"), firing("SlogateWebhookDown", "10m")],
        ),
        (  # an active controller whose evaluations stopped, refusals piling up, SLOs failing
            [
                *active,
                an_slo,
                *webhook_up,
                _series("slogate_evaluations_total", c0, "40x60"),
                _series("slogate_webhook_unrecorded_refusals", w0, "0 0 4x60"),
                _series("slogate_evaluation_failures_total", failed, "0+2x60"),
            ],
            [
                *quiet(*SEVERITIES, at="5m"),
                firing("SlogateEvaluationsStale", "25m"),
                firing("SlogateUnrecordedRefusals", "10m"),
                firing("SlogateEvaluationFailures", "50m"),
                *quiet("SlogateControllerDown", "SlogateWebhookDown"),
            ],
        ),
        (  # an active controller with no SLOs to evaluate: nothing is wrong
            [*active, *webhook_up, _series("slogate_evaluations_total", c0, "0x60")],
            quiet(*SEVERITIES),
        ),
    ]
    rules = tmp_path / "self-alerts.yaml"
    rules.write_text(yaml.safe_dump({"groups": groups}))
    tests = [
        {"interval": "1m", "input_series": series, "alert_rule_test": checks}
        for series, checks in scenarios
    ]
    spec = tmp_path / "self-alerts-test.yaml"
    spec.write_text(
        yaml.safe_dump({"rule_files": [rules.name], "evaluation_interval": "1m", "tests": tests})
    )
    result = promtool("test", "rules", str(spec))
    assert result.returncode == 0, result.stdout + result.stderr


# --- the real processes under the chart's RBAC --------------------------------------------------
#
# A control plane of its own: a cluster-wide controller would otherwise evaluate (and write the
# status of) the SLOs other test modules are measuring.

RBAC_NS = "slogate-system"


@pytest.fixture(scope="module")
def isolated() -> Iterator[ControlPlane]:
    with ControlPlane() as cp:
        install_chart_crds(cp, stand_ins=False)
        cp.kubectl("create", "namespace", RBAC_NS)
        yield cp


def service_account_kubeconfig(cp: ControlPlane, name: str) -> Path:
    """A kubeconfig that the API server authenticates as the chart's ServiceAccount."""
    user = f"system:serviceaccount:{RBAC_NS}:{name}"
    groups = ("system:serviceaccounts", f"system:serviceaccounts:{RBAC_NS}", "system:authenticated")
    return cp.write_kubeconfig(cp.dir / f"{name}.kubeconfig", user, groups)


def with_ports(args: list[str], **ports: int) -> list[str]:
    """The chart's arguments with in-pod ports swapped for free loopback ports."""
    out = list(args)
    for flag, port in ports.items():
        i = out.index("--" + flag.replace("_", "-"))
        out[i + 1] = str(port)
    return out


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


class ChartInstall:
    """The chart's ServiceAccounts, roles and peering applied for real, and its two roles run
    as local processes with the chart's arguments, authenticated as those ServiceAccounts."""

    def __init__(self, cp: ControlPlane, values: dict[str, Any], app_ns: str) -> None:
        self.cp = cp
        self.app_ns = app_ns
        self.docs = render(
            {**values, "rbac": {"overriderRole": {"create": False}}}, namespace=RBAC_NS
        )
        self.procs: list[Process] = []
        grants = [
            d
            for d in self.docs
            if d["kind"]
            in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering")
        ]
        # Peers that earlier tests left behind must not outrank this test's replicas.
        cp.kubectl("delete", "clusterkopfpeering.kopf.dev", "slogate", "--ignore-not-found")
        cp.apply(*grants)
        cp.kubectl("create", "namespace", app_ns)
        cp.apply(
            {
                "apiVersion": "slogate.dev/v1alpha1",
                "kind": "ServiceLevelObjective",
                "metadata": {"name": "checkout-availability", "namespace": app_ns},
                "spec": {
                    "service": "checkout",
                    "target": 99.9,
                    "indicator": {
                        "ratio": {
                            "errors": 'http_requests_total{code=~"5.."}',
                            "total": "http_requests_total",
                        }
                    },
                    "evaluation": {"interval": "10s"},
                },
            },
            {
                "apiVersion": "slogate.dev/v1alpha1",
                "kind": "ReleaseGate",
                "metadata": {"name": "checkout", "namespace": app_ns},
                "spec": {
                    "selector": {"matchLabels": {"app": "checkout"}},
                    "objectives": [{"name": "checkout-availability"}],
                },
            },
        )

    def controller(self) -> tuple[Process, int]:
        """One replica with the chart's arguments, loopback ports, and nothing on port 9 to
        answer for Prometheus."""
        metrics_port = free_port()
        args = with_ports(
            args_of(controller_of(self.docs)), metrics_port=metrics_port, liveness_port=free_port()
        )
        args[args.index("--prometheus-url") + 1] = "http://127.0.0.1:9"
        name = f"slogate-controller-{len(self.procs)}"
        kubeconfig = service_account_kubeconfig(self.cp, "slogate-controller")
        argv = [sys.executable, "-m", "slogate", *args, "--log-format", "plain"]
        proc = Process(name, [*argv, "--kubeconfig", str(kubeconfig)], self.cp.dir / f"{name}.log")
        self.procs.append(proc)
        return proc, metrics_port

    def webhook(self) -> tuple[Process, int]:
        """The webhook with the chart's arguments: its serving pair from ``self.webhook_ca``,
        and for the chart's client CA the one the API server's webhook client certificate
        comes from."""
        ca = self.webhook_ca = CertificateAuthority("chart-test-webhook")
        ca.serving("slogate-webhook").write(self.cp.dir / "tls.crt", self.cp.dir / "tls.key")
        probe_port, self.admission_port = free_port(), free_port()
        args = with_ports(
            args_of(webhook_of(self.docs)), port=self.admission_port, metrics_port=probe_port
        )
        args = [str(self.cp.dir / Path(a).name) if a.startswith("/certs/") else a for a in args]
        args = [
            str(self.cp.webhook_client_ca) if a.startswith("/etc/slogate/client-ca/") else a
            for a in args
        ]
        kubeconfig = service_account_kubeconfig(self.cp, "slogate-webhook")
        argv = [sys.executable, "-m", "slogate", *args, "--log-format", "plain"]
        proc = Process(
            "slogate-webhook",
            [*argv, "--kubeconfig", str(kubeconfig)],
            self.cp.dir / "slogate-webhook.log",
        )
        self.procs.append(proc)
        return proc, probe_port

    def slo_reported(self) -> bool:
        slo = self.cp.get_json("slo", "-n", self.app_ns, "checkout-availability")
        ready = [
            c for c in (slo.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"
        ]
        return bool(ready) and ready[0]["reason"] == "PrometheusUnreachable"

    def rules_written(self) -> bool:
        """The SLO's PrometheusRule exists (the PrometheusRule CRD is the real one)."""
        got = self.cp.kubectl(
            "get", "prometheusrule", "-n", self.app_ns, "slogate-checkout-availability"
        )
        return got.returncode == 0

    def gate_decided(self) -> bool:
        gate = self.cp.get_json("releasegate", "-n", self.app_ns, "checkout")
        return bool((gate.get("status") or {}).get("decision"))

    def peers(self) -> dict[str, Any]:
        peering = self.cp.get_json("clusterkopfpeering.kopf.dev", "slogate")
        status: dict[str, Any] = peering.get("status") or {}
        return status

    def assert_nothing_forbidden(self) -> None:
        for proc in self.procs:
            assert proc.alive(), proc.log_tail()
            log = proc.log_path.read_text(errors="replace")
            assert not re.search(r"\b403\b|[Ff]orbidden", log), f"{proc.name}:\n{log[-3000:]}"

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()


def evaluations(metrics_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2) as r:
        text = r.read().decode()
    found = re.search(r"^slogate_evaluations_total (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_service_accounts_may_do_what_the_chart_says_and_no_more(isolated: ControlPlane) -> None:
    ChartInstall(isolated, {}, "rbac-check")
    for sa, verb, resource, allowed in [
        ("slogate-controller", "patch", "servicelevelobjectives.slogate.dev/status", "yes"),
        ("slogate-controller", "patch", "releasegates.slogate.dev/status", "yes"),
        ("slogate-controller", "patch", "clusterkopfpeerings.kopf.dev", "yes"),
        ("slogate-controller", "get", "secrets", "no"),
        ("slogate-controller", "update", "servicelevelobjectives.slogate.dev", "no"),
        ("slogate-controller", "list", "deployments.apps", "no"),
        ("slogate-controller", "create", "prometheusrules.monitoring.coreos.com", "yes"),
        ("slogate-controller", "delete", "prometheusrules.monitoring.coreos.com", "yes"),
        ("slogate-controller", "watch", "prometheusrules.monitoring.coreos.com", "no"),
        ("slogate-controller", "update", "prometheusrules.monitoring.coreos.com", "no"),
        ("slogate-webhook", "create", "subjectaccessreviews.authorization.k8s.io", "yes"),
        ("slogate-webhook", "patch", "releasegates.slogate.dev/status", "yes"),
        ("slogate-webhook", "patch", "servicelevelobjectives.slogate.dev/status", "no"),
        ("slogate-webhook", "patch", "releasegates.slogate.dev", "no"),
        ("slogate-webhook", "get", "secrets", "no"),
        ("slogate-webhook", "list", "deployments.apps", "yes"),
        ("slogate-webhook", "watch", "deployments.apps", "yes"),
        ("slogate-webhook", "watch", "replicasets.apps", "yes"),
        ("slogate-webhook", "patch", "deployments.apps", "no"),
        ("slogate-webhook", "create", "replicasets.apps", "no"),
        ("slogate-webhook", "list", "namespaces", "no"),
        ("slogate-webhook", "list", "customresourcedefinitions.apiextensions.k8s.io", "no"),
        ("slogate-webhook", "override", "releasegates.slogate.dev", "no"),
        ("slogate-webhook", "list", "prometheusrules.monitoring.coreos.com", "no"),
    ]:
        kind, _, subresource = resource.partition("/")
        extra = ["--subresource", subresource] if subresource else []
        asked = isolated.kubectl(
            "auth", "can-i", verb, kind, *extra, "-n", "rbac-check",
            f"--as=system:serviceaccount:{RBAC_NS}:{sa}",
        )  # fmt: skip
        assert asked.stdout.strip() == allowed, (sa, verb, resource, asked.stdout, asked.stderr)


def test_default_roles_write_slos_but_never_gates_or_overrides(isolated: ControlPlane) -> None:
    """What docs/security.md promises of Kubernetes' own roles once the chart's are aggregated
    into them (by the real kube-controller-manager's aggregation controller)."""
    ns = "roles-check"
    ChartInstall(isolated, {}, ns)
    for role in ("view", "edit", "admin"):
        bound = isolated.kubectl(
            "create", "rolebinding", f"team-{role}", "-n", ns, f"--clusterrole={role}",
            f"--user=team-{role}",
        )  # fmt: skip
        assert bound.returncode == 0, bound.stderr

    def can(user: str, verb: str, resource: str) -> str:
        asked = isolated.kubectl("auth", "can-i", verb, resource, "-n", ns, f"--as={user}")
        return asked.stdout.strip()

    deadline = time.monotonic() + 30
    while can("team-edit", "create", "servicelevelobjectives.slogate.dev") != "yes":
        assert time.monotonic() < deadline, "the chart's edit role was never aggregated into edit"
        time.sleep(0.5)
    for user, verb, resource, allowed in [
        ("team-view", "list", "servicelevelobjectives.slogate.dev", "yes"),
        ("team-view", "get", "releasegates.slogate.dev", "yes"),
        ("team-view", "create", "servicelevelobjectives.slogate.dev", "no"),
        ("team-edit", "delete", "servicelevelobjectives.slogate.dev", "yes"),
        ("team-edit", "patch", "servicelevelobjectives.slogate.dev", "yes"),
        ("team-admin", "create", "servicelevelobjectives.slogate.dev", "yes"),
        # The gate decides who may deploy: nobody it holds back may change or delete it...
        *[
            (user, verb, "releasegates.slogate.dev", "no")
            for user in ("team-edit", "team-admin")
            for verb in ("create", "patch", "update", "delete")
        ],
        # ... or break the glass without being given the verb.
        ("team-edit", "override", "releasegates.slogate.dev", "no"),
        ("team-admin", "override", "releasegates.slogate.dev", "no"),
        # edit may make ReplicaSets itself: the reason for the ReplicaSet webhook.
        ("team-edit", "create", "replicasets.apps", "yes"),
    ]:
        assert can(user, verb, resource) == allowed, (user, verb, resource)


def test_controller_and_webhook_work_under_the_charts_rbac(isolated: ControlPlane) -> None:
    install = ChartInstall(isolated, {}, "shop")
    try:
        # One replica first, so it is active before the other joins (which of two replicas
        # started together works first is kopf's race, not the chart's concern).
        first, first_port = install.controller()
        wait_until(install.slo_reported, first, 60, "the SLO's status said Prometheus is down")
        wait_until(install.gate_decided, first, 60, "the gate's status carried a decision")
        wait_until(install.rules_written, first, 60, "the SLO's PrometheusRule was written")

        # The second replica joins; the one with the higher (random) priority works from now.
        second, second_port = install.controller()
        ports = {f"{socket.gethostname()}-{p.pid}": port for p, port in
                 ((first, first_port), (second, second_port))}  # fmt: skip
        wait_until(lambda: set(ports) <= set(install.peers()), second, 60, "both peered")
        peers = install.peers()
        winner = max(ports, key=lambda ident: int(peers[ident]["priority"]))
        (loser,) = set(ports) - {winner}
        time.sleep(5)  # > 2 peering checks: the loser has stopped, the winner has started
        before = {ident: evaluations(port) for ident, port in ports.items()}
        wait_until(
            lambda: evaluations(ports[winner]) > before[winner],
            second,
            30,
            "an evaluation on the active replica",
        )
        assert evaluations(ports[loser]) == before[loser], "the standby replica evaluated"

        webhook, probe_port = install.webhook()
        readyz = f"http://127.0.0.1:{probe_port}/readyz"
        wait_until(lambda: http_status(readyz) == 200, webhook, 60, "the webhook's indexes loaded")
        install.assert_nothing_forbidden()
    finally:
        install.stop()


def test_namespaced_controller_works_under_the_charts_rbac(isolated: ControlPlane) -> None:
    install = ChartInstall(isolated, {"watchNamespaces": ["payments"]}, "payments")
    try:
        proc, _ = install.controller()
        wait_until(install.slo_reported, proc, 15, "the SLO's status said Prometheus is down")
        wait_until(install.rules_written, proc, 30, "the SLO's PrometheusRule was written")
        install.assert_nothing_forbidden()
    finally:
        install.stop()


def _answer_without_a_client_certificate(port: int, server_ca: CertificateAuthority) -> str:
    """What a pod gets that posts a review without a client certificate: the TLS error, or
    "" if an HTTP answer came."""
    ctx = ssl.create_default_context(cadata=server_ca.cert_pem.decode())
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(
                b"POST /validate-deployments HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
            )
            reply = tls.recv(100)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as exc:
        return str(getattr(exc, "reason", None) or exc)
    return "" if reply.startswith(b"HTTP/") else "closed without an HTTP answer"


def test_webhook_with_the_charts_client_ca_answers_the_api_server_only(
    isolated: ControlPlane,
) -> None:
    """The chart's --client-ca-file, given the CA of the client certificate the local API
    server presents to webhooks: a review the API server sends is answered, one from a client
    without that certificate fails in the TLS handshake."""
    from localenv.objects import deployment
    from localenv.webhookconfig import validating_webhook_configuration

    values = {"webhook": {"clientCA": {"existingConfigMap": "apiserver-webhook-client-ca"}}}
    install = ChartInstall(isolated, values, "mtls")
    config_name = f"slogate-chart-mtls-{uuid.uuid4().hex[:6]}"
    try:
        webhook, probe_port = install.webhook()
        readyz = f"http://127.0.0.1:{probe_port}/readyz"
        wait_until(lambda: http_status(readyz) == 200, webhook, 60, "the webhook's indexes loaded")
        client = {
            "url": f"https://127.0.0.1:{install.admission_port}",
            "caBundle": base64.b64encode(install.webhook_ca.cert_pem).decode(),
        }
        config = validating_webhook_configuration(
            client, operator_namespace=RBAC_NS, failure_policy="Fail"
        )
        config["metadata"]["name"] = config_name
        for hook in config["webhooks"]:  # this test's namespace only
            hook["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": "mtls"}}
        isolated.apply(config)

        # failurePolicy Fail: had the API server's call failed TLS, the request would be refused.
        # The gate's SLO has no status yet, so the webhook's own answer is a warning.
        def answered() -> bool:
            result = isolated.kubectl(
                "apply", "--dry-run=server", "-f", "-",
                input=yaml.safe_dump(deployment("checkout", "mtls", "checkout")),
            )  # fmt: skip
            return result.returncode == 0 and "ReleaseGate mtls/checkout" in result.stderr

        wait_until(
            answered, webhook, 30, "the API server's review answered with the gate's warning"
        )
        refusal = _answer_without_a_client_certificate(install.admission_port, install.webhook_ca)
        assert refusal, "a client without the API server's certificate got an HTTP answer"
        install.assert_nothing_forbidden()
    finally:
        isolated.kubectl(
            "delete", "validatingwebhookconfiguration", config_name, "--ignore-not-found"
        )
        install.stop()
