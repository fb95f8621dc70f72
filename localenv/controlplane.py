"""A real Kubernetes control plane on loopback: etcd, kube-apiserver and kube-controller-manager
(no Docker needed).

kube-controller-manager runs only the controllers in :data:`CONTROLLERS` (the aggregation of the
default ClusterRoles, so ``edit`` holds the rules the chart aggregates into it). No kubelet or
scheduler runs: Deployments are stored but no ReplicaSets or Pods appear (tests make those as the
Deployment controller's identity, :attr:`ControlPlane.controller_kubeconfig`), and namespaces
never finish terminating. That is all slogate needs: its CRDs, its status writes and the
admission webhook calls are the API server's own work.

The API server presents a client certificate to every admission webhook (an
AdmissionConfiguration whose webhook kubeconfig has a ``*`` user), signed by its own CA,
:attr:`ControlPlane.webhook_client_ca`: a webhook started with that CA as ``--client-ca-file``
answers only this API server.
"""

from __future__ import annotations

import base64
import functools
import json
import shutil
import ssl
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from localenv.binaries import bin_dir, tool
from localenv.certs import CertificateAuthority, rsa_signing_key_pem
from localenv.processes import Process, Server, free_port, wait_until

ADMIN_USER = "slogate-admin"
WEBHOOK_CLIENT_USER = "kube-apiserver-webhook-client"
# The controllers of kube-controller-manager the local control plane runs.
CONTROLLERS = ("clusterrole-aggregation",)


