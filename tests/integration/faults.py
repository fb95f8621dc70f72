"""Helpers for the reliability tests: a TCP proxy in front of kube-apiserver, a chaos admission
webhook that answers 409 on command, direct AdmissionReview calls, CPU and log checks.

Everything here is real: the TCP proxy forwards bytes to the real API server (so TLS and client
certificates pass through untouched) and can cut every open connection with a TCP reset; the
chaos webhook is called by the real API server, so a 409 it asks for is a real 409 the operator
receives from the API server.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import socket
import ssl
import struct
import threading
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
from localenv.processes import Process, free_port
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


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (from /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


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


# --- a TCP proxy in front of kube-apiserver ----------------------------------------------------


class TcpProxy:
    """Forwards TCP connections on a loopback port to ``target``; can reset them all at once.

    ``drop()`` aborts every open connection with a TCP reset (a dropped watch, a load balancer
    restarting) while still accepting new ones; ``refuse()`` stops listening, ``accept()`` listens
    again on the same port; ``stall()`` holds every byte in both directions (an API server that
    accepts but does not answer) until ``flow()``.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self.accepted = 0
        self.dropped = 0
        self._flowing = threading.Event()
        self._flowing.set()

    def __enter__(self) -> TcpProxy:
        self.accept()
        return self

    def __exit__(self, *exc: object) -> None:
        self.flow()
        self.refuse()
        self.drop()
        for t in self._threads:
            t.join(5)

    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def accept(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.port))
            sock.listen(64)
            self._listener = sock
        thread = threading.Thread(target=self._accept_loop, args=(sock,), daemon=True)
        thread.start()
        self._threads.append(thread)

    def refuse(self) -> None:
        with self._lock:
            sock, self._listener = self._listener, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def drop(self) -> int:
        """Reset every open connection; returns how many were cut."""
        with self._lock:
            conns = list(self._conns)
            self._conns.clear()
        for conn in conns:
            # Linger 0 turns the final close into a reset. shutdown(SHUT_RD) first wakes the pump
            # thread blocked in recv(): a socket is only released (and the RST sent) once no
            # system call holds it any more.
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RD)
            with contextlib.suppress(OSError):
                conn.close()
        self.dropped += len(conns)
        return len(conns)

    def stall(self) -> None:
        self._flowing.clear()

    def flow(self) -> None:
        self._flowing.set()

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._conns)

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.update((client, upstream))
                self.accepted += 1
            for a, b in ((client, upstream), (upstream, client)):
                t = threading.Thread(target=self._pump, args=(a, b), daemon=True)
                t.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                while not self._flowing.wait(0.5):
                    pass
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
            with self._lock:
                self._conns.discard(src)


def kubeconfig_via(cp: ControlPlane, proxy: TcpProxy, path: Path) -> Path:
    """A copy of the admin kubeconfig whose server is the proxy (same certificates)."""
    config = yaml.safe_load(cp.kubeconfig.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = proxy.url()
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


# --- a chaos admission webhook -----------------------------------------------------------------


class ChaosWebhook:
    """A validating webhook the real API server calls for ``resources``; it refuses the next
    ``n`` requests with an HTTP-like status code (409 Conflict by default) and allows the rest.
    """

    def __init__(self, ca: CertificateAuthority, workdir: Path, name: str = "chaos") -> None:
        self.ca = ca
        self.name = name
        workdir.mkdir(parents=True, exist_ok=True)
        cert, key = workdir / "chaos.crt", workdir / "chaos.key"
        ca.serving("chaos-webhook").write(cert, key)
        self._lock = threading.Lock()
        self._remaining = 0
        self._code = 409
        self._only: Callable[[dict[str, Any]], bool] = lambda _: True
        self.refused: list[dict[str, Any]] = []
        self.seen = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                review = json.loads(body)
                response = outer._answer(review["request"])
                out = json.dumps(
                    {
                        "apiVersion": "admission.k8s.io/v1",
                        "kind": "AdmissionReview",
                        "response": response,
                    }
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def fail_next(
        self, n: int, code: int = 409, only: Callable[[dict[str, Any]], bool] | None = None
    ) -> None:
        with self._lock:
            self._remaining, self._code = n, code
            self._only = only or (lambda _: True)
            self.refused.clear()

    @property
    def remaining(self) -> int:
        with self._lock:
            return self._remaining

    def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.seen += 1
            if self._remaining > 0 and self._only(request):
                self._remaining -= 1
                self.refused.append(request)
                return {
                    "uid": request["uid"],
                    "allowed": False,
                    "status": {
                        "code": self._code,
                        "reason": "Conflict" if self._code == 409 else "InternalError",
                        "message": "injected by the reliability tests' chaos webhook: the "
                        "object has been modified; please apply your changes to the latest "
                        "version and try again",
                    },
                }
        return {"uid": request["uid"], "allowed": True}

    def configuration(self, rules: list[dict[str, Any]]) -> dict[str, Any]:
        import base64

        return {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": f"slogate-{self.name}"},
            "webhooks": [
                {
                    "name": f"{self.name}.reliability.slogate.dev",
                    "clientConfig": {
                        "url": f"https://127.0.0.1:{self.port}/",
                        "caBundle": base64.b64encode(self.ca.cert_pem).decode(),
                    },
                    "rules": rules,
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "failurePolicy": "Ignore",
                    "timeoutSeconds": 3,
                }
            ],
        }


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
