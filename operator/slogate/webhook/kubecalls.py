"""The few API calls admission makes, and only when it is about to refuse a rollout.

- the Deployment's ReplicaSets, to recognise a rollback to one of their templates, when the
  webhook's own index of ReplicaSets cannot tell;
- a SubjectAccessReview per blocking gate, when the workload asks for an override;
- an override, before it is admitted: the gate's ``status.lastOverride`` and ``overrides`` and
  Events (an override that cannot be recorded is refused);
- afterwards, off the request path: refusals, as Events on the Deployment and the gate and the
  gate's ``status.lastBlocked`` / ``blockedCount``.

Every call on the request path runs under the request's :class:`Deadline`, below the webhook's
``timeoutSeconds``: an answer the API server never waits for is an admission under
``failurePolicy: Ignore``, so a call that would outlive it is abandoned and the refusal stands.

Refusals are recorded in batches: ``note_block`` only counts, and ``flush`` (every second, and at
shutdown) writes each gate's status once with the refusals since the last flush and aggregates
repeated Events. A burst of refusals then costs a few API calls, not four per refusal, and the
webhook's event loop keeps answering reviews instead of waiting on its own bookkeeping.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from slogate import metrics
from slogate.core.admission import Change, GateHit
from slogate.core.releasegate import OVERRIDES_KEPT
from slogate.core.resources import GATE_KIND, GROUP, VERSION
from slogate.core.status import Event
from slogate.core.timetext import rfc3339
from slogate.events import CoalescedEvents, post_event

log = logging.getLogger("slogate.webhook.kube")
T = TypeVar("T")
COMPONENT = "slogate-webhook"


class Deadline:
    """The time left to answer one AdmissionReview. Every API call on its path runs within it:
    the client's own request timeout, and ``wait_for`` around the thread that makes it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        left = self.left()
        if left <= 0:
            raise TimeoutError
        call = functools.partial(fn, *args, _request_timeout=left, **kwargs)
        return await asyncio.wait_for(asyncio.to_thread(call), left)

    async def wait(self, awaitable: Awaitable[T]) -> T:
        return await asyncio.wait_for(awaitable, max(self.left(), 0.0))


