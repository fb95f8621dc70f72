"""The admission webhook as a fleet: several processes, restarts, certificate rotation, TLS only.

Every webhook process answers from its own in-memory index (no peering: a paused peer would
answer from an empty index). These tests send AdmissionReviews to each process directly, the way
the API server does (HTTPS, a fresh connection per request, the CA bundle of the configuration),
and through the real API server where the path matters (certificate rotation).

SLO statuses are written here directly (as the controller would), so each answer is known.
"""

from __future__ import annotations

import copy
import http.client
import json
import os
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from localenv.certs import CertificateAuthority
from localenv.controlplane import ControlPlane
from localenv.faultproxy import TcpProxy, kubeconfig_via
from localenv.objects import deployment, release_gate
from localenv.roles import WebhookProcess
from tests.integration.faults import (
    StartingWebhook,
    admission_review,
    apply,
    eventually,
    log_problems,
    matrix_row,
    post_review,
    remove_objects,
    set_slo_status,
    slo_manifest,
    tls_context,
    webhook_configuration,
    written_status,
)

pytest_plugins = ["tests.integration.reliability_matrix"]
pytestmark = pytest.mark.cluster

NS = "rel-hook"


@pytest.fixture(scope="module")
def world(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    cp = control_plane
    cp.kubectl("create", "namespace", NS)
    apply(cp, slo_manifest("spent", NS), slo_manifest("fine", NS))
    set_slo_status(cp, NS, "spent", written_status(-0.4, "FREEZE", 2.0))
    set_slo_status(cp, NS, "fine", written_status(0.8, "SAFE", 0.2))
    apply(
        cp,
        release_gate("checkout", NS, "checkout", ["spent"]),
        release_gate("cart", NS, "cart", ["fine"]),
        deployment("checkout", NS, "checkout"),
        deployment("cart", NS, "cart"),
    )
    work = tmp_path_factory.mktemp("rel-hook")
    ca = CertificateAuthority("rel-hook-ca")
    a = WebhookProcess(cp.kubeconfig, work / "a", ca, work / "a.log")
    b = WebhookProcess(cp.kubeconfig, work / "b", ca, work / "b.log")
    try:
        yield {"ca": ca, "a": a, "b": b, "work": work}
    finally:
        remove_objects(cp, NS)
        for proc in (a, b):
            proc.stop()
        for name in ("a.log", "b.log"):
            print(name, (work / name).read_text()[-2000:])


def reviews(cp: ControlPlane) -> dict[str, tuple[dict[str, Any], bool]]:
    """Named AdmissionReviews and whether each must be allowed."""
    checkout = cp.get_json("deployment", "checkout", "-n", NS)
    cart = cp.get_json("deployment", "cart", "-n", NS)

    def with_image(dep: dict[str, Any], image: str) -> dict[str, Any]:
        new = copy.deepcopy(dep)
        new["spec"]["template"]["spec"]["containers"][0]["image"] = image
        return new

    scaled = copy.deepcopy(checkout)
    scaled["spec"]["replicas"] = 5
    return {
        "checkout-rollout": (admission_review(checkout, with_image(checkout, "x:2")), False),
        "cart-rollout": (admission_review(cart, with_image(cart, "x:2")), True),
        "checkout-scale": (admission_review(checkout, scaled), True),
    }


def answers(proc: WebhookProcess, ctx: ssl.SSLContext, cp: ControlPlane) -> dict[str, bool]:
    return {
        name: bool(post_review(proc.url, review, ctx)["allowed"])
        for name, (review, _) in reviews(cp).items()
    }


@matrix_row(
    "two webhook processes, then the SLO recovers and is spent again",
    "both answer every review correctly from their own index; both follow a status change "
    "within seconds (watch-driven, no restart)",
)
def test_two_webhooks_answer_alike_from_their_own_index(
    control_plane: ControlPlane, world: dict[str, Any], observe: Callable[[str], None]
) -> None:
    cp, ctx = control_plane, tls_context(world["ca"])
    expected = {name: allowed for name, (_, allowed) in reviews(cp).items()}
    for proc in (world["a"], world["b"]):
        assert answers(proc, ctx, cp) == expected
    set_slo_status(cp, NS, "spent", written_status(0.5, "SAFE", 0.3))
    t0 = time.monotonic()
    took = {}
    for key in ("a", "b"):

        def allowed(proc: WebhookProcess = world[key]) -> None:
            assert answers(proc, ctx, cp)["checkout-rollout"] is True

        eventually(allowed, timeout=10, interval=0.1)
        took[key] = time.monotonic() - t0
    set_slo_status(cp, NS, "spent", written_status(-0.4, "FREEZE", 2.0))
    for key in ("a", "b"):
        eventually(
            lambda proc=world[key]: _assert(answers(proc, ctx, cp) == expected),
            timeout=10,
            interval=0.1,
        )
    observe(f"recovery seen by webhook A after {took['a']:.1f}s, B after {took['b']:.1f}s")
    for key in ("a", "b"):
        assert log_problems(world[key]) == []


def _assert(ok: bool) -> None:
    assert ok


@matrix_row(
    "a burst of refusals spread over two webhook processes (2 x 10 concurrent)",
    "every refusal is counted once in the gate's blockedCount (test-and-set across replicas, "
    "no lost update) and in its RolloutBlocked Events (repeats aggregated into a count)",
)
def test_concurrent_refusals_counted_once_across_replicas(
    control_plane: ControlPlane, world: dict[str, Any], observe: Callable[[str], None]
) -> None:
    cp, ctx = control_plane, tls_context(world["ca"])

    def count() -> int:
        st = cp.get_json("gate", "checkout", "-n", NS).get("status") or {}
        return int(st.get("blockedCount") or 0)

    def gate_event_list() -> list[dict[str, Any]]:
        return [
            e
            for e in cp.get_json("events", "-n", NS)["items"]
            if e["involvedObject"]["kind"] == "ReleaseGate"
            and e["involvedObject"]["name"] == "checkout"
            and e["reason"] == "RolloutBlocked"
        ]

    def gate_events() -> int:
        return sum(int(e.get("count") or 1) for e in gate_event_list())

    for proc in (world["a"], world["b"]):
        proc.wait_recorded()
    before, events_before, objects_before = count(), gate_events(), len(gate_event_list())
    review, _ = reviews(cp)["checkout-rollout"]
    results: list[bool] = []
    lock = threading.Lock()

    def fire(proc: WebhookProcess) -> None:
        r = copy.deepcopy(review)
        r["request"]["dryRun"] = False
        r["request"]["uid"] = f"burst-{time.monotonic_ns()}-{threading.get_ident()}"
        allowed = bool(post_review(proc.url, r, ctx)["allowed"])
        with lock:
            results.append(allowed)

    threads = [
        threading.Thread(target=fire, args=(world[k],)) for k in ("a", "b") for _ in range(10)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [False] * 20

    for proc in (world["a"], world["b"]):
        proc.wait_recorded()
    objects = len(gate_event_list()) - objects_before
    observe(
        f"blockedCount +{count() - before} for 20 refusals; Event counts +"
        f"{gate_events() - events_before} in {objects} new Event object(s)"
    )
    assert count() - before == 20
    assert gate_events() - events_before == 20
    assert objects <= 4, "repeats within a flush are one Event per replica, not one per refusal"


@matrix_row(
    "a new webhook process starts while the API server is unreachable for it, then reachable",
    "/healthz answers, /readyz is 503 and the admission port stays closed (no answer from an "
    "empty index; the API server applies failurePolicy) until the indexes are loaded; the "
    "first answer after /readyz turns 200 is already correct",
)
def test_new_replica_answers_only_once_its_indexes_are_loaded(
    control_plane: ControlPlane, world: dict[str, Any], observe: Callable[[str], None]
) -> None:
    cp, ctx, work = control_plane, tls_context(world["ca"]), world["work"]
    expected = {name: allowed for name, (_, allowed) in reviews(cp).items()}
    with TcpProxy(cp.api_port) as tcp:
        tcp.refuse()
        kubeconfig = kubeconfig_via(cp, tcp, work / "late.kubeconfig")
        late = StartingWebhook(kubeconfig, work / "late", world["ca"], work / "late.log")
        try:
            deadline = time.monotonic() + 3
            probes = 0
            while time.monotonic() < deadline:
                assert late.readyz() == 503
                review, _ = reviews(cp)["checkout-rollout"]
                with pytest.raises(OSError, match="Connection refused"):  # no answer at all
                    post_review(late.url, review, ctx, timeout=2)
                probes += 1
                time.sleep(0.2)
            tcp.accept()
            t0 = time.monotonic()
            while late.readyz() != 200:
                assert time.monotonic() - t0 < 60, late.log_tail()
                time.sleep(0.02)
            ready_after = time.monotonic() - t0
            first = answers(late, ctx, cp)
            observe(
                f"{probes} reviews while not ready: all refused at the TCP level; "
                f"ready {ready_after:.1f}s after the API server became reachable; first "
                f"answers correct"
            )
            assert first == expected
            assert log_problems(late) == []
        finally:
            late.stop()


def _serial(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


def _review_with_serial(port: int, review: dict[str, Any], ctx: ssl.SSLContext) -> tuple[bool, int]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
    try:
        body = json.dumps(review).encode()
        conn.request("POST", "/validate-deployments", body, {"content-type": "application/json"})
        assert conn.sock is not None
        der = conn.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
        resp = conn.getresponse()
        assert resp.status == 200, resp.status
        out = json.loads(resp.read())["response"]
        assert out["uid"] == review["request"]["uid"]
        return bool(out["allowed"]), x509.load_der_x509_certificate(der).serial_number
    finally:
        conn.close()


def _kubelet_layout(dirpath: Path, ca: CertificateAuthority, generation: int) -> int:
    """Write a new pair the way the kubelet updates a mounted Secret: a new timestamped dir,
    then an atomic rename of the ``..data`` symlink. Returns the new certificate's serial."""
    pair = ca.serving("slogate-webhook")
    target = dirpath / f"..gen{generation}"
    target.mkdir()
    pair.write(target / "tls.crt", target / "tls.key")
    tmp = dirpath / "..data_tmp"
    tmp.symlink_to(target.name)
    os.replace(tmp, dirpath / "..data")
    for name in ("tls.crt", "tls.key"):
        link = dirpath / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")
    return _serial(pair.cert_pem)


def _in_place(dirpath: Path, ca: CertificateAuthority) -> int:
    """Overwrite the files in place, certificate first: for a moment the pair does not match."""
    pair = ca.serving("slogate-webhook")
    data = dirpath / "..data"
    (data / "tls.crt").write_bytes(pair.cert_pem)
    time.sleep(0.05)
    (data / "tls.key").write_bytes(pair.key_pem)
    return _serial(pair.cert_pem)


@matrix_row(
    "certificate rotation under continuous load: 6 rotations in 6 s (kubelet-style atomic "
    "symlink swaps and non-atomic in-place rewrites), direct HTTPS reviews plus kubectl "
    "dry-run rollouts through the API server with failurePolicy Fail",
    "zero failed or wrong answers; the listening socket never closes; new connections get "
    "the new certificate right after each rotation",
)
def test_certificate_rotation_under_load_fails_no_request(
    control_plane: ControlPlane, world: dict[str, Any], observe: Callable[[str], None]
) -> None:
    cp, ca, work = control_plane, world["ca"], world["work"]
    certs = work / "rot"
    certs.mkdir()
    serials = [_kubelet_layout(certs, ca, 0)]
    hook = WebhookProcess(cp.kubeconfig, certs, ca, work / "rot.log")
    ctx = tls_context(ca)
    review, _ = reviews(cp)["checkout-rollout"]
    stop = threading.Event()
    direct_ok, failures, seen = [0], [], set()
    kubectl_ok = [0]
    lock = threading.Lock()

    def direct() -> None:
        while not stop.is_set():
            r = copy.deepcopy(review)
            r["request"]["uid"] = f"rot-{time.monotonic_ns()}"
            try:
                allowed, serial = _review_with_serial(hook.port, r, ctx)
                assert allowed is False
                with lock:
                    direct_ok[0] += 1
                    seen.add(serial)
            except Exception as exc:
                with lock:
                    failures.append(f"direct: {type(exc).__name__}: {exc}")

    def through_apiserver() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            result = cp.kubectl(
                "set",
                "image",
                "deployment/checkout",
                f"main=shop/checkout:rot{n}",
                "-n",
                NS,
                "--dry-run=server",
            )
            if result.returncode != 0 and "ReleaseGate rel-hook/checkout" in result.stderr:
                with lock:
                    kubectl_ok[0] += 1
            else:
                with lock:
                    failures.append(f"kubectl: {result.returncode} {result.stderr.strip()}")

    config = hook.configuration(failure_policy="Fail")
    config["metadata"]["name"] = "slogate-rel-hook"
    config["webhooks"][0]["namespaceSelector"] = {
        "matchLabels": {"kubernetes.io/metadata.name": NS}
    }
    try:
        with webhook_configuration(cp, config):
            # The configuration reaches the API server's webhook client within a second or so.
            eventually(
                lambda: _assert(
                    "ReleaseGate rel-hook/checkout"
                    in cp.kubectl(
                        "set",
                        "image",
                        "deployment/checkout",
                        "main=x:probe",
                        "-n",
                        NS,
                        "--dry-run=server",
                    ).stderr
                ),
                timeout=30,
            )
            workers = [threading.Thread(target=direct) for _ in range(2)]
            workers.append(threading.Thread(target=through_apiserver))
            for w in workers:
                w.start()
            time.sleep(1.0)
            for i in range(1, 7):
                serials.append(_kubelet_layout(certs, ca, i) if i % 2 else _in_place(certs, ca))
                time.sleep(1.0)
            time.sleep(1.0)
            stop.set()
            for w in workers:
                w.join(30)
            # After the last rotation, a new connection gets the last certificate.
            last_allowed, last_serial = _review_with_serial(hook.port, review, ctx)
    finally:
        stop.set()
        hook.stop()
    observe(
        f"{direct_ok[0]} direct reviews and {kubectl_ok[0]} API-server rollouts answered, "
        f"{len(failures)} failed; clients saw {len(seen & set(serials))} of {len(serials)} "
        f"certificates"
    )
    assert failures == []
    assert direct_ok[0] >= 50 and kubectl_ok[0] >= 10
    assert last_allowed is False and last_serial == serials[-1]
    # Every rotation was live for a second: clients must have met most of the certificates.
    assert len(seen & set(serials)) >= 5
    assert log_problems(hook) == []


@matrix_row(
    "clients that do not speak TLS (plain HTTP) or only old TLS (1.0/1.1) to the admission port",
    "the admission port serves only TLS >= 1.2 with a certificate valid for its address; plain "
    "HTTP gets no HTTP answer; the probe/metrics port does not serve admission",
)
def test_webhook_serves_only_tls(
    control_plane: ControlPlane, world: dict[str, Any], observe: Callable[[str], None]
) -> None:
    cp, hook = control_plane, world["a"]
    review, _ = reviews(cp)["checkout-rollout"]
    body = json.dumps(review).encode()
    # Plain HTTP to the admission port: no HTTP response comes back.
    with socket.create_connection(("127.0.0.1", hook.port), timeout=5) as s:
        s.sendall(
            b"POST /validate-deployments HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + body
        )
        reply = b""
        try:
            while chunk := s.recv(4096):
                reply += chunk
        except ConnectionResetError:
            pass
    assert not reply.startswith(b"HTTP/"), reply[:200]
    # Old TLS is refused by the server (the client here allows TLS 1.0/1.1 explicitly).
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    old.set_ciphers("DEFAULT@SECLEVEL=0")
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 is deprecated: the point
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with (
        pytest.raises(ssl.SSLError) as refused,
        socket.create_connection(("127.0.0.1", hook.port), timeout=5) as raw,
        old.wrap_socket(raw),
    ):
        pass
    # Modern TLS works, with hostname verification of 127.0.0.1 against the CA.
    ctx = tls_context(world["ca"])
    with (
        socket.create_connection(("127.0.0.1", hook.port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        version = tls.version()
    assert version in ("TLSv1.2", "TLSv1.3")
    # The plain-HTTP probe port does not answer admission.
    conn = http.client.HTTPConnection("127.0.0.1", hook.metrics_port, timeout=5)
    conn.request("POST", "/validate-deployments", body, {"content-type": "application/json"})
    status = conn.getresponse().status
    conn.close()
    assert status in (404, 405)
    assert hook.configuration()["webhooks"][0]["clientConfig"]["url"].startswith("https://")
    observe(
        f"plain HTTP: {len(reply)} bytes back, no HTTP response; TLS 1.1: "
        f"{refused.value.reason or type(refused.value).__name__}; negotiated {version}; "
        f"probe port answers admission with {status}"
    )


# --- the index's watches, request volume and size, client certificates ------------------------


def _probe(hook: WebhookProcess, path: str = "/readyz") -> tuple[int, str]:
    url = f"http://127.0.0.1:{hook.metrics_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


def _review_for(cp: ControlPlane, name: str, image: str = "x:9") -> dict[str, Any]:
    dep = cp.get_json("deployment", name, "-n", NS)
    new = copy.deepcopy(dep)
    new["spec"]["template"]["spec"]["containers"][0]["image"] = image
    return admission_review(dep, new)


def _scoped(config: dict[str, Any], name: str) -> dict[str, Any]:
    """A webhook configuration of its own name that applies to this module's namespace only."""
    config["metadata"]["name"] = name
    config["webhooks"][0]["namespaceSelector"] = {
        "matchLabels": {"kubernetes.io/metadata.name": NS}
    }
    return config


@matrix_row(
    "the API server becomes unreachable for a running webhook replica: its watches are cut (TCP "
    "reset) and new connections refused, longer than --watch-grace-seconds (3 s here); a "
    "blocking gate is created meanwhile; then the API server is reachable again",
    "/readyz stays 200 within the grace, then answers 503 naming each watch that is down and "
    "since when, and slogate_webhook_watch_up is 0 (a frozen index no longer claims to be "
    "ready); once reachable, ready again within seconds, watch_up 1, and the gate created "
    "meanwhile refuses its rollout",
)
def test_watch_outage_turns_readiness_off_and_back_on(
    control_plane: ControlPlane, world: dict[str, Any], observe: Callable[[str], None]
) -> None:
    cp, ctx, work = control_plane, tls_context(world["ca"]), world["work"]
    apply(cp, deployment("latecomer", NS, "latecomer"))
    with TcpProxy(cp.api_port) as tcp:
        kubeconfig = kubeconfig_via(cp, tcp, work / "outage.kubeconfig")
        hook = WebhookProcess(
            kubeconfig,
            work / "outage",
            world["ca"],
            work / "outage.log",
            extra=("--watch-grace-seconds", "3"),
        )
        try:
            assert _probe(hook) == (200, "ok")
            assert hook.metric("slogate_webhook_watch_up", kind="releasegates") == 1
            tcp.refuse()
            cut = tcp.drop()
            t0 = time.monotonic()
            apply(cp, release_gate("latecomer", NS, "latecomer", ["spent"]))
            assert _probe(hook)[0] == 200  # within the grace
            while (probe := _probe(hook))[0] != 503:
                assert time.monotonic() - t0 < 20, probe
                time.sleep(0.1)
            unready_after = time.monotonic() - t0
            status, text = probe
            for kind in ("servicelevelobjectives", "releasegates", "replicasets"):
                assert f"{kind}: watch down since 20" in text, text
            assert "Connection refused" in text or "ConnectionRefused" in text, text
            assert hook.metric("slogate_webhook_watch_up", kind="releasegates") == 0
            frozen = post_review(hook.url, _review_for(cp, "latecomer"), ctx)["allowed"]
            tcp.accept()
            t1 = time.monotonic()
            while _probe(hook)[0] != 200:
                assert time.monotonic() - t1 < 30, _probe(hook)
                time.sleep(0.1)
            ready_after = time.monotonic() - t1
            assert hook.metric("slogate_webhook_watch_up", kind="releasegates") == 1
            caught_up = post_review(hook.url, _review_for(cp, "latecomer"), ctx)
            assert caught_up["allowed"] is False
            assert "ReleaseGate rel-hook/latecomer" in caught_up["status"]["message"]
            observe(
                f"{cut} connections cut; /readyz 503 after {unready_after:.1f}s ({status}: "
                f"{text.splitlines()[1][:90]}...); meanwhile the frozen index "
                f"{'admitted' if frozen else 'refused'} the new gate's rollout; ready again "
                f"{ready_after:.1f}s after the API server was reachable, and it refuses"
            )
            assert log_problems(hook) == []
        finally:
            hook.stop()
            cp.kubectl("delete", "gate", "latecomer", "-n", NS)


@matrix_row(
    "kube-apiserver restarts while a webhook replica is cut off from it, and a blocking gate is "
    "deleted meanwhile: the replica's watches resume from resourceVersions the new API server's "
    "watch cache does not have (410 Gone)",
    "the replica lists again (slogate_webhook_watch_relists_total), drops the gate deleted "
    "while it was not watching, and admits that gate's rollouts again",
)
def test_expired_watch_lists_again_and_drops_what_was_deleted(
    control_plane: ControlPlane, world: dict[str, Any], observe: Callable[[str], None]
) -> None:
    cp, ctx, work = control_plane, tls_context(world["ca"]), world["work"]
    apply(
        cp,
        deployment("relisted", NS, "relisted"),
        release_gate("relisted", NS, "relisted", ["spent"]),
    )
    with TcpProxy(cp.api_port) as tcp:
        kubeconfig = kubeconfig_via(cp, tcp, work / "relist.kubeconfig")
        hook = WebhookProcess(kubeconfig, work / "relist", world["ca"], work / "relist.log")
        try:
            review = _review_for(cp, "relisted")
            eventually(lambda: _assert(not post_review(hook.url, review, ctx)["allowed"]))
            before = hook.metric("slogate_webhook_watch_relists_total", kind="releasegates")
            tcp.refuse()
            tcp.drop()
            cp.kubectl("delete", "gate", "relisted", "-n", NS, check=True)
            cp.stop_apiserver()
            cp.start_apiserver()
            tcp.accept()
            t0 = time.monotonic()
            eventually(lambda: _assert(post_review(hook.url, review, ctx)["allowed"]), timeout=30)
            took = time.monotonic() - t0
            relists = hook.metric("slogate_webhook_watch_relists_total", kind="releasegates")
            assert relists > before
            assert _probe(hook)[0] == 200
            observe(
                f"gate dropped {took:.1f}s after the API server was back; releasegates listed "
                f"again {relists - before:.0f} time(s)"
            )
            assert log_problems(hook) == []
        finally:
            hook.stop()


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))


def _post_forged(port: int, ctx: ssl.SSLContext, template: str, count: int, workers: int) -> int:
    """POST ``count`` reviews made from ``template`` (a JSON text with REQUEST-UID and
    OBJECT-UID placeholders, new random values each time) over keep-alive connections; the
    number allowed."""
    allowed = [0] * workers

    def worker(slot: int) -> None:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
        try:
            for _ in range(count // workers):
                body = template.replace("REQUEST-UID", str(uuid.uuid4()))
                body = body.replace("OBJECT-UID", str(uuid.uuid4()))
                conn.request("POST", "/validate-deployments", body.encode(), HEADERS)
                answer = json.loads(conn.getresponse().read())["response"]
                allowed[slot] += bool(answer["allowed"])
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return sum(allowed)


HEADERS = {"content-type": "application/json"}


def _post_once(port: int, ctx: ssl.SSLContext, review: dict[str, Any]) -> bytes:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
    try:
        conn.request("POST", "/validate-deployments", json.dumps(review), HEADERS)
        return conn.getresponse().read()
    finally:
        conn.close()


@matrix_row(
    "20,000 forged AdmissionReviews with random request and object uids posted straight to a "
    "webhook's admission port (no client certificate required), 4 clients on keep-alive "
    "connections",
    "every one answered correctly, and nothing is kept per request: the process's RSS after "
    "them is within 4 MiB of its RSS after a warm-up of 2,000 (kopf's admission kept a memo "
    "per object uid, growing without bound)",
)
def test_forged_reviews_do_not_grow_memory(
    control_plane: ControlPlane, world: dict[str, Any], observe: Callable[[str], None]
) -> None:
    cp, hook = control_plane, world["a"]
    review, must_allow = reviews(cp)["cart-rollout"]
    assert must_allow
    review["request"]["uid"] = "REQUEST-UID"
    for side in ("object", "oldObject"):
        review["request"][side]["metadata"]["uid"] = "OBJECT-UID"
    template = json.dumps(review)
    ctx = tls_context(world["ca"])
    assert _post_forged(hook.port, ctx, template, 2_000, 4) == 2_000
    warm = _rss_kib(hook.pid)
    t0 = time.monotonic()
    assert _post_forged(hook.port, ctx, template, 20_000, 4) == 20_000
    took = time.monotonic() - t0
    after = _rss_kib(hook.pid)
    observe(
        f"RSS {warm / 1024:.1f} MiB after warm-up, {after / 1024:.1f} MiB after 20,000 more "
        f"({(after - warm) / 1024:+.2f} MiB); {20_000 / took:.0f} reviews/s"
    )
    assert after - warm < 4 * 1024
    assert log_problems(hook) == []


@matrix_row(
    "a gated Deployment close to etcd's object limit (1.35 MiB of env values) gets a new "
    "image while its gate blocks: the API server's UPDATE review carries it twice (about "
    "2.7 MiB of JSON)",
    "the review is judged and the rollout refused (aiohttp's default 1 MiB body limit answered "
    "413, and failurePolicy Ignore admitted it unjudged); a webhook started with "
    "--max-review-bytes 1048576 shows that failure: 413, slogate_webhook_bad_reviews_total"
    '{reason="too_large"} counts it, the rollout is admitted',
)
def test_review_of_a_deployment_near_the_etcd_limit_is_judged(
    control_plane: ControlPlane, world: dict[str, Any], observe: Callable[[str], None]
) -> None:
    cp, work = control_plane, world["work"]
    bulky = deployment("bulky", NS, "bulky")
    bulky["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": f"BLOB_{i}", "value": "x" * 50_000} for i in range(27)
    ]
    # Not `kubectl apply`: its last-applied annotation would exceed the 256 KiB annotation limit.
    created = cp.kubectl("create", "-f", "-", input=json.dumps(bulky))
    assert created.returncode == 0, created.stderr
    apply(cp, release_gate("bulky", NS, "bulky", ["spent"]))
    small = WebhookProcess(
        cp.kubeconfig,
        work / "small",
        world["ca"],
        work / "small.log",
        extra=("--max-review-bytes", str(1024 * 1024)),
    )

    def set_image(image: str, *extra: str) -> Any:
        return cp.kubectl(
            "set", "image", "deployment/bulky", f"main={image}", "-n", NS, *extra, timeout=60
        )

    try:
        with webhook_configuration(cp, _scoped(small.configuration(), "slogate-rel-big")):

            def admitted_unjudged() -> None:
                result = set_image("shop/bulky:2", "--dry-run=server")
                assert result.returncode == 0, result.stderr
                assert small.metric("slogate_webhook_bad_reviews_total", reason="too_large") > 0

            eventually(admitted_unjudged)
        config = _scoped(world["a"].configuration(), "slogate-rel-big")
        with webhook_configuration(cp, config):

            def refused() -> None:
                result = set_image("shop/bulky:2", "--dry-run=server")
                assert "ReleaseGate rel-hook/bulky" in result.stderr, result.stderr

            eventually(refused)
            result = set_image("shop/bulky:3")
            assert result.returncode != 0
            assert "ReleaseGate rel-hook/bulky" in result.stderr
        size = len(json.dumps(cp.get_json("deployment", "bulky", "-n", NS)))
        observe(
            f"Deployment of {size / 2**20:.2f} MiB as JSON: refused by the webhook with the "
            f"default limit; with a 1 MiB limit: 413 and admitted unjudged"
        )
        assert log_problems(world["a"]) == []
    finally:
        small.stop()
        cp.kubectl("delete", "deployment", "bulky", "-n", NS, "--wait=false")
        cp.kubectl("delete", "gate", "bulky", "-n", NS)


@matrix_row(
    "a webhook started with --client-ca-file (the CA of the API server's webhook client "
    "certificate) gets reviews straight to its port: without a client certificate, with one "
    "from another CA, and with a user's certificate signed by the cluster CA",
    "each is refused in the TLS handshake, with no HTTP answer; the real API server presents "
    "its certificate (AdmissionConfiguration kubeconfig) and is answered: a blocked rollout is "
    "refused",
)
def test_client_certificate_required(
    control_plane: ControlPlane, world: dict[str, Any], observe: Callable[[str], None]
) -> None:
    cp, work = control_plane, world["work"]
    hook = WebhookProcess(
        cp.kubeconfig, work / "mtls", world["ca"], work / "mtls.log", client_ca=cp.webhook_client_ca
    )
    try:
        review, _ = reviews(cp)["checkout-rollout"]
        outsiders: dict[str, ssl.SSLContext] = {"no certificate": tls_context(world["ca"])}
        other = CertificateAuthority("rel-hook-other-ca")
        other.client("kube-apiserver").write(work / "other.crt", work / "other.key")
        user = cp.write_kubeconfig(work / "mallory.kubeconfig", "mallory", ("system:masters",))
        for name, (cert, key) in {
            "another CA": (work / "other.crt", work / "other.key"),
            "a cluster user's": (user.with_suffix(".crt"), user.with_suffix(".key")),
        }.items():
            ctx = tls_context(world["ca"])
            ctx.load_cert_chain(str(cert), str(key))
            outsiders[name] = ctx
        refusals = {}
        for name, ctx in outsiders.items():
            with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)) as err:
                _post_once(hook.port, ctx, review)
            refusals[name] = type(err.value).__name__

        def set_image(*extra: str) -> Any:
            return cp.kubectl(
                "set", "image", "deployment/checkout", "main=x:mtls", "-n", NS, *extra
            )

        with webhook_configuration(cp, _scoped(hook.configuration(), "slogate-rel-mtls")):
            eventually(
                lambda: _assert(
                    "ReleaseGate rel-hook/checkout" in set_image("--dry-run=server").stderr
                )
            )
            result = set_image()
            assert result.returncode != 0 and "ReleaseGate rel-hook/checkout" in result.stderr
        observe(
            "direct reviews: "
            + ", ".join(f"{name}: {kind}" for name, kind in refusals.items())
            + "; the API server's reviews answered (rollout refused)"
        )
        assert log_problems(hook) == []
    finally:
        hook.stop()
