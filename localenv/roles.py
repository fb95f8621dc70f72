"""Running slogate's own roles (controller, webhook) as real processes for tests and the demo."""

from __future__ import annotations

import base64
import re
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from localenv.certs import CertificateAuthority
from localenv.processes import Process, free_port, wait_until
from localenv.webhookconfig import validating_webhook_configuration
from slogate.core.webhookroutes import DEPLOYMENTS


def metric_value(text: str, metric_name: str, /, **labels: str) -> float:
    """Sum of the samples of ``metric_name`` in exposition ``text`` whose labels include
    ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$", line)
        if not match or match.group(1) != metric_name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total


class RoleProcess(Process):
    """A slogate role whose operator metrics are served on ``metrics_port``."""

    metrics_port: int

    def metrics_text(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return str(resp.read().decode())

    def metric(self, metric_name: str, /, **labels: str) -> float:
        return metric_value(self.metrics_text(), metric_name, **labels)


class ControllerProcess(RoleProcess):
    """``python -m slogate controller`` against the given kubeconfig and Prometheus."""

    def __init__(self, kubeconfig: Path, prometheus_url: str, log_path: Path, *extra: str) -> None:
        self.metrics_port = free_port()
        self.liveness_port = free_port()
        super().__init__(
            "slogate-controller",
            [
                sys.executable,
                "-m",
                "slogate",
                "controller",
                "--kubeconfig",
                str(kubeconfig),
                "--prometheus-url",
                prometheus_url,
                "--metrics-port",
                str(self.metrics_port),
                "--liveness-port",
                str(self.liveness_port),
                *extra,
            ],
            log_path,
        )
        wait_until(self.healthy, self, 60, "the controller answered /healthz")

    def healthy(self) -> bool:
        url = f"http://127.0.0.1:{self.liveness_port}/healthz"
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)


class WebhookProcess(RoleProcess):
    """``python -m slogate webhook`` with a serving certificate for 127.0.0.1 from ``ca``.

    ``client_ca``: require client certificates signed by it (``--client-ca-file``), e.g.
    :attr:`ControlPlane.webhook_client_ca <localenv.controlplane.ControlPlane>`, whose
    certificate the local API server presents to every webhook. ``extra``: more flags.
    """

    def __init__(
        self,
        kubeconfig: Path,
        workdir: Path,
        ca: CertificateAuthority,
        log_path: Path,
        port: int = 0,
        *,
        client_ca: Path | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        self.port = port or free_port()
        self.metrics_port = free_port()
        self.workdir = workdir
        self.ca = ca
        self.client_ca = client_ca
        flags = [*extra]
        if client_ca is not None:
            flags += ["--client-ca-file", str(client_ca)]
        workdir.mkdir(parents=True, exist_ok=True)
        self.cert_file, self.key_file = workdir / "tls.crt", workdir / "tls.key"
        if not self.cert_file.exists():
            ca.serving("slogate-webhook").write(self.cert_file, self.key_file)
        super().__init__(
            "slogate-webhook",
            [
                sys.executable,
                "-m",
                "slogate",
                "webhook",
                "--kubeconfig",
                str(kubeconfig),
                "--tls-cert-file",
                str(self.cert_file),
                "--tls-key-file",
                str(self.key_file),
                "--port",
                str(self.port),
                "--metrics-port",
                str(self.metrics_port),
                "--log-format",
                "plain",
                *flags,
            ],
            log_path,
        )
        wait_until(self.ready, self, 60, "the webhook answered /readyz")

    def ready(self) -> bool:
        url = f"http://127.0.0.1:{self.metrics_port}/readyz"
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)

    def wait_recorded(self, timeout: float = 20) -> None:
        """Until every refusal answered so far is written to its gate's status and Events
        (the webhook writes them in batches, about once a second)."""
        wait_until(
            lambda: self.metric("slogate_webhook_unrecorded_refusals") == 0,
            self,
            timeout,
            "the webhook recorded its refusals",
        )

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """Where Deployment reviews go (the other routes: ``base_url`` + their path)."""
        return f"{self.base_url}{DEPLOYMENTS.path}"

    def configuration(
        self, failure_policy: str = "Ignore", operator_namespace: str = "slogate-system"
    ) -> dict[str, Any]:
        return validating_webhook_configuration(
            {"url": self.base_url, "caBundle": base64.b64encode(self.ca.cert_pem).decode()},
            operator_namespace=operator_namespace,
            failure_policy=failure_policy,  # type: ignore[arg-type]
        )
