"""The webhook's own AdmissionReview server.

Parsing and rendering reviews are pure functions, tested as such. The server is tested over
real HTTPS: in-process :class:`AdmissionServer` instances with routes of their own (routing,
body limit, malformed bodies, client certificates with reload); the informers against the real
API server (per namespace); and the ``slogate webhook`` process (its answers to what is not a
Deployment change, and that the role runs without kopf).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import http.client
import json
import socket
import ssl
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from localenv.certs import CertificateAuthority
from localenv.controlplane import ControlPlane
from localenv.objects import deployment, release_gate
from localenv.processes import free_port
from localenv.roles import WebhookProcess
from slogate.kubeclient import load_config
from slogate.webhook.informer import Source, Watches, custom_objects, watch_client
from slogate.webhook.review import (
    AdmissionAnswer,
    AdmissionRequest,
    ReviewError,
    UserInfo,
    parse_review,
    render_review,
)
from slogate.webhook.server import AdmissionServer, Handler, bad_reviews
from slogate.webhook.store import Store
from slogate.webhook.tls import ReloadingTLS
from tests.integration.faults import admission_review, post_review, tls_context

# --- parsing and rendering (pure) --------------------------------------------------------------


def review_of(**request: Any) -> dict[str, Any]:
    dep = deployment("web", "team-a")
    base: dict[str, Any] = admission_review(dep, copy.deepcopy(dep))["request"]
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": base | request,
    }


def test_parse_review_reads_every_field() -> None:
    body = review_of(
        uid="u-1",
        subResource="",
        dryRun=False,
        userInfo={
            "username": "alice",
            "uid": "a-1",
            "groups": ["dev", "system:authenticated"],
            "extra": {"scopes": ["x", "y"]},
        },
    )
    req = parse_review(body)
    assert req.uid == "u-1"
    assert (req.kind.group, req.kind.version, req.kind.kind) == ("apps", "v1", "Deployment")
    assert (req.resource.group, req.resource.version, req.resource.resource) == (
        "apps",
        "v1",
        "deployments",
    )
    assert (req.namespace, req.name, req.operation, req.sub_resource) == (
        "team-a",
        "web",
        "UPDATE",
        "",
    )
    assert req.user == UserInfo(
        "alice", "a-1", ("dev", "system:authenticated"), {"scopes": ("x", "y")}
    )
    assert req.user.as_dict()["extra"] == {"scopes": ["x", "y"]}
    assert req.dry_run is False
    assert req.object is body["request"]["object"]
    assert req.old_object is body["request"]["oldObject"]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ([], "JSON object"),
        ({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}, "apiVersion"),
        ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}, "review.request"),
        (review_of(uid=""), "request.uid is empty"),
        (review_of(uid=7), "request.uid must be a string"),
        (review_of(operation="PATCH"), "request.operation must be one of"),
        (review_of(kind="Deployment"), "request.kind must be an object"),
        (review_of(userInfo=None), "request.userInfo must be an object"),
        (review_of(userInfo={"username": "a", "groups": "dev"}), "groups must be a list"),
        (review_of(dryRun="yes"), "request.dryRun must be a boolean"),
        (review_of(object=None), "request.object is missing for UPDATE"),
        (review_of(oldObject=None), "request.oldObject is missing for UPDATE"),
        (review_of(object=[1]), "request.object must be an object"),
    ],
)
def test_parse_review_refuses_what_is_not_a_v1_review(body: Any, says: str) -> None:
    with pytest.raises(ReviewError, match=says):
        parse_review(body)


def test_render_review() -> None:
    assert render_review("u", AdmissionAnswer.allow()) == {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": "u", "allowed": True},
    }
    refused = render_review("u", AdmissionAnswer.deny("no", warnings=["w"]))["response"]
    assert refused == {
        "uid": "u",
        "allowed": False,
        "status": {"code": 403, "message": "no"},
        "warnings": ["w"],
    }


# --- the server, in process, over real TLS -----------------------------------------------------


@dataclass
class Pki:
    ca: CertificateAuthority
    cert: Path
    key: Path
    dir: Path

    def client_context(self, client: CertificateAuthority | None = None) -> ssl.SSLContext:
        """Trusts the server's CA; presents a client certificate from ``client`` if given."""
        ctx = tls_context(self.ca)
        if client is not None:
            pair = client.client("apiserver")
            cert, key = self.dir / f"client-{uuid.uuid4().hex}.crt", self.dir / "client.key"
            pair.write(cert, key)
            ctx.load_cert_chain(str(cert), str(key))
        return ctx


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = CertificateAuthority("server-test-ca")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    ca.serving("slogate-webhook").write(cert, key)
    return Pki(ca, cert, key, tmp_path)


