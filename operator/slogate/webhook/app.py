"""``slogate webhook``: the admission webhook role (every replica active, no peering).

kopf serves the AdmissionReviews through :class:`AdmissionServer` and keeps the indexes current
with watch events; the validate handler turns a request into a :class:`~slogate.core.admission.
Change`, asks the pure core for a verdict, and makes API calls only when it is about to refuse.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import signal
import time
from dataclasses import dataclass
from typing import Any

import kopf
from kubernetes import client as k8s

from slogate import metrics
from slogate.controller.app import Controller, configure_logging
from slogate.core.admission import (
    Change,
    Review,
    Verdict,
    is_rollback,
    review,
    rollback_from_index,
    settle,
)
from slogate.core.gate import DEFAULT_STALE_AFTER_S
from slogate.core.resources import GATE_KIND, GROUP, SLO_KIND, VERSION
from slogate.kubeclient import connection_info, load_config
from slogate.webhook.kubecalls import KubeCalls
from slogate.webhook.server import AdmissionServer, start_probe_server
from slogate.webhook.store import Store
from slogate.webhook.tls import ReloadingTLS

log = logging.getLogger("slogate.webhook")
WEBHOOK_ID = "validate-deployments"


@dataclass
class WebhookOptions:
    tls_cert_file: str
    tls_key_file: str
    port: int = 8443
    metrics_port: int = 8080
    stale_after_s: float = DEFAULT_STALE_AFTER_S
    namespaces: tuple[str, ...] = ()
    kubeconfig: str | None = None
    log_format: str = "json"


def _template_labels(template: Any) -> dict[str, str]:
    return dict(((template or {}).get("metadata") or {}).get("labels") or {})


def _first_image(template: Any) -> str | None:
    containers = ((template or {}).get("spec") or {}).get("containers") or []
    return containers[0].get("image") if containers else None


class Webhook:
    def __init__(self, options: WebhookOptions) -> None:
        self.options = options
        self.store = Store()
        self.tls = ReloadingTLS(options.tls_cert_file, options.tls_key_file)
        self.calls: KubeCalls | None = None
        self.background: set[asyncio.Task[None]] = set()
        self.registry = kopf.OperatorRegistry()
        self._register()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def _register(self) -> None:
        reg = self.registry

        @kopf.on.login(registry=reg)
        def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
            return connection_info(self.options.kubeconfig, settings)

        @kopf.on.startup(registry=reg)
        async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
            server = AdmissionServer(self.tls, self.options.port, wait_for=self.store.loaded)
            settings.admission.server = server  # type: ignore[assignment]
            settings.posting.level = logging.WARNING
            settings.peering.standalone = True
            load_config(self.options.kubeconfig)
            api = k8s.ApiClient()
            self.calls = KubeCalls(api)
            self._spawn(self.calls.flush_forever())
            if self.options.metrics_port:
                # Ready only when admission is answered, and answered from loaded indexes.
                await start_probe_server(
                    self.options.metrics_port,
                    lambda: self.store.loaded.is_set() and server.listening.is_set(),
                )
            self._spawn(self.store.load(api, self.options.namespaces))

        @kopf.on.cleanup(registry=reg)
        async def cleanup(**_: Any) -> None:
            if self.calls is not None:  # the refusals counted since the last flush
                await self.calls.flush()

        for kind, plural in (("slo", SLO_KIND.plural), ("gate", GATE_KIND.plural)):
            self._watch(kind, plural)

        @kopf.on.event("apps", "v1", "replicasets", registry=reg)
        def on_replicaset(type: str | None, body: kopf.Body, **_: Any) -> None:
            if type == "DELETED":
                self.store.drop("rs", dict(body))
            else:
                self.store.put_replicaset(dict(body))

        @kopf.on.validate(
            "apps",
            "v1",
            "deployments",
            id=WEBHOOK_ID,
            operations=["CREATE", "UPDATE"],
            registry=reg,
        )
        async def validate(**kw: Any) -> None:
            warnings: list[str] = kw["warnings"]
            started = time.perf_counter()
            decision = "allow"
            try:
                decision, message, notes = await self.admit(
                    dict(kw["body"]),
                    kw.get("old"),
                    kw.get("new"),
                    kw["operation"],
                    bool(kw["dryrun"]),
                    dict(kw["userinfo"]),
                )
                warnings.extend(notes)
            except Exception:  # a bug here must not block every rollout: fail open, loudly
                log.exception("admission failed; allowing the change")
                warnings.append("slogate: internal error while checking this change; allowed")
                decision, message = "error", ""
            finally:
                metrics.admission_duration.observe(time.perf_counter() - started)
                metrics.admission_decisions.labels(decision).inc()
            if decision == "deny":
                raise kopf.AdmissionError(message, code=403)

    def _watch(self, kind: str, plural: str) -> None:
        @kopf.on.event(GROUP, VERSION, plural, registry=self.registry)
        def on_event(type: str | None, body: kopf.Body, **_: Any) -> None:
            if type == "DELETED":
                self.store.drop(kind, dict(body))
            elif kind == "slo":
                self.store.put_slo(dict(body))
            else:
                self.store.put_gate(dict(body))

    async def admit(
        self,
        body: dict[str, Any],
        old: Any,
        new: Any,
        operation: str,
        dryrun: bool,
        userinfo: dict[str, Any],
    ) -> tuple[str, str, list[str]]:
        meta = body.get("metadata") or {}
        new_template = ((new or {}).get("spec") or {}).get("template")
        old_template = ((old or {}).get("spec") or {}).get("template")
        change = Change(
            operation=operation,
            namespace=str(meta.get("namespace")),
            name=str(meta.get("name") or meta.get("generateName") or ""),
            labels=dict(meta.get("labels") or {}),
            annotations=dict(meta.get("annotations") or {}),
            old_template=old_template,
            new_template=new_template,
            user=str(userinfo.get("username", "")),
            dry_run=dryrun,
            image=_first_image(new_template),
            extra_labels=(
                dict(((old or {}).get("metadata") or {}).get("labels") or {}),
                _template_labels(old_template),
                _template_labels(new_template),
            ),
        )
        now = time.time()
        first = review(
            change,
            self.store.gates_in(change.namespace),
            self.store.slos,
            now,
            self.options.stale_after_s,
        )
        rollback = False
        may: dict[tuple[str, str], bool] = {}
        unchecked: list[str] = []
        if first.outcome == "deny":
            assert self.calls is not None
            # These checks can only turn a refusal into an admission, so when one cannot be
            # made the refusal stands: an error here must not let a change through (anyone may
            # set the override annotations; only the SubjectAccessReview says who may use them).
            if operation == "UPDATE":
                owner = str(((old or {}).get("metadata") or {}).get("uid") or "")
                known = rollback_from_index(change, self.store.template_digests(owner))
                metrics.rollback_checks.labels("index" if known is not None else "api").inc()
                if known is not None:
                    rollback = known
                else:
                    try:
                        templates = await self.calls.replicaset_templates(
                            change.namespace, dict(old or {})
                        )
                        rollback = is_rollback(change, templates)
                    except Exception as exc:
                        log.warning("rollback check failed; treating as no rollback: %s", exc)
                        unchecked.append("could not check for a rollback")
            if not rollback and first.override is not None:
                for hit in first.blocking:
                    try:
                        may[hit.gate.key] = await self.calls.may_override(
                            userinfo, hit.gate.namespace, hit.gate.name
                        )
                    except Exception as exc:
                        log.warning("SubjectAccessReview failed; override not honoured: %s", exc)
                        may[hit.gate.key] = False
                        unchecked.append(
                            f"could not check {change.user}'s RBAC verb 'override' on "
                            f"releasegate {hit.gate.namespace}/{hit.gate.name}"
                        )
        verdict = settle(change, first, rollback=rollback, may_override=may)
        if unchecked and verdict.outcome == "deny":
            verdict = dataclasses.replace(
                verdict, message=f"{verdict.message} (slogate {'; '.join(unchecked)})"
            )
        self._record(change, dict(old or body), verdict, first)
        if verdict.outcome == "deny":
            return "deny", verdict.message, list(verdict.warnings)
        kind = (
            "override"
            if verdict.overridden
            else "rollback"
            if verdict.rollback
            else verdict.outcome
        )
        return kind, "", list(verdict.warnings)

    def _record(
        self, change: Change, workload: dict[str, Any], verdict: Verdict, first: Review
    ) -> None:
        if change.dry_run or self.calls is None:
            return  # dry-run requests are answered truthfully but leave no trace
        uid = str((workload.get("metadata") or {}).get("uid", ""))
        uids = dict(self.store.gate_uids)
        if verdict.record_block:
            self.calls.note_block(
                change, uid, verdict.blocking, uids, dry_run_mode=False, message=verdict.message
            )
        if verdict.would_block:
            self.calls.note_block(
                change,
                uid,
                verdict.would_block,
                uids,
                dry_run_mode=True,
                message="; ".join(verdict.warnings),
            )
        if verdict.overridden and first.override is not None:
            until = dt.datetime.fromtimestamp(first.override.until, dt.UTC).isoformat()
            self._spawn(
                self.calls.record_override(
                    change,
                    uid,
                    verdict.blocking,
                    uids,
                    first.override.reason,
                    until.replace("+00:00", "Z"),
                )
            )

    def operator_kwargs(self) -> dict[str, Any]:
        # Every replica answers admission from its own index: never a paused peer.
        return {
            "registry": self.registry,
            "clusterwide": not self.options.namespaces,
            "namespaces": self.options.namespaces,
            "standalone": True,
        }

    def run(self) -> None:
        configure_logging(self.options.log_format)
        kopf.run(**self.operator_kwargs())


async def run_both(controller: Controller, webhook: Webhook) -> None:
    """``slogate run``: both roles in one process and one event loop, for local use."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await asyncio.gather(
        kopf.operator(**controller.operator_kwargs(), stop_flag=stop),
        kopf.operator(**webhook.operator_kwargs(), stop_flag=stop),
    )
