"""Keeping one PrometheusRule per SLO in step with its spec.

The rules themselves are pure (:mod:`slogate.core.alertrules`); this keeper only writes them.
It knows what exists from one LIST of the PrometheusRules it manages (at start and every
``resync_s``, so a rule deleted or edited by hand comes back), writes an object only when the
generated content's hash differs, and never touches a PrometheusRule it did not make. Each
SLO's outcome is a ``RulesReady`` condition on that SLO; one SLO whose rules cannot be written
holds back no other. Without the PrometheusRule CRD the keeper says so once and looks again
every ``probe_s``; evaluation and gates carry on regardless.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from slogate import metrics
from slogate.core.alertrules import (
    HASH_ANNOTATION,
    MANAGED_BY,
    RuleOptions,
    prometheus_rule,
    rule_object_name,
    wanted,
)
from slogate.core.objective import SloSpec
from slogate.core.status import RulesCondition

log = logging.getLogger("slogate.rules")

GROUP, VERSION, PLURAL = "monitoring.coreos.com", "v1", "prometheusrules"
SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"
Key = tuple[str, str]

CRD_MISSING = RulesCondition(
    "False",
    "PrometheusRuleCRDMissing",
    "the PrometheusRule CRD (monitoring.coreos.com/v1) is not installed, so no alerting rules "
    "are kept: install the Prometheus Operator's CRDs, or load `slogate rules` output into "
    "Prometheus yourself",
)


@dataclass
class _Wanted:
    body: dict[str, Any]
    digest: str


class RulesKeeper:
    def __init__(
        self,
        api: k8s.ApiClient,
        *,
        labels: dict[str, str] | None = None,
        options: RuleOptions | None = None,
        namespaces: tuple[str, ...] = (),
        resync_s: float = 300.0,
        probe_s: float = 60.0,
        concurrency: int = 4,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.custom = k8s.CustomObjectsApi(api)
        self.labels = dict(labels or {})
        self.options = options or RuleOptions()
        self.namespaces = namespaces
        self.resync_s = resync_s
        self.probe_s = probe_s
        self.on_change = on_change  # a condition changed: the next status write carries it
        self.wanted: dict[Key, _Wanted | None] = {}  # None: the SLO wants no rules
        self.known: dict[Key, str] = {}  # our objects that exist, by SLO: their content hash
        self.conditions: dict[Key, RulesCondition] = {}
        self.crd_missing = False
        self._dirty: set[Key] = set()
        self._seen: dict[Key, tuple[str, int | None]] = {}
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)

    # --- what the controller tells us ----------------------------------------------------

    def upsert(
        self, namespace: str, name: str, uid: str, generation: int | None, spec: SloSpec
    ) -> None:
        key = (namespace, name)
        if self._seen.get(key) == (uid, generation):
            return  # our own status write coming back through the watch
        self._seen[key] = (uid, generation)
        if not wanted(spec):
            self.wanted[key] = None
            self._set(key, None)
        else:
            try:
                body = prometheus_rule(
                    namespace, name, uid, spec, labels=self.labels, options=self.options
                )
            except ValueError as exc:
                self.wanted[key] = None
                self._set(key, RulesCondition("False", "RulesInvalid", str(exc)[:500]))
                self._mark(key)
                return
            digest = body["metadata"]["annotations"][HASH_ANNOTATION]
            previous = self.wanted.get(key)
            if previous is not None and previous.digest == digest and key not in self._dirty:
                return
            self.wanted[key] = _Wanted(body, digest)
            if self.crd_missing:
                self._set(key, CRD_MISSING)
        self._mark(key)

    def remove(self, key: Key) -> None:
        self._seen.pop(key, None)
        self.wanted.pop(key, None)
        self.conditions.pop(key, None)
        self._mark(key)

    def condition(self, key: Key) -> RulesCondition | None:
        return self.conditions.get(key)

    # --- loop ------------------------------------------------------------------------------

    async def run(self, active: Callable[[], bool] = lambda: True) -> None:
        """Write what differs, forever; a standby replica (``active`` False) writes nothing."""
        next_list = 0.0
        while True:
            if not active():
                next_list = 0.0  # on taking over, list first: the other replica wrote meanwhile
                await asyncio.sleep(1.0)
                continue
            now = time.monotonic()
            if now >= next_list:
                listed = await self._list()
                next_list = now + (
                    self.probe_s if self.crd_missing or not listed else self.resync_s
                )
            if not self.crd_missing:
                batch, self._dirty = self._dirty, set()
                await asyncio.gather(*(self._sync(key) for key in batch))
            self._wake.clear()
            timeout = max(0.0, next_list - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _mark(self, key: Key) -> None:
        self._dirty.add(key)
        self._wake.set()

    def _set(self, key: Key, cond: RulesCondition | None) -> None:
        if self.conditions.get(key) == cond:
            return
        if cond is None:
            self.conditions.pop(key, None)
        else:
            self.conditions[key] = cond
        self.on_change()

    async def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        async with self._slots:
            return await asyncio.to_thread(functools.partial(method, *args, **kwargs))

    async def _list(self) -> bool:
        """Refresh ``known`` from the API server; False when that failed (retried soon)."""
        found: dict[Key, str] = {}
        try:
            for namespace in self.namespaces or (None,):
                token: str | None = None
                while True:
                    kwargs: dict[str, Any] = {"label_selector": SELECTOR, "limit": 500}
                    if token:
                        kwargs["_continue"] = token
                    if namespace is None:
                        page = await self._call(
                            self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL, **kwargs
                        )
                    else:
                        page = await self._call(
                            self.custom.list_namespaced_custom_object,
                            GROUP,
                            VERSION,
                            namespace,
                            PLURAL,
                            **kwargs,
                        )
                    for item in page.get("items") or []:
                        key = _owner_key(item)
                        if key is not None:
                            found[key] = _digest(item)
                    token = (page.get("metadata") or {}).get("continue")
                    if not token:
                        break
        except ApiException as exc:
            if exc.status == 404:
                self._missing()
                return True
            log.warning("listing PrometheusRules failed: %s %s", exc.status, exc.reason)
            return False
        except Exception as exc:
            log.warning("listing PrometheusRules failed: %s", exc)
            return False
        if self.crd_missing:
            log.info("the PrometheusRule CRD is installed now: writing every SLO's rules")
        self.crd_missing = False
        self.known = found
        # Anything that differs from what exists, or exists without being wanted, is written.
        for key in set(self.wanted) | set(found):
            w = self.wanted.get(key)
            if (w is None and key in found) or (w is not None and found.get(key) != w.digest):
                self._dirty.add(key)
            elif w is not None:
                self._set(key, _ready(key))
        return True

    def _missing(self) -> None:
        if not self.crd_missing:
            log.warning(
                "the PrometheusRule CRD (monitoring.coreos.com/v1) is not installed: no alerting "
                "rules are kept until it is (evaluation and gates are not affected)"
            )
        self.crd_missing = True
        for key, w in self.wanted.items():
            if w is not None:
                self._set(key, CRD_MISSING)

    async def _sync(self, key: Key) -> None:
        w = self.wanted.get(key)
        namespace, name = key
        try:
            if w is None:
                if key in self.known:
                    await self._delete(namespace, rule_object_name(name))
                    self.known.pop(key, None)
                return
            if self.known.get(key) == w.digest:
                self._set(key, _ready(key))
                return
            await self._write(key, w)
        except ApiException as exc:
            if exc.status == 404 and w is not None and key not in self.known:
                self._missing()  # a create 404s only when the resource type does not exist
                self._dirty.add(key)
                return
            reason = "RulesWriteFailed"
            self._set(
                key,
                RulesCondition(
                    "False", reason, f"writing the PrometheusRule failed: {exc.status} {exc.reason}"
                ),
            )
            log.warning("PrometheusRule for %s/%s: %s %s", namespace, name, exc.status, exc.reason)
        except Exception as exc:
            self._set(
                key,
                RulesCondition("False", "RulesWriteFailed", f"writing the PrometheusRule: {exc}"),
            )
            log.warning("PrometheusRule for %s/%s: %s", namespace, name, exc)

    async def _write(self, key: Key, w: _Wanted) -> None:
        namespace, _name = key
        obj = w.body["metadata"]["name"]
        if key not in self.known:
            try:
                await self._call(
                    self.custom.create_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    w.body,
                )
            except ApiException as exc:
                if exc.status != 409:
                    raise
                existing = await self._call(
                    self.custom.get_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    obj,
                )
                if _owner_key(existing) != key:
                    self._set(
                        key,
                        RulesCondition(
                            "False",
                            "RulesConflict",
                            f"PrometheusRule {namespace}/{obj} exists and is not this SLO's: "
                            "rename or delete it",
                        ),
                    )
                    return
                self.known[key] = _digest(existing)
                if self.known[key] != w.digest:
                    await self._patch(namespace, obj, w)
        else:
            try:
                await self._patch(namespace, obj, w)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                self.known.pop(key, None)  # deleted meanwhile: create it again
                await self._write(key, w)
                return
        self.known[key] = w.digest
        metrics.rule_writes.inc()
        self._set(key, _ready(key))

    async def _patch(self, namespace: str, obj: str, w: _Wanted) -> None:
        meta = w.body["metadata"]
        patch = {
            "metadata": {
                "labels": meta["labels"],
                "annotations": meta["annotations"],
                "ownerReferences": meta["ownerReferences"],
            },
            "spec": w.body["spec"],
        }
        await self._call(
            self.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            obj,
            patch,
            _content_type="application/merge-patch+json",
        )

    async def _delete(self, namespace: str, obj: str) -> None:
        try:
            await self._call(
                self.custom.delete_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, obj
            )
        except ApiException as exc:
            if exc.status != 404:
                raise


def _ready(key: Key) -> RulesCondition:
    return RulesCondition(
        "True", "RulesWritten", f"PrometheusRule {key[0]}/{rule_object_name(key[1])} is current"
    )


def _owner_key(item: dict[str, Any]) -> Key | None:
    meta = item.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == "ServiceLevelObjective":
            return (meta.get("namespace", ""), ref.get("name", ""))
    return None


def _digest(item: dict[str, Any]) -> str:
    return str(((item.get("metadata") or {}).get("annotations") or {}).get(HASH_ANNOTATION, ""))