@contextlib.asynccontextmanager
async def serving(
    tls: ReloadingTLS, routes: dict[str, Handler], **options: Any
) -> AsyncIterator[AdmissionServer]:
    server = AdmissionServer(tls, routes, free_port(), "127.0.0.1", **options)
    task = asyncio.create_task(server.serve())
    await asyncio.wait_for(server.listening.wait(), 10)
    try:
        yield server
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def call(
    port: int, path: str, body: bytes, ctx: ssl.SSLContext, method: str = "POST"
) -> tuple[int, bytes]:
    """One HTTPS request on a fresh connection: (status, body)."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        conn.request(method, path, body, {"content-type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def tls_refusal(port: int, ctx: ssl.SSLContext) -> str:
    """Connect, send a request, read: the TLS error that ends it ("" if an answer came)."""
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(b"POST /r HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            reply = tls.recv(100)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as exc:
        return str(getattr(exc, "reason", None) or exc)
    return "" if reply.startswith(b"HTTP/") else "closed without an HTTP answer"


def answer_named(name: str) -> Handler:
    async def handler(request: AdmissionRequest) -> AdmissionAnswer:
        return AdmissionAnswer.deny(f"{name} saw {request.name}", code=409, warnings=[name])

    return handler


async def test_routes_by_path(pki: Pki) -> None:
    tls = ReloadingTLS(pki.cert, pki.key)
    routes = {"/one": answer_named("one"), "/two": answer_named("two")}
    body = json.dumps(review_of(uid="r-1")).encode()
    ctx = pki.client_context()
    async with serving(tls, routes) as server:
        for path in ("/one", "/two"):
            status, raw = await asyncio.to_thread(call, server.port, path, body, ctx)
            assert status == 200
            assert json.loads(raw)["response"] == {
                "uid": "r-1",
                "allowed": False,
                "status": {"code": 409, "message": f"{path[1:]} saw web"},
                "warnings": [path[1:]],
            }
        assert (await asyncio.to_thread(call, server.port, "/three", body, ctx))[0] == 404
        assert (await asyncio.to_thread(call, server.port, "/one", b"", ctx, "GET"))[0] == 405


async def test_malformed_bodies_answer_400_and_handler_errors_500(pki: Pki) -> None:
    async def broken(_: AdmissionRequest) -> AdmissionAnswer:
        raise RuntimeError("bug")

    tls = ReloadingTLS(pki.cert, pki.key)
    ctx = pki.client_context()
    cases = {
        b"not json": "not an AdmissionReview: Expecting value",
        b"\xff\xfe": "not an AdmissionReview:",
        json.dumps({"kind": "Pod"}).encode(): "expected apiVersion admission.k8s.io/v1",
        json.dumps(review_of(uid="")).encode(): "request.uid is empty",
    }
    async with serving(tls, {"/ok": answer_named("ok"), "/broken": broken}) as server:
        for body, says in cases.items():
            status, text = await asyncio.to_thread(call, server.port, "/ok", body, ctx)
            assert status == 400, text
            assert says in text.decode()
            assert len(text) < 300
        body = json.dumps(review_of(uid="r-2")).encode()
        status, _ = await asyncio.to_thread(call, server.port, "/broken", body, ctx)
        assert status == 500


async def test_bodies_above_the_limit_answer_413(pki: Pki) -> None:
    tls = ReloadingTLS(pki.cert, pki.key)
    ctx = pki.client_context()

    def sized(n: int) -> bytes:
        review = review_of(uid="big")
        review["request"]["object"]["metadata"]["annotations"] = {"pad": "x" * n}
        return json.dumps(review).encode()

    before = bad_reviews.labels("too_large")._value.get()
    async with serving(tls, {"/r": answer_named("r")}, max_review_bytes=64 * 1024) as srv:
        assert (await asyncio.to_thread(call, srv.port, "/r", sized(50_000), ctx))[0] == 200
        assert (await asyncio.to_thread(call, srv.port, "/r", sized(70_000), ctx))[0] == 413
    assert bad_reviews.labels("too_large")._value.get() == before + 1


async def test_client_certificate_required_and_its_ca_reloaded(pki: Pki) -> None:
    apiserver_ca, other_ca = CertificateAuthority("apiserver-ca"), CertificateAuthority("other")
    ca_file = pki.dir / "client-ca.crt"
    ca_file.write_bytes(apiserver_ca.cert_pem)
    tls = ReloadingTLS(pki.cert, pki.key, ca_file)
    body = json.dumps(review_of(uid="c-1")).encode()
    async with serving(tls, {"/r": answer_named("r")}) as server:
        port = server.port
        good = pki.client_context(apiserver_ca)
        assert (await asyncio.to_thread(call, port, "/r", body, good))[0] == 200
        assert await asyncio.to_thread(tls_refusal, port, pki.client_context()) != ""
        assert await asyncio.to_thread(tls_refusal, port, pki.client_context(other_ca)) != ""
        # The CA file is replaced (a rotated Secret): new handshakes trust the new CA only.
        rotated = pki.dir / "client-ca.new"
        rotated.write_bytes(other_ca.cert_pem)
        rotated.replace(ca_file)
        status, _ = await asyncio.to_thread(call, port, "/r", body, pki.client_context(other_ca))
        assert status == 200
        assert await asyncio.to_thread(tls_refusal, port, good) != ""
    assert tls.reloads == 1


def test_webhook_role_runs_without_kopf() -> None:
    """``slogate webhook`` imports the CLI, the module that starts the roles and the webhook
    role; none may pull kopf in."""
    code = (
        "import sys, slogate.cli, slogate.run, slogate.webhook.app;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'kopf'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


# --- the webhook process ---------------------------------------------------------------------

NS = "hook-server"


@pytest.fixture(scope="module")
def hook(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebhookProcess]:
    control_plane.kubectl("create", "namespace", NS)
    work = tmp_path_factory.mktemp("hook-server")
    ca = CertificateAuthority("hook-server-ca")
    proc = WebhookProcess(control_plane.kubeconfig, work / "certs", ca, work / "webhook.log")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.mark.cluster
def test_webhook_process_answers_only_deployment_changes(hook: WebhookProcess) -> None:
    ctx = tls_context(hook.ca)
    dep = deployment("web", NS)
    gone = admission_review(dep, dep, operation="DELETE")
    gone["request"].update(object=None, oldObject=dep)
    assert post_review(hook.url, gone, ctx)["allowed"] is True
    pods = admission_review(dep, dep)
    pods["request"]["resource"] = {"group": "", "version": "v1", "resource": "pods"}
    assert post_review(hook.url, pods, ctx)["allowed"] is True
    status, text = call(hook.port, "/validate-deployments", b"{}", ctx)
    assert (status, text.decode()) == (
        400,
        "not an AdmissionReview: expected apiVersion admission.k8s.io/v1 and kind AdmissionReview",
    )
    assert hook.metric("slogate_webhook_bad_reviews_total", reason="malformed") == 1
    assert hook.metric("slogate_webhook_watch_up", kind="replicasets") == 1


@pytest.mark.cluster
async def test_informers_follow_only_their_namespaces(control_plane: ControlPlane) -> None:
    """``--namespace``: one informer per kind and namespace; objects elsewhere never arrive."""
    cp = control_plane
    for ns in ("inf-a", "inf-b", "inf-c"):
        cp.kubectl("create", "namespace", ns)
        cp.apply(release_gate("g1", ns, "app", ["slo"]))
    load_config(str(cp.kubeconfig))
    store = Store()
    gates = Source(
        "releasegates",
        custom_objects("slogate.dev", "v1alpha1", "releasegates"),
        store.sink("gate", store.put_gate),
    )
    watches = Watches([gates], watch_client(2), ("inf-a", "inf-b"), grace_s=30)
    assert [i.name for i in watches.informers] == ["releasegates in inf-a", "releasegates in inf-b"]
    watches.start()
    try:
        await asyncio.wait_for(watches.synced.wait(), 30)
        assert set(store.gates) == {("inf-a", "g1"), ("inf-b", "g1")}
        assert watches.problems() == []
        cp.apply(*(release_gate("g2", ns, "app", ["slo"]) for ns in ("inf-a", "inf-c")))
        cp.kubectl("delete", "gate", "g1", "-n", "inf-b", check=True)
        for _ in range(100):
            if set(store.gates) == {("inf-a", "g1"), ("inf-a", "g2")}:
                break
            await asyncio.sleep(0.1)
        assert set(store.gates) == {("inf-a", "g1"), ("inf-a", "g2")}
    finally:
        await asyncio.to_thread(watches.stop)
        for ns in ("inf-a", "inf-b", "inf-c"):
            cp.kubectl("delete", "gate", "--all", "-n", ns)
