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
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from slogate.localenv.certs import CertificateAuthority
from slogate.localenv.controlplane import ControlPlane
from slogate.localenv.objects import deployment, release_gate
from slogate.localenv.roles import WebhookProcess
from tests.integration.faults import (
    StartingWebhook,
    TcpProxy,
    admission_review,
    apply,
    eventually,
    kubeconfig_via,
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
