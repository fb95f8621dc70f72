"""One way to reach the API server for every role: an explicit kubeconfig, else in-cluster.

The official client (for status writes, Events, SubjectAccessReviews, the webhook's watches) and
the controller's kopf watcher use the same credentials, loaded once here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config

if TYPE_CHECKING:
    import kopf


def load_config(kubeconfig: str | None) -> None:
    """Configure the official client's default configuration."""
    if kubeconfig:
        k8s_config.load_kube_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        return
    try:
        k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()  # type: ignore[no-untyped-call]


def api_client(connections: int = 32) -> k8s.ApiClient:
    """An official client on the loaded configuration, keeping up to ``connections`` open.

    The default (5 per CPU) is below what concurrent status writes, Events and gate writes
    use; every connection beyond it is discarded after one request and re-established with a
    new TLS handshake, which costs both sides more than the request itself.
    """
    cfg = k8s.Configuration.get_default_copy()
    cfg.connection_pool_maxsize = connections
    return k8s.ApiClient(cfg)


def connection_info(kubeconfig: str | None, settings: Any) -> kopf.ConnectionInfo:
    """kopf credentials equal to what ``load_config`` gave the official client."""
    import kopf  # only the controller role runs kopf; the webhook imports this module too

    load_config(kubeconfig)
    cfg = k8s.Configuration.get_default_copy()
    header = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix(
        "authorization"
    )
    scheme, token = None, None
    if header:
        parts = header.split(" ", 1)
        scheme, token = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        username=cfg.username or None,
        password=cfg.password or None,
        scheme=scheme,
        token=token,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
        trust_env=settings.networking.trust_env,
    )
