"""Which controller replica evaluates: the one kopf's peering makes active.

kopf pauses its own handlers on a standby peer, but the evaluation loop is slogate's own task,
so it asks the same question kopf does, from the same ClusterKopfPeering object: am I the live
peer with the highest priority? (Two live peers with equal priority both stand by, as in kopf;
the chart gives every replica a random priority.) A standby replica keeps its watch-fed registry
current, so when the active one stops renewing its lease (``lifetime``) it takes over with the
SLOs as they are and rebuilds its history from Prometheus.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import Any, cast

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from slogate.core.timetext import parse_rfc3339

log = logging.getLogger("slogate.peering")
GROUP, VERSION, PLURAL = "kopf.dev", "v1", "clusterkopfpeerings"
LIFETIME_S = 30  # how long a silent peer still counts as alive (kopf renews well before)


def should_be_active(
    peers: Mapping[str, Any], identity: str, priority: int, now: dt.datetime
) -> bool:
    """kopf's rule: no live other peer outranks us, and none ties with us."""
    for other, info in peers.items():
        if other == identity or not isinstance(info, Mapping):
            continue
        try:
            seen = parse_rfc3339(str(info.get("lastseen")))
            alive = seen + int(info.get("lifetime", 60)) > now.timestamp()
            their = int(info.get("priority", 0))
        except (TypeError, ValueError):
            continue
        if alive and their >= priority:
            return False
    return True


class PeeringMonitor:
    def __init__(
        self,
        name: str,
        identity: str,
        priority: int,
        interval_s: float = 2.0,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.name = name
        self.on_change = on_change
        self.identity = identity
        self.priority = priority
        self.interval_s = interval_s
        self.active = False
        self.custom: k8s.CustomObjectsApi | None = None

    def __call__(self) -> bool:
        return self.active

    async def run(self, api: k8s.ApiClient) -> None:
        self.custom = k8s.CustomObjectsApi(api)
        while True:
            await self.check()
            await asyncio.sleep(self.interval_s)

    async def check(self) -> None:
        assert self.custom is not None
        try:
            body = await asyncio.to_thread(
                self.custom.get_cluster_custom_object, GROUP, VERSION, PLURAL, self.name
            )
        except ApiException as exc:
            if exc.status == 404:  # kopf pauses without its peering object; so do we
                self._set(False, f"ClusterKopfPeering {self.name} not found")
            return
        except Exception as exc:  # unreachable API server: keep the last decision
            log.debug("peering check failed: %s", exc)
            return
        peers = cast(dict[str, Any], body).get("status") or {}
        if self.identity not in peers:
            return  # kopf has not announced us yet
        self._set(
            should_be_active(peers, self.identity, self.priority, dt.datetime.now(dt.UTC)),
            "peering",
        )

    def _set(self, active: bool, why: str) -> None:
        if active != self.active:
            log.info(
                "evaluation %s (%s)",
                "resumed: this replica is active"
                if active
                else "paused: another replica is active",
                why,
            )
        changed = active != self.active
        self.active = active
        if changed and self.on_change is not None:
            self.on_change(active)