class ControlPlane(Server):
    """``with ControlPlane() as cp:`` starts etcd and kube-apiserver; leaving stops both."""

    def __init__(self, workdir: Path | None = None, keep: bool = False) -> None:
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="slogate-cp-"))
        self.keep = keep
        self.etcd: Process | None = None
        self.apiserver: Process | None = None
        self.controller_manager: Process | None = None
        self.ca = CertificateAuthority("slogate-local-kubernetes-ca")
        # Its own CA, not the cluster's: a user's client certificate (signed by the cluster
        # CA) must not pass a webhook that trusts only the API server.
        self.webhook_client_ca_authority = CertificateAuthority("slogate-local-webhook-client-ca")
        self.pki = self.dir / "pki"
        self.api_port = 0
        self.etcd_port = 0

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        bin_dir()  # fail early and clearly if the binaries are missing
        self.pki.mkdir(parents=True, exist_ok=True)
        self._write_pki()
        self.start_etcd()
        self.start_apiserver()
        self.write_kubeconfig(self.kubeconfig, ADMIN_USER, ("system:masters",))
        self.start_controller_manager()

    def start_etcd(self) -> None:
        self.etcd_port, peer = free_port(), free_port()
        data = self.dir / "etcd"
        data.mkdir(exist_ok=True)
        url = f"http://127.0.0.1:{self.etcd_port}"
        self.etcd = Process(
            "etcd",
            [
                tool("etcd"),
                "--data-dir",
                str(data),
                "--name",
                "slogate-local",
                "--listen-client-urls",
                url,
                "--advertise-client-urls",
                url,
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--initial-cluster",
                f"slogate-local=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
            ],
            self.dir / "etcd.log",
        )
        wait_until(lambda: _http_ok(f"{url}/health"), self.etcd, 60, "etcd answered /health")

    def start_apiserver(self) -> None:
        """Start (or restart, keeping etcd and the port) kube-apiserver."""
        if not self.api_port:
            self.api_port = free_port()
        p = self.pki
        self.apiserver = Process(
            "kube-apiserver",
            [
                tool("kube-apiserver"),
                "--etcd-servers",
                f"http://127.0.0.1:{self.etcd_port}",
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
                "--secure-port",
                str(self.api_port),
                "--endpoint-reconciler-type",
                "none",
                "--cert-dir",
                str(p),
                "--tls-cert-file",
                str(p / "apiserver.crt"),
                "--tls-private-key-file",
                str(p / "apiserver.key"),
                "--client-ca-file",
                str(p / "ca.crt"),
                "--service-account-issuer",
                f"https://127.0.0.1:{self.api_port}",
                "--service-account-key-file",
                str(p / "sa.pub"),
                "--service-account-signing-key-file",
                str(p / "sa.key"),
                "--service-cluster-ip-range",
                "10.0.0.0/24",
                "--authorization-mode",
                "RBAC",
                "--disable-admission-plugins",
                "ServiceAccount",
                "--admission-control-config-file",
                str(p / "admission.yaml"),
                "--allow-privileged",
                "--profiling=false",
                "--v=1",
            ],
            self.dir / "kube-apiserver.log",
        )
        wait_until(self._ready, self.apiserver, 120, "kube-apiserver answered /readyz")

    def start_controller_manager(self) -> None:
        """kube-controller-manager with the controllers these tests rely on: the aggregation
        of ClusterRoles (the default ``view``/``edit``/``admin`` roles get their rules, the
        chart's included, only from it). No kubelet or scheduler runs: nothing else is needed
        here yet."""
        self.controller_manager = Process(
            "kube-controller-manager",
            [
                tool("kube-controller-manager"),
                "--kubeconfig",
                str(self.controller_kubeconfig),
                "--controllers",
                ",".join(CONTROLLERS),
                "--leader-elect=false",
                "--secure-port=0",
                "--use-service-account-credentials=false",
                "--service-account-private-key-file",
                str(self.pki / "sa.key"),
                "--root-ca-file",
                str(self.pki / "ca.crt"),
                "--v=1",
            ],
            self.dir / "kube-controller-manager.log",
        )
        wait_until(
            self._roles_aggregated,
            self.controller_manager,
            60,
            "kube-controller-manager aggregated the default ClusterRoles",
        )

    def _roles_aggregated(self) -> bool:
        got = self.kubectl("get", "clusterrole", "edit", "-o", "jsonpath={.rules[*].verbs}")
        return got.returncode == 0 and "create" in got.stdout

    def stop_apiserver(self) -> None:
        if self.apiserver is not None:
            self.apiserver.stop()

    def stop(self) -> None:
        for proc in (self.controller_manager, self.apiserver, self.etcd):
            if proc is not None:
                proc.stop()
        if self._own_dir and not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    # --- access ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def webhook_client_ca(self) -> Path:
        """The CA of the client certificate this API server presents to admission webhooks
        (for a webhook's ``--client-ca-file``)."""
        return self.pki / "webhook-client-ca.crt"

    def write_kubeconfig(self, path: Path, user: str, groups: tuple[str, ...] = ()) -> Path:
        """A kubeconfig that authenticates as ``user`` in ``groups`` by client certificate."""
        pair = self.ca.client(user, groups)
        stem = path.with_suffix("")
        pair.write(stem.with_suffix(".crt"), stem.with_suffix(".key"))
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority": str(self.pki / "ca.crt"),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate": str(stem.with_suffix(".crt")),
                        "client-key": str(stem.with_suffix(".key")),
                    },
                }
            ],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
            "current-context": "local",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    @functools.cached_property
    def controller_kubeconfig(self) -> Path:
        """Credentials as the Deployment controller's identity (``system:kube-controller-manager``):
        no controller-manager runs here, so what it would make (ReplicaSets) is made with these,
        and the webhook lets them through as the controller's own."""
        return self.write_kubeconfig(
            self.dir / "controller-manager.kubeconfig",
            "system:kube-controller-manager",
            ("system:masters",),
        )

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        input: str | None = None,
        check: bool = False,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [tool("kubectl"), "--kubeconfig", str(kubeconfig or self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    def apply(self, *docs: dict[str, Any], kubeconfig: Path | None = None) -> None:
        """``kubectl apply`` of objects given as dicts; raises with kubectl's message."""
        result = self.kubectl(
            "apply",
            "-f",
            "-",
            kubeconfig=kubeconfig,
            input="\n---\n".join(json.dumps(d) for d in docs),
        )
        if result.returncode != 0:
            raise RuntimeError(f"kubectl apply failed: {result.stderr.strip()}")

    def install_crds(self, crds: Path) -> None:
        """Server-side apply of the CRD files in ``crds`` and wait until both are Established,
        so the next create of an SLO or gate does not race the API server's discovery."""
        self.kubectl("apply", "--server-side", "-f", str(crds), check=True)
        self.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd",
            "servicelevelobjectives.slogate.dev",
            "releasegates.slogate.dev",
            check=True,
        )

    def get_json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", "-o", "json", *args, check=True).stdout)

    # --- internals -------------------------------------------------------------------------

    def _write_pki(self) -> None:
        p = self.pki
        (p / "ca.crt").write_bytes(self.ca.cert_pem)
        self.ca.serving(
            "kube-apiserver", dns=("localhost", "kubernetes", "kubernetes.default")
        ).write(p / "apiserver.crt", p / "apiserver.key")
        private, public = rsa_signing_key_pem()
        (p / "sa.key").write_bytes(private)
        (p / "sa.pub").write_bytes(public)
        admin = self.ca.client("slogate-probe", ("system:masters",))
        admin.write(p / "probe.crt", p / "probe.key")
        self._write_admission_config()

    def _write_admission_config(self) -> None:
        """The ValidatingAdmissionWebhook and MutatingAdmissionWebhook plugins get a kubeconfig
        whose ``*`` user (the default for every webhook host:port) is a client certificate."""
        p = self.pki
        p.joinpath("webhook-client-ca.crt").write_bytes(self.webhook_client_ca_authority.cert_pem)
        pair = self.webhook_client_ca_authority.client(WEBHOOK_CLIENT_USER)
        b64 = base64.b64encode
        webhooks_kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "users": [
                {
                    "name": "*",
                    "user": {
                        "client-certificate-data": b64(pair.cert_pem).decode(),
                        "client-key-data": b64(pair.key_pem).decode(),
                    },
                }
            ],
        }
        (p / "webhook-clients.kubeconfig").write_text(yaml.safe_dump(webhooks_kubeconfig))
        (p / "webhook-clients.kubeconfig").chmod(0o600)
        plugin_config = {
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "WebhookAdmissionConfiguration",
            "kubeConfigFile": str(p / "webhook-clients.kubeconfig"),
        }
        admission = {
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "AdmissionConfiguration",
            "plugins": [
                {"name": name, "configuration": dict(plugin_config)}
                for name in ("ValidatingAdmissionWebhook", "MutatingAdmissionWebhook")
            ],
        }
        (p / "admission.yaml").write_text(yaml.safe_dump(admission))

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "probe.crt"), str(self.pki / "probe.key"))
        return ctx

    def _ready(self) -> bool:
        return _http_ok(f"{self.url}/readyz", self._ssl_context())


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    with urllib.request.urlopen(url, timeout=2, context=context) as resp:
        return bool(resp.status == 200)
