"""Kubernetes Events, posted by every role the same way (core/v1).

Most Events are rare (a risk level changed) and are simply created. Refusals can come in bursts
(a CI job or a GitOps controller retrying a refused rollout every few seconds), so the webhook
aggregates repeats the way client-go's event recorder does: the first is created, repeats within
ten minutes raise its ``count`` and ``lastTimestamp`` (``kubectl describe`` shows "x20 over 3m"),
written at most once per flush instead of one API call per refusal.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from slogate.core.status import Event
from slogate.core.timetext import rfc3339_micro

log = logging.getLogger("slogate.events")


def event_body(
    ref: dict[str, Any], event: Event, component: str, instance: str, count: int = 1
) -> dict[str, Any]:
    now = rfc3339_micro(time.time())
    return {
        "metadata": {"generateName": f"{ref['name']}.", "namespace": ref["namespace"]},
        "involvedObject": ref,
        "type": event.type,
        "reason": event.reason,
        "message": event.message[:1024],
        "source": {"component": component},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": count,
        "reportingComponent": f"slogate.dev/{component}",
        "reportingInstance": instance,
    }


async def post_event(
    core: k8s.CoreV1Api, ref: dict[str, Any], event: Event, component: str, instance: str
) -> None:
    try:
        await _create(core, event_body(ref, event, component, instance))
    except Exception as exc:
        log.warning(
            "event %s on %s/%s not posted: %s", event.reason, ref["namespace"], ref["name"], exc
        )


async def _create(core: k8s.CoreV1Api, body: dict[str, Any]) -> str:
    """Create an Event; its generated name. Raw response: no model objects to build."""
    call = functools.partial(
        core.create_namespaced_event,
        body["metadata"]["namespace"],
        body,  # type: ignore[arg-type]
        _preload_content=False,
    )
    resp = await asyncio.to_thread(call)
    return str(json.loads(resp.data)["metadata"]["name"])  # type: ignore[attr-defined]


EventKey = tuple[str, str, str, str, str, str, str]


@dataclass
class _Posted:
    name: str
    count: int
    created: float  # monotonic


class CoalescedEvents:
    """Events that may repeat in bursts: ``add`` now (no I/O), ``flush`` later in one pass."""

    def __init__(
        self,
        core: k8s.CoreV1Api,
        component: str,
        instance: str,
        window_s: float = 600.0,
        max_series: int = 4096,
    ) -> None:
        self.core = core
        self.component = component
        self.instance = instance
        self.window_s = window_s
        self.max_series = max_series
        self._pending: dict[EventKey, tuple[dict[str, Any], Event, int]] = {}
        self._posted: OrderedDict[EventKey, _Posted] = OrderedDict()

    @staticmethod
    def _key(ref: dict[str, Any], event: Event) -> EventKey:
        return (
            ref["namespace"],
            ref["kind"],
            ref["name"],
            str(ref.get("uid", "")),
            event.type,
            event.reason,
            event.message[:1024],
        )

    def add(self, ref: dict[str, Any], event: Event) -> None:
        key = self._key(ref, event)
        _, _, n = self._pending.get(key, (ref, event, 0))
        self._pending[key] = (ref, event, n + 1)

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for key, (ref, event, n) in pending.items():
            try:
                await self._write(key, ref, event, n)
            except Exception as exc:
                log.warning(
                    "event %s on %s/%s not posted (x%d): %s",
                    event.reason,
                    ref["namespace"],
                    ref["name"],
                    n,
                    exc,
                )

    async def _write(self, key: EventKey, ref: dict[str, Any], event: Event, n: int) -> None:
        known = self._posted.get(key)
        if known is not None and time.monotonic() - known.created < self.window_s:
            patch = {"count": known.count + n, "lastTimestamp": rfc3339_micro(time.time())}
            call = functools.partial(
                self.core.patch_namespaced_event,
                known.name,
                ref["namespace"],
                patch,
                _preload_content=False,
            )
            try:
                await asyncio.to_thread(call)
                known.count += n
                self._posted.move_to_end(key)
                return
            except ApiException as exc:
                if exc.status != 404:  # 404: the Event expired (TTL): start a new one
                    raise
        body = event_body(ref, event, self.component, self.instance, count=n)
        name = await _create(self.core, body)
        self._posted[key] = _Posted(name, n, time.monotonic())
        self._posted.move_to_end(key)
        while len(self._posted) > self.max_series:
            self._posted.popitem(last=False)
