"""Kubernetes Events, posted by every role the same way (core/v1, created, never patched)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

from kubernetes import client as k8s

from slogate.core.status import Event

log = logging.getLogger("slogate.events")


async def post_event(
    core: k8s.CoreV1Api, ref: dict[str, Any], event: Event, component: str, instance: str
) -> None:
    now = dt.datetime.now(dt.UTC)
    body = {
        "metadata": {"generateName": f"{ref['name']}.", "namespace": ref["namespace"]},
        "involvedObject": ref,
        "type": event.type,
        "reason": event.reason,
        "message": event.message[:1024],
        "source": {"component": component},
        "firstTimestamp": now.isoformat(),
        "lastTimestamp": now.isoformat(),
        "count": 1,
        "reportingComponent": f"slogate.dev/{component}",
        "reportingInstance": instance,
    }
    try:
        await asyncio.to_thread(core.create_namespaced_event, ref["namespace"], body)  # type: ignore[arg-type]
    except Exception as exc:
        log.warning(
            "event %s on %s/%s not posted: %s", event.reason, ref["namespace"], ref["name"], exc
        )
