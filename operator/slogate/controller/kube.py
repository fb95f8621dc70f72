"""Writing to the API server: SLO status (JSON patch) and Events.

The status is written with a JSON patch ``add /status``, not a merge patch: in a merge patch
``null`` deletes a key, and a window without traffic must read ``null``, not disappear. The
controller owns the whole status, so replacing it never clobbers someone else's field.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from slogate import metrics
from slogate.controller.evaluator import SloGone
from slogate.core.resources import GROUP, SLO_KIND, VERSION
from slogate.core.status import Event
from slogate.events import post_event

log = logging.getLogger("slogate.kube")


class KubeSink:
    """Status and Events through the official client (run in threads; it is synchronous)."""

    def __init__(
        self, api: k8s.ApiClient, component: str = "slogate-controller", concurrency: int = 8
    ) -> None:
        self.custom = k8s.CustomObjectsApi(api)
        self.core = k8s.CoreV1Api(api)
        self.component = component
        self.instance = socket.gethostname()
        # Evaluation units finish independently and write at once; a bound keeps them from
        # queueing on every thread and connection the process has.
        self._slots = asyncio.Semaphore(concurrency)

    async def write_status(self, namespace: str, name: str, status: dict[str, Any]) -> bool:
        body = [{"op": "add", "path": "/status", "value": status}]
        try:
            async with self._slots:
                await self._patch_status(namespace, name, body)
        except ApiException as exc:
            if exc.status == 404:
                raise SloGone(f"{namespace}/{name}") from exc
            log.warning(
                "status write for %s/%s failed: %s %s %s",
                namespace,
                name,
                exc.status,
                exc.reason,
                str(exc.body)[:500],
            )
            return False
        except Exception as exc:
            log.warning("status write for %s/%s failed: %s", namespace, name, exc)
            return False
        metrics.status_writes.labels("ServiceLevelObjective").inc()
        return True

    async def _patch_status(self, namespace: str, name: str, body: list[dict[str, Any]]) -> None:
        await asyncio.to_thread(
            functools.partial(
                self.custom.patch_namespaced_custom_object_status,
                GROUP,
                VERSION,
                namespace,
                SLO_KIND.plural,
                name,
                body,
                _content_type="application/json-patch+json",
            )
        )

    async def post_event(self, ref: dict[str, Any], event: Event) -> None:
        await post_event(self.core, ref, event, self.component, self.instance)
