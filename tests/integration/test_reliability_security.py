"""Security: the override cannot be used without RBAC, and credentials never leak.

Real users talk to the real API server with client certificates
(``ControlPlane.write_kubeconfig(path, user, groups)``); the webhook itself runs under the
permissions the Helm chart grants it (read from ``charts/slogate/templates/rbac-webhook.yaml``),
not as a cluster admin, and with ``failurePolicy: Ignore`` (the default), so every refusal seen
here comes from slogate's own decision.

For credentials, controllers query Prometheus through fault proxies that answer with errors
*echoing the credentials back* (the worst case: a proxy or server that reflects the
Authorization header into its error body); the token, the password and the basic-auth header
value must appear nowhere: not in the logs, not in Events, not in any status, not in /metrics.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from localenv.certs import CertificateAuthority
from localenv.controlplane import ControlPlane
from localenv.faultproxy import FaultProxy
from localenv.objects import deployment, release_gate
from localenv.prometheus import PrometheusServer
from localenv.roles import ControllerProcess, WebhookProcess
from localenv.synthetic import Phase, counters, story
from tests.integration.faults import (
    RBAC,
    apply,
    binding,
    chart_webhook_rules,
    condition,
    eventually,
    log_problems,
    matrix_row,
    now_rfc3339,
    ratio_indicator,
    remove_objects,
    set_slo_status,
    slo_manifest,
    user,
    written_status,
)

pytest_plugins = ["tests.integration.reliability_matrix"]
pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]

NS = "rel-sec"
OTHER_NS = "rel-sec-other"


@pytest.fixture(scope="module")
def world(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    cp = control_plane
    work = tmp_path_factory.mktemp("rel-sec")
    for ns in (NS, OTHER_NS):
        cp.kubectl("create", "namespace", ns)
    apply(cp, slo_manifest("spent", NS))
    set_slo_status(cp, NS, "spent", written_status(-0.4, "FREEZE", 2.0))
    apply(
        cp,
        release_gate("checkout", NS, "checkout", ["spent"]),
        release_gate("pay-a", NS, "pay", ["spent"]),
        release_gate("pay-b", NS, "pay", ["spent"]),
        deployment("checkout", NS, "checkout"),
        deployment("pay", NS, "pay"),
    )
    rules = chart_webhook_rules()
    no_sar = [r for r in rules if "subjectaccessreviews" not in r["resources"]]
    people = ["alice", "bob", "carol", "dave", "erin"]
    apply(
        cp,
        {
            "apiVersion": RBAC,
            "kind": "Role",
            "metadata": {"name": "deployer", "namespace": NS},
            "rules": [
                {
                    "apiGroups": ["apps"],
                    "resources": ["deployments"],
                    "verbs": ["get", "list", "patch", "update"],
                }
            ],
        },
        {
            "apiVersion": RBAC,
            "kind": "ClusterRole",
            "metadata": {"name": "rel-sec-overrider"},
            "rules": [
                {"apiGroups": ["slogate.dev"], "resources": ["releasegates"], "verbs": ["override"]}
            ],
        },
        {
            "apiVersion": RBAC,
            "kind": "Role",
            "metadata": {"name": "override-pay-a", "namespace": NS},
            "rules": [
                {
                    "apiGroups": ["slogate.dev"],
                    "resources": ["releasegates"],
                    "resourceNames": ["pay-a"],
                    "verbs": ["override"],
                }
            ],
        },
        {
            "apiVersion": RBAC,
            "kind": "ClusterRole",
            "metadata": {"name": "rel-sec-webhook"},
            "rules": rules,
        },
        {
            "apiVersion": RBAC,
            "kind": "ClusterRole",
            "metadata": {"name": "rel-sec-webhook-nosar"},
            "rules": no_sar,
        },
        binding("RoleBinding", "deployers", NS, "Role", "deployer", [user(p) for p in people]),
        binding(
            "RoleBinding",
            "alice-overrides",
            NS,
            "ClusterRole",
            "rel-sec-overrider",
            [user("alice")],
        ),
        binding(
            "RoleBinding",
            "carol-overrides-elsewhere",
            OTHER_NS,
            "ClusterRole",
            "rel-sec-overrider",
            [user("carol")],
        ),
        binding(
            "RoleBinding",
            "oncall-overrides",
            NS,
            "ClusterRole",
            "rel-sec-overrider",
            [{"kind": "Group", "name": "rel-oncall", "apiGroup": "rbac.authorization.k8s.io"}],
        ),
        binding(
            "RoleBinding", "erin-overrides-pay-a", NS, "Role", "override-pay-a", [user("erin")]
        ),
        binding(
            "ClusterRoleBinding",
            "rel-sec-webhook",
            None,
            "ClusterRole",
            "rel-sec-webhook",
            [user("rel-sec-webhook")],
        ),
        binding(
            "ClusterRoleBinding",
            "rel-sec-webhook-nosar",
            None,
            "ClusterRole",
            "rel-sec-webhook-nosar",
            [user("rel-sec-webhook-nosar")],
        ),
    )
    kube = {p: cp.write_kubeconfig(work / f"{p}.kubeconfig", p) for p in people if p != "dave"}
    kube["dave"] = cp.write_kubeconfig(work / "dave.kubeconfig", "dave", ("rel-oncall",))
    ca = CertificateAuthority("rel-sec-ca")
    hook = WebhookProcess(
        cp.write_kubeconfig(work / "webhook.kubeconfig", "rel-sec-webhook"),
        work / "hook",
        ca,
        work / "hook.log",
    )
    nosar = WebhookProcess(
        cp.write_kubeconfig(work / "nosar.kubeconfig", "rel-sec-webhook-nosar"),
        work / "nosar",
        ca,
        work / "nosar.log",
    )
    config = hook.configuration()
    config["metadata"]["name"] = "slogate-rel-sec"
    config["webhooks"][0]["namespaceSelector"] = {
        "matchLabels": {"kubernetes.io/metadata.name": NS}
    }
    apply(cp, config)
    _wait_until_called(cp, hook)
    try:
        yield {"kube": kube, "hook": hook, "nosar": nosar, "config": config}
    finally:
        cp.kubectl(
            "delete", "validatingwebhookconfiguration", "slogate-rel-sec", "--ignore-not-found"
        )
        remove_objects(cp, NS)
        hook.stop()
        nosar.stop()
        for name in ("hook.log", "nosar.log"):
            print(name, (work / name).read_text()[-2500:])


def _wait_until_called(cp: ControlPlane, hook: WebhookProcess) -> None:
    def called() -> None:
        result = _set_image(cp, "checkout", f"probe:{time.monotonic_ns()}", "--dry-run=server")
        assert "ReleaseGate rel-sec/checkout" in result.stderr, result.stderr

    eventually(called, timeout=30)


def _set_image(cp: ControlPlane, name: str, image: str, *extra: str, kube: Path | None = None):  # type: ignore[no-untyped-def]
    return cp.kubectl(
        "set", "image", f"deployment/{name}", f"main={image}", "-n", NS, *extra, kubeconfig=kube
    )


def _override(cp: ControlPlane, kube: Path, name: str, image: str, minutes: int = 60):  # type: ignore[no-untyped-def]
    patch = {
        "metadata": {
            "annotations": {
                "slogate.dev/override": f"INC-{image}",
                "slogate.dev/override-until": now_rfc3339(minutes * 60),
            }
        },
        "spec": {"template": {"spec": {"containers": [{"name": "main", "image": image}]}}},
    }
    return cp.kubectl(
        "patch",
        "deployment",
        name,
        "-n",
        NS,
        "--type=strategic",
        "-p",
        json.dumps(patch),
        kubeconfig=kube,
    )


def _image(cp: ControlPlane, name: str) -> str:
    dep = cp.get_json("deployment", name, "-n", NS)
    return str(dep["spec"]["template"]["spec"]["containers"][0]["image"])


def _clear(cp: ControlPlane, name: str) -> None:
    cleared = cp.kubectl(
        "annotate",
        f"deployment/{name}",
        "-n",
        NS,
        "slogate.dev/override-",
        "slogate.dev/override-until-",
    )
    assert cleared.returncode == 0, cleared.stderr


def _refused(result: Any, *needles: str) -> None:
    assert result.returncode != 0, f"admitted: {result.stdout} {result.stderr}"
    assert "slogate refused this rollout" in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


@matrix_row(
    "a user without the override verb (bob) puts both override annotations on the rollout",
    "refused, naming the missing verb; the image is unchanged",
)
def test_override_without_rbac_in_the_same_request(
    control_plane: ControlPlane, world: dict[str, Any], observe: Callable[[str], None]
) -> None:
    cp, bob = control_plane, world["kube"]["bob"]
    before = _image(cp, "checkout")
    result = _override(cp, bob, "checkout", "shop/checkout:bob")
    _refused(result, "bob may not 'override' releasegate rel-sec/checkout")
    assert _image(cp, "checkout") == before
    observe("refused: " + result.stderr.split("(the override was not honoured:")[-1][:90])


@matrix_row(
    "bob first annotates the Deployment (metadata-only, allowed), then rolls out in a second "
    "request",
    "the annotation alone grants nothing: the rollout is refused",
)
def test_override_without_rbac_annotated_beforehand(
    control_plane: ControlPlane, world: dict[str, Any], observe: Callable[[str], None]
) -> None:
    cp, bob = control_plane, world["kube"]["bob"]
    annotated = cp.kubectl(
        "annotate",
        "deployment/checkout",
        "-n",
        NS,
        "--overwrite",
        "slogate.dev/override=bob says so",
        f"slogate.dev/override-until={now_rfc3339(1800)}",
        kubeconfig=bob,
    )
    assert annotated.returncode == 0, annotated.stderr
    try:
        result = _set_image(cp, "checkout", "shop/checkout:bob2", kube=bob)
        _refused(result, "bob may not 'override'")
        observe("annotation accepted (metadata only), rollout refused")
    finally:
        _clear(cp, "checkout")


@matrix_row(
    "bob tries to become someone who may override: impersonating alice, impersonating the "
    "on-call group, binding the override role to himself",
    "the API server refuses each (no impersonate or RBAC-write rights); nothing is admitted",
)
def test_no_way_to_borrow_or_grant_the_verb(
    control_plane: ControlPlane, world: dict[str, Any], observe: Callable[[str], None]
) -> None:
    cp, bob = control_plane, world["kube"]["bob"]
    as_alice = _override(cp, bob, "checkout", "shop/checkout:imp")
    impersonated = cp.kubectl(
        "set",
        "image",
        "deployment/checkout",
        "main=shop/checkout:imp",
        "-n",
        NS,
        "--as=alice",
        kubeconfig=bob,
    )
    grouped = cp.kubectl(
        "set",
        "image",
        "deployment/checkout",
        "main=shop/checkout:imp",
        "-n",
        NS,
        "--as=bob",
        "--as-group=rel-oncall",
        kubeconfig=bob,
    )
    grant = cp.kubectl(
        "create",
        "rolebinding",
        "bob-overrides",
        "-n",
        NS,
        "--clusterrole=rel-sec-overrider",
        "--user=bob",
        kubeconfig=bob,
    )
    assert as_alice.returncode != 0
    for result in (impersonated, grouped, grant):
        assert result.returncode != 0
        assert "Forbidden" in result.stderr or "forbidden" in result.stderr, result.stderr
    assert "cannot impersonate" in impersonated.stderr
    assert _image(cp, "checkout") == "shop/app:1.0"
    observe("impersonation and self-binding: Forbidden by the API server")


@matrix_row(
    "carol holds the override verb, but only in another namespace",
    "refused: the SubjectAccessReview is for the gate's own namespace",
)
def test_override_rights_elsewhere_do_not_count(
    control_plane: ControlPlane, world: dict[str, Any], observe: Callable[[str], None]
) -> None:
    cp = control_plane
    result = _override(cp, world["kube"]["carol"], "checkout", "shop/checkout:carol")
    _refused(result, "carol may not 'override' releasegate rel-sec/checkout")
    observe("refused")


@matrix_row(
    "erin may override gate pay-a only; her Deployment is blocked by pay-a and pay-b",
    "refused, naming pay-b: an override must be allowed on every blocking gate",
)
def test_override_needs_every_blocking_gate(
    control_plane: ControlPlane, world: dict[str, Any], observe: Callable[[str], None]
) -> None:
    cp = control_plane
    result = _override(cp, world["kube"]["erin"], "pay", "shop/pay:erin")
    _refused(result, "erin may not 'override' releasegate rel-sec/pay-b")
    assert "rel-sec/pay-a" not in result.stderr.split("may not 'override'")[-1]
    observe("refused naming only pay-b")


@matrix_row(
    "positive controls: alice (override bound to her user) and dave (bound through his "
    "certificate's group rel-oncall)",
    "both admitted with an 'override by ...' warning, recorded in the gate's lastOverride "
    "(the check is real, not a blanket refusal)",
)
def test_authorised_users_may_override(
    control_plane: ControlPlane, world: dict[str, Any], observe: Callable[[str], None]
) -> None:
    cp = control_plane
    for who in ("alice", "dave"):
        result = _override(cp, world["kube"][who], "checkout", f"shop/checkout:{who}")
        assert result.returncode == 0, result.stderr
        assert f"override by {who}" in result.stderr
        assert _image(cp, "checkout") == f"shop/checkout:{who}"
        _clear(cp, "checkout")

        def recorded(who: str = who) -> None:
            st = cp.get_json("gate", "checkout", "-n", NS).get("status") or {}
            assert (st.get("lastOverride") or {}).get("user") == who

        eventually(recorded, timeout=15)
    observe("alice and dave admitted and recorded")


@matrix_row(
    "the webhook cannot run its SubjectAccessReview (its RBAC lacks subjectaccessreviews: a "
    "broken install) while bob asks for an override",
    "the override is not honoured and the refusal stands, saying the RBAC check could not be "
    "made (an error must not open the gate to anyone who sets an annotation)",
)
def test_override_fails_closed_when_rbac_cannot_be_checked(
    control_plane: ControlPlane, world: dict[str, Any], observe: Callable[[str], None]
) -> None:
    cp = control_plane
    nosar: WebhookProcess = world["nosar"]
    config = json.loads(json.dumps(world["config"]))
    config["webhooks"][0]["clientConfig"]["url"] = nosar.url
    apply(cp, config)
    try:
        eventually(
            lambda: (
                _assert(nosar.metric("slogate_admission_decisions_total") > 0)
                if _set_image(cp, "checkout", f"p:{time.monotonic_ns()}", "--dry-run=server")
                else None
            ),
            timeout=30,
        )
        before = _image(cp, "checkout")
        bob = _override(cp, world["kube"]["bob"], "checkout", "shop/checkout:bob-nosar")
        alice = _override(cp, world["kube"]["alice"], "checkout", "shop/checkout:alice-nosar")
        _clear(cp, "checkout")
        _refused(bob, "could not check bob's RBAC verb 'override'")
        _refused(alice, "could not check alice's RBAC verb 'override'")
        assert _image(cp, "checkout") == before
        assert nosar.alive()
        observe("bob and alice both refused: 'could not check ... RBAC verb override'")
    finally:
        apply(cp, world["config"])
        _wait_until_called(cp, world["hook"])


def _assert(ok: bool) -> None:
    assert ok


# --- credentials -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def leaky(
    control_plane: ControlPlane,
    prometheus: PrometheusServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    """Two controllers (bearer token, basic auth) whose Prometheus answers errors that echo
    the credentials back; each watches only its own namespace."""
    cp = control_plane
    work = tmp_path_factory.mktemp("rel-sec-creds")
    token = "sgtok-" + secrets.token_hex(16)
    password = "sgpw-" + secrets.token_hex(16)
    basic = base64.b64encode(f"slogate:{password}".encode()).decode()
    (work / "token").write_text(token + "\n")
    (work / "password").write_text(password + "\n")
    now = time.time()
    s = story([Phase(2 * 1440, 1000.0, 0.0005)], now + 900)
    prometheus.backfill(
        counters(
            s,
            "rels_requests_total",
            {"job": "svc"},
            error_labels={"code": "500"},
            ok_labels={"code": "200"},
        )
    )
    # A server that reflects what it received: the bearer token, or the basic-auth header and
    # (decoded) password.
    echoes = {
        "bearer": f"Authorization: Bearer {token} rejected",
        "basic": f"Authorization: Basic {basic} (slogate:{password}) rejected",
    }

    def body(mode: str, code: int) -> str:
        if code == 503:
            return f"upstream said: {echoes[mode]}"
        kind = "unauthorized" if code == 401 else "bad_data"
        return json.dumps({"status": "error", "errorType": kind, "error": echoes[mode]})

    proxies = {
        (mode, code): FaultProxy(prometheus.url)
        for mode in ("bearer", "basic")
        for code in (0, 401, 503, 400)
    }
    untrusted = FaultProxy(prometheus.url)
    for p in [*proxies.values(), untrusted]:
        p.start()
    namespaces = {"bearer": "rel-sec-bearer", "basic": "rel-sec-basic"}
    controllers = {}
    try:
        for mode, ns in namespaces.items():
            cp.kubectl("create", "namespace", ns)
            auth = (
                ["--prometheus-bearer-token-file", str(work / "token")]
                if mode == "bearer"
                else [
                    "--prometheus-basic-auth-username",
                    "slogate",
                    "--prometheus-basic-auth-password-file",
                    str(work / "password"),
                ]
            )
            trusted = [
                arg
                for code in (401, 503, 400)
                for arg in ("--prometheus-trusted-url", proxies[(mode, code)].url)
            ]
            controllers[mode] = ControllerProcess(
                cp.kubeconfig,
                proxies[(mode, 0)].url,
                work / f"{mode}.log",
                "--log-format",
                "json" if mode == "bearer" else "plain",
                "--namespace",
                ns,
                "--prometheus-timeout",
                "1",
                "--prometheus-retries",
                "1",
                "--prometheus-header",
                "X-Scope-OrgID=tenant-secret",
                *auth,
                *trusted,
                "--prometheus-allowed-url",
                untrusted.url,
            )
            docs = [
                slo_manifest(
                    f"code-{code}",
                    ns,
                    indicator=ratio_indicator("rels_requests_total", "svc"),
                    evaluation={"interval": "10s"},
                    **({"prometheus": {"url": proxies[(mode, code)].url}} if code else {}),
                )
                for code in (0, 401, 503, 400)
            ]
            docs.append(
                slo_manifest(
                    "untrusted",
                    ns,
                    indicator=ratio_indicator("rels_requests_total", "svc"),
                    evaluation={"interval": "10s"},
                    prometheus={"url": untrusted.url},
                )
            )
            apply(cp, *docs)
        # A good evaluation first, then every trusted backend answers with echoing errors.
        for ns in namespaces.values():
            eventually(
                lambda ns=ns: _assert(
                    all(
                        condition(_status(cp, ns, f"code-{c}"), "Ready").get("status") == "True"
                        for c in (0, 401, 503, 400)
                    )
                ),
                timeout=60,
            )
        for (mode, code), proxy in proxies.items():
            if code:
                proxy.respond(code, body(mode, code), content_type="application/json")
        for ns in namespaces.values():
            eventually(
                lambda ns=ns: _assert(
                    all(
                        condition(_status(cp, ns, f"code-{c}"), "Ready").get("status") == "False"
                        for c in (401, 503, 400)
                    )
                ),
                timeout=40,
            )
        yield {
            "token": token,
            "password": password,
            "basic": basic,
            "namespaces": namespaces,
            "controllers": controllers,
            "proxies": proxies,
            "untrusted": untrusted,
        }
    finally:
        for ns in namespaces.values():
            remove_objects(cp, ns)
        for ctl in controllers.values():
            ctl.stop()
        for p in [*proxies.values(), untrusted]:
            p.stop()


def _status(cp: ControlPlane, ns: str, name: str) -> dict[str, Any]:
    return dict(cp.get_json("slo", name, "-n", ns).get("status") or {})


@matrix_row(
    "Prometheus behind auth (bearer token; basic auth) failing with 401, 503 and 400 whose "
    "bodies echo the Authorization header, the token and the password",
    "the failures show in status/Events (with Prometheus's words) but no token, password or "
    "basic-auth value appears in controller logs, Events, any status or /metrics; the "
    "credentials and tenant header go only to trusted URLs, never to an SLO's own URL",
)
def test_no_credentials_in_logs_events_status_or_metrics(
    control_plane: ControlPlane, leaky: dict[str, Any], observe: Callable[[str], None]
) -> None:
    cp = control_plane
    secrets_ = [leaky["token"], leaky["password"], leaky["basic"]]
    places: dict[str, str] = {}
    for mode, ns in leaky["namespaces"].items():
        ctl: ControllerProcess = leaky["controllers"][mode]
        places[f"{mode} log"] = ctl.log_path.read_text(errors="replace")
        places[f"{mode} metrics"] = ctl.metrics_text()
        places[f"{mode} events"] = json.dumps(cp.get_json("events", "-n", ns))
        places[f"{mode} slos"] = json.dumps(cp.get_json("slo", "-n", ns))
        # The failures are reported, with the server's own (redacted) words.
        st = _status(cp, ns, "code-401")
        assert condition(st, "Ready")["reason"] == "PrometheusUnauthorized"
        assert "<redacted>" in condition(st, "Ready")["message"]
        assert condition(_status(cp, ns, "code-503"), "Ready")["reason"] == (
            "PrometheusServerError"
        )
        assert condition(_status(cp, ns, "code-400"), "Ready")["reason"] == "QueryRejected"
        assert "rejected" in places[f"{mode} events"]
        assert ctl.alive() and log_problems(ctl) == []
    leaks = {where: [s for s in secrets_ if s in text] for where, text in places.items()}
    assert {k: v for k, v in leaks.items() if v} == {}
    # The credentials were really used (so the absence above means something) ...
    bearer = leaky["proxies"][("bearer", 0)].recorded()
    basic = leaky["proxies"][("basic", 0)].recorded()
    assert bearer and all(
        r.headers.get("authorization") == f"Bearer {leaky['token']}" for r in bearer
    )
    assert basic and all(r.headers.get("authorization") == f"Basic {leaky['basic']}" for r in basic)
    assert all(r.headers.get("x-scope-orgid") == "tenant-secret" for r in bearer + basic)
    # ... and an SLO's own, untrusted URL got neither credentials nor the tenant header.
    foreign = leaky["untrusted"].recorded()
    assert foreign
    assert all("authorization" not in r.headers for r in foreign)
    assert all("x-scope-orgid" not in r.headers for r in foreign)
    observe(
        f"searched {sum(len(t) for t in places.values()) // 1024} KiB of logs, Events, statuses "
        f"and metrics of 2 controllers: 0 secrets; {len(foreign)} requests to the untrusted "
        f"URL carried no credentials"
    )