class KubeCalls:
    def __init__(self, api: k8s.ApiClient) -> None:
        self.apps = k8s.AppsV1Api(api)
        self.authz = k8s.AuthorizationV1Api(api)
        self.custom = k8s.CustomObjectsApi(api)
        self.core = k8s.CoreV1Api(api)
        self.instance = socket.gethostname()
        self.events = CoalescedEvents(self.core, COMPONENT, self.instance)
        self._blocks: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
        self._flushing = asyncio.Lock()

    async def replicaset_templates(
        self, namespace: str, deployment: dict[str, Any], deadline: Deadline
    ) -> list[Any]:
        uid = (deployment.get("metadata") or {}).get("uid")
        if not uid:
            return []
        selector = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        label_selector = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        got = await deadline.call(self._list_replicasets, namespace, label_selector)
        templates = []
        for rs in got.get("items", []):
            owners = (rs.get("metadata") or {}).get("ownerReferences") or []
            if any(o.get("uid") == uid for o in owners):
                templates.append((rs.get("spec") or {}).get("template"))
        return templates

    def _list_replicasets(
        self, namespace: str, label_selector: str, _request_timeout: float | None = None
    ) -> dict[str, Any]:
        # Raw JSON (not model objects): the template must compare equal to the request's JSON.
        resp = self.apps.list_namespaced_replica_set(
            namespace,
            label_selector=label_selector,
            _preload_content=False,
            _request_timeout=_request_timeout,
        )
        return dict(json.loads(resp.data))  # type: ignore[attr-defined]

    async def may_override(
        self, userinfo: dict[str, Any], gate_ns: str, gate_name: str, deadline: Deadline
    ) -> bool:
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": userinfo.get("username"),
                "uid": userinfo.get("uid"),
                "groups": userinfo.get("groups") or [],
                "extra": userinfo.get("extra") or {},
                "resourceAttributes": {
                    "group": GROUP,
                    "resource": GATE_KIND.plural,
                    "verb": "override",
                    "name": gate_name,
                    "namespace": gate_ns,
                },
            },
        }
        result = await deadline.call(self.authz.create_subject_access_review, review)
        return bool(result.status and result.status.allowed)

    # --- refusals (after the response; best effort) --------------------------------------

    def note_block(
        self,
        change: Change,
        deployment_uid: str,
        hits: tuple[GateHit, ...],
        gate_uids: dict[tuple[str, str], str],
        *,
        dry_run_mode: bool,
        message: str,
    ) -> None:
        """Count a refusal (or, for DryRun gates, a would-be refusal); written by ``flush``."""
        reason = "RolloutWouldBeBlocked" if dry_run_mode else "RolloutBlocked"
        record: dict[str, Any] = {
            "workload": change.workload,
            "user": change.user,
            "image": change.image,
            "time": rfc3339(time.time()),
        }
        if dry_run_mode:
            record["dryRun"] = True
        for hit in hits:
            gate = hit.gate
            text = f"{change.user} changing {change.workload}: " + "; ".join(hit.verdict.reasons)
            self.events.add(
                object_ref(change.namespace, "Deployment", "apps/v1", change.name, deployment_uid),
                Event("Warning", reason, message[:1000]),
            )
            self.events.add(
                object_ref(
                    gate.namespace,
                    "ReleaseGate",
                    f"{GROUP}/{VERSION}",
                    gate.name,
                    gate_uids.get(gate.key, ""),
                ),
                Event("Warning", reason, text),
            )
            count, _ = self._blocks.get(gate.key, (0, record))
            self._blocks[gate.key] = (count + 1, record)
            metrics.unrecorded_refusals.inc()

    async def flush(self) -> None:
        """Write what ``note_block`` counted: Events, then each gate's status once."""
        async with self._flushing:
            await self.events.flush()
            blocks, self._blocks = self._blocks, {}
            for (namespace, name), (count, record) in blocks.items():
                try:
                    await self._bump_blocked(namespace, name, count, record)
                finally:  # written, or given up on (and logged)
                    metrics.unrecorded_refusals.dec(count)

    async def flush_forever(self, interval_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.flush()
            except Exception:  # a bug in bookkeeping must not stop the next flush
                log.exception("recording refusals failed")

    async def record_override(
        self,
        involved: dict[str, str],
        record: dict[str, Any],
        hits: tuple[GateHit, ...],
        gate_uids: dict[tuple[str, str], str],
        deadline: Deadline,
    ) -> None:
        """Record an override on every gate it passes (``lastOverride``, the last
        ``OVERRIDES_KEPT`` in ``overrides``) and in Events, before it is admitted: raises when
        it cannot be recorded in time, and the caller then refuses (no unrecorded override)."""
        record = {**record, "time": rfc3339(time.time())}
        text = (
            f"{record['user']} overrode %s for {record['workload']} until {record['until']}: "
            f"{record['reason']}"
        )
        writes, events = [], []
        for hit in hits:
            gate = hit.gate
            gate_ref = object_ref(
                gate.namespace, "ReleaseGate", f"{GROUP}/{VERSION}", gate.name,
                gate_uids.get(gate.key, ""),
            )  # fmt: skip
            event = Event("Warning", "GateOverridden", text % f"{gate.namespace}/{gate.name}")
            writes.append(self._append_override(gate.namespace, gate.name, record, deadline))
            events += [
                post_event(self.core, gate_ref, event, COMPONENT, self.instance),
                post_event(self.core, involved, event, COMPONENT, self.instance),
            ]
        # The gate's status is the record and must be written; Events are told as well, in
        # the same time, and a late one is not worth refusing for.
        await asyncio.gather(*writes, _quietly(deadline, asyncio.gather(*events)))

    async def _append_override(
        self, namespace: str, name: str, record: dict[str, Any], deadline: Deadline
    ) -> None:
        """``lastOverride`` and one more entry of ``overrides``, safe against other replicas:
        test-and-set on the resourceVersion, read again after a lost race."""
        for _ in range(5):
            got = await deadline.call(
                self.custom.get_namespaced_custom_object_status,
                GROUP, VERSION, namespace, GATE_KIND.plural, name,
            )  # fmt: skip
            gate = cast(dict[str, Any], got)
            status = gate.get("status") or {}
            kept = [*(status.get("overrides") or []), record][-OVERRIDES_KEPT:]
            ops: list[dict[str, Any]] = []
            if "status" not in gate:
                ops.append({"op": "add", "path": "/status", "value": {}})
            ops += [
                {
                    "op": "test",
                    "path": "/metadata/resourceVersion",
                    "value": gate["metadata"]["resourceVersion"],
                },
                {"op": "add", "path": "/status/overrides", "value": kept},
                {"op": "add", "path": "/status/lastOverride", "value": record},
            ]
            try:
                await deadline.call(
                    self.custom.patch_namespaced_custom_object_status,
                    GROUP, VERSION, namespace, GATE_KIND.plural, name, ops,
                    _content_type="application/json-patch+json",
                    _preload_content=False,
                )  # fmt: skip
                return
            except ApiException as exc:
                if exc.status not in (409, 422):
                    raise
        raise RuntimeError(f"too many conflicts writing the override on {namespace}/{name}")

    async def _bump_blocked(
        self, namespace: str, name: str, count: int, record: dict[str, Any]
    ) -> None:
        """Add ``count`` to blockedCount safely against other webhook replicas: test-and-set on
        the resourceVersion, read again after a lost race (after a short random pause)."""
        for attempt in range(10):
            if attempt:
                await asyncio.sleep(random.uniform(0, 0.05 * attempt))
            try:
                gate = await asyncio.to_thread(
                    self.custom.get_namespaced_custom_object_status,
                    GROUP,
                    VERSION,
                    namespace,
                    GATE_KIND.plural,
                    name,
                )
                gate = cast(dict[str, Any], gate)
                before = int(((gate.get("status") or {}).get("blockedCount")) or 0)
                ops: list[dict[str, Any]] = []
                if "status" not in gate:
                    ops.append({"op": "add", "path": "/status", "value": {}})
                ops.append(
                    {
                        "op": "test",
                        "path": "/metadata/resourceVersion",
                        "value": gate["metadata"]["resourceVersion"],
                    }
                )
                ops.append({"op": "add", "path": "/status/blockedCount", "value": before + count})
                ops.append({"op": "add", "path": "/status/lastBlocked", "value": record})
                await asyncio.to_thread(
                    functools.partial(
                        self.custom.patch_namespaced_custom_object_status,
                        GROUP,
                        VERSION,
                        namespace,
                        GATE_KIND.plural,
                        name,
                        ops,
                        _content_type="application/json-patch+json",
                        _preload_content=False,
                    )
                )
                return
            except ApiException as exc:
                if exc.status in (409, 422):  # someone else wrote first: read again
                    continue
                log.warning(
                    "could not record %d block(s) on %s/%s: %s", count, namespace, name, exc
                )
                return
            except Exception as exc:
                log.warning(
                    "could not record %d block(s) on %s/%s: %s", count, namespace, name, exc
                )
                return
        log.warning(
            "could not record %d block(s) on %s/%s: too many conflicts", count, namespace, name
        )


async def _quietly(deadline: Deadline, awaitable: Awaitable[Any]) -> None:
    try:
        await deadline.wait(awaitable)
    except TimeoutError:
        log.warning("an Event about an override was not posted within the deadline")


def object_ref(namespace: str, kind: str, api_version: str, name: str, uid: str) -> dict[str, str]:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "namespace": namespace,
        "name": name,
        "uid": uid,
    }
