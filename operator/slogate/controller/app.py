"""``slogate controller``: kopf handlers that feed the evaluator, and the process around them.

kopf watches ServiceLevelObjectives and tells the evaluator about every new, changed, resumed or
deleted one; the evaluator (one asyncio task) does all Prometheus and status work in batches.
Only watch-event handlers are registered, so kopf writes nothing to the objects themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import kopf
from aiohttp import web
from prometheus_client import start_http_server
from pydantic import ValidationError

from slogate import metrics
from slogate.controller.entries import SloEntry
from slogate.controller.evaluator import Evaluator, EvaluatorSettings, SloGone, TickStats
from slogate.controller.gates import GateKeeper
from slogate.controller.kube import KubeSink
from slogate.controller.peering import LIFETIME_S, PeeringMonitor
from slogate.controller.rules import RulesKeeper
from slogate.core.alertrules import RuleOptions
from slogate.core.gate import DEFAULT_STALE_AFTER_S, SloView
from slogate.core.objective import SloSpec
from slogate.core.releasegate import GateSpec
from slogate.core.resources import GATE_KIND, GROUP, SLO_KIND, VERSION
from slogate.core.status import Problem, failed_status, invalid_spec_reported
from slogate.core.validation import field_errors
from slogate.kubeclient import api_client, connection_info, load_config
from slogate.memory import Trimmer, limit_arenas
from slogate.probes import start_probe_server
from slogate.prometheus import ClientPool
from slogate.prometheus.client import PrometheusConfig

log = logging.getLogger("slogate.controller")
PREFIX = "slogate.dev"
GATE_REFRESH_S = 5.0


@dataclass
class ControllerOptions:
    prometheus: PrometheusConfig
    evaluator: EvaluatorSettings = field(default_factory=EvaluatorSettings)
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    metrics_port: int = 8080  # 0 disables
    liveness_port: int = 8081  # 0 disables
    peering: str | None = None  # None: standalone (one replica)
    priority: int = 0
    log_format: str = "json"
    kubeconfig: str | None = None
    # Per-SLO backends (spec.prometheus.url) the operator queries at all; trusted ones also get
    # its credentials and headers. Any other URL fails that SLO alone.
    allowed_urls: tuple[str, ...] = ()
    trusted_urls: tuple[str, ...] = ()
    max_clients: int = 32  # per-SLO backends kept open (least recently used evicted)
    stale_after_s: float = DEFAULT_STALE_AFTER_S  # gates: an SLO status older is unknown
    # /healthz fails when the evaluation loop has not gone round for this long (a wedged event
    # loop or a dead evaluator): a restart is the cure. One broken SLO never fails it.
    liveness_after_s: float = 120.0
    # One PrometheusRule per SLO (recording and burn-rate alerting rules), labelled for a
    # Prometheus Operator ruleSelector.
    prometheus_rules: bool = True
    rule_labels: dict[str, str] = field(default_factory=dict)
    rule_interval_s: int = 60
    rule_resync_s: float = 300.0


class Controller:
    """The evaluator plus the clients it needs, wired to a kopf registry."""

    def __init__(self, options: ControllerOptions) -> None:
        self.options = options
        self.pool = ClientPool(
            options.prometheus,
            allowed_urls=options.allowed_urls,
            trusted_urls=options.trusted_urls,
            max_clients=options.max_clients,
            observer=metrics.observe_prometheus,
        )
        self.sink: KubeSink | None = None
        self.evaluator: Evaluator | None = None
        self.rules: RulesKeeper | None = None
        self.task: asyncio.Task[None] | None = None
        self.rules_task: asyncio.Task[None] | None = None
        self.peering_task: asyncio.Task[None] | None = None
        # A random priority unless given: of several replicas exactly one is active (kopf
        # pauses all replicas that tie).
        self.priority = options.priority or random.randint(1, 1_000_000)
        self.identity = f"{socket.gethostname()}-{os.getpid()}"
        self.peering = PeeringMonitor(
            options.peering or "slogate",
            self.identity,
            self.priority,
            on_change=self._on_peering_change,
        )
        self.gates = GateKeeper(
            heartbeat_s=options.evaluator.heartbeat_s, stale_after_s=options.stale_after_s
        )
        self.started = time.monotonic()
        self.probes: web.AppRunner | None = None
        self._last_gate_refresh = -math.inf
        self._trim = Trimmer()
        self.registry = kopf.OperatorRegistry()
        self._register()

    def liveness(self) -> str | None:
        """Why the controller should be restarted, or None."""
        now = time.monotonic()
        if self.evaluator is None or self.task is None:
            if now - self.started > self.options.liveness_after_s:
                return f"the evaluator has not started within {self.options.liveness_after_s:g}s"
            return None
        if self.task.done():
            return "the evaluation loop has stopped"
        idle = now - self.evaluator.loop_beat
        if idle > self.options.liveness_after_s:
            return f"the evaluation loop has not gone round for {idle:.0f}s"
        return None

    def _on_tick(self, stats: TickStats, entries: list[SloEntry]) -> None:
        metrics.evaluation_duration.observe(stats.seconds)
        metrics.evaluated_slos.inc(stats.evaluated)
        for reason, count in stats.failures.items():
            metrics.evaluation_failures.labels(reason).inc(count)
        metrics.evaluation_overruns.inc(stats.overruns)
        if self.evaluator is not None:
            metrics.evaluation_units.set(self.evaluator.units_running)
        for namespace, name in stats.gone:
            metrics.forget_slo(namespace, name)
        for entry in entries:
            if entry.status:
                metrics.record_slo(
                    entry.namespace, entry.name, entry.spec.service, entry.spec.target, entry.status
                )
        if stats.evaluated:
            # The unit's answers, statuses and arrays are garbage now: give their pages back
            # (at most every few seconds).
            self._trim()

    def _register(self) -> None:
        reg = self.registry
        kind = (GROUP, VERSION, SLO_KIND.plural)

        @kopf.on.login(registry=reg)
        def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
            # An explicit registry gets no default login handlers.
            return connection_info(self.options.kubeconfig, settings)

        @kopf.on.startup(registry=reg)
        async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
            # Only watch-event handlers, so kopf adds no finalizer and no annotations to SLOs:
            # nothing to get stuck when slogate is uninstalled, and no PATCH per object at
            # start-up (at 5,000 SLOs that intake cost ~180 MiB of resident memory). Naming the
            # finalizer earlier versions added lets kopf remove it from objects that still
            # carry it. A DELETED event lost to a watch re-list is caught by the next status
            # write (404: the evaluator drops the SLO).
            settings.persistence.finalizer = f"{PREFIX}/finalizer"
            # kopf's per-handler success Events would drown the ones that matter.
            settings.posting.level = logging.WARNING
            settings.peering.name = self.options.peering or "slogate"
            settings.peering.standalone = self.options.peering is None
            # One ClusterKopfPeering for every mode, also when watching only some namespaces:
            # the replicas compete for the whole controller, not per namespace.
            settings.peering.clusterwide = True
            settings.peering.priority = self.priority
            settings.peering.lifetime = LIFETIME_S
            if self.options.liveness_port:
                self.probes = await start_probe_server(
                    self.options.liveness_port, {"/healthz": self.liveness}
                )
            load_config(self.options.kubeconfig)
            api = api_client()
            self.sink = KubeSink(api)
            self.gates.attach(api)
            if self.options.prometheus_rules:
                self.rules = RulesKeeper(
                    api,
                    labels=self.options.rule_labels,
                    options=RuleOptions(interval_s=self.options.rule_interval_s),
                    namespaces=self.options.namespaces,
                    resync_s=self.options.rule_resync_s,
                    probe_s=min(60.0, self.options.rule_resync_s),
                    on_change=lambda: self.evaluator.wake() if self.evaluator else None,
                )
            self.evaluator = Evaluator(
                self.pool.get,
                self.sink,
                self.options.evaluator,
                on_tick=self._on_tick,
                after_tick=self._refresh_gates,
                rules_condition=self.rules.condition if self.rules else None,
            )
            if self.rules is not None:
                active = (lambda: True) if self.options.peering is None else self.peering
                self.rules_task = asyncio.create_task(self.rules.run(active), name="slogate-rules")
            if self.options.peering is None:
                metrics.controller_active.set(1.0)
                self.task = asyncio.create_task(self.evaluator.run(), name="slogate-evaluator")
            else:
                metrics.controller_active.set(0.0)  # until peering says otherwise
                self.peering_task = asyncio.create_task(self.peering.run(api))
                self.task = asyncio.create_task(
                    self.evaluator.run(self.peering), name="slogate-evaluator"
                )

        @kopf.on.cleanup(registry=reg)
        async def cleanup(**_: Any) -> None:
            for task in (self.task, self.peering_task, self.rules_task):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            await self.pool.aclose()
            if self.probes is not None:
                await self.probes.cleanup()

        # Watch events rather than create/update handlers: they need no diff-base, so a standby
        # peer that takes over sees every object as it is (its own kopf never saw the changes).
        @kopf.on.event(*kind, registry=reg)
        async def slo_event(type: str | None, body: kopf.Body, **_: Any) -> None:
            if type == "DELETED":
                meta = body["metadata"]
                if self.evaluator is not None:
                    self.evaluator.remove((meta["namespace"], meta["name"]))
                if self.rules is not None:
                    self.rules.remove((meta["namespace"], meta["name"]))
                metrics.forget_slo(meta["namespace"], meta["name"])
                return
            await self._accept(dict(body))

        gate_kind = (GROUP, VERSION, GATE_KIND.plural)

        @kopf.on.event(*gate_kind, registry=reg)
        async def gate_event(type: str | None, body: kopf.Body, **_: Any) -> None:
            meta = body["metadata"]
            if type == "DELETED":
                self.gates.remove((meta["namespace"], meta["name"]))
                return
            try:
                spec = GateSpec.model_validate(body.get("spec") or {})
            except ValidationError:
                # What the CRD let through but the model refuses (an older CRD): say so on the
                # gate, which then gates nothing (the webhook skips it too).
                self.gates.remove((meta["namespace"], meta["name"]))
                if not invalid_spec_reported(body.get("status"), meta.get("generation")):
                    errors = field_errors({**dict(body), "apiVersion": f"{GROUP}/{VERSION}"})
                    await self.gates.report_invalid(
                        meta["namespace"], meta["name"], meta.get("generation"), "; ".join(errors)
                    )
                return
            if self.gates.upsert(dict(body), spec) and self.evaluator is not None:
                self.evaluator.wake()

    def _on_peering_change(self, active: bool) -> None:
        metrics.controller_active.set(1.0 if active else 0.0)
        if not active and self.evaluator is not None:
            # A standby must not keep exporting the numbers it last saw: the active replica's
            # are the current ones, and dashboards aggregate over replicas.
            for entry in self.evaluator.entries.values():
                metrics.forget_slo(entry.namespace, entry.name)

    async def _refresh_gates(self, now: float, changed: bool) -> None:
        """Recompute gate decisions when SLOs changed, or every few seconds (staleness)."""
        if not changed and now - self._last_gate_refresh < GATE_REFRESH_S:
            return
        self._last_gate_refresh = now
        assert self.evaluator is not None
        views = {
            key: SloView(e.namespace, e.name, e.labels, e.status)
            for key, e in self.evaluator.entries.items()
        }
        await self.gates.refresh(views, now)

    async def _accept(self, body: dict[str, Any]) -> None:
        assert self.evaluator is not None and self.sink is not None
        meta = body["metadata"]
        try:
            spec = SloSpec.model_validate(body.get("spec") or {})
        except ValidationError:
            # The CRD refuses almost everything the model does; what slips through (e.g. a
            # CRD installed from an older version) is reported, not crashed on.
            errors = field_errors({**body, "apiVersion": f"{GROUP}/{VERSION}"})
            await self._report_invalid(body, Problem("InvalidSpec", "; ".join(errors)[:1000]))
            return
        if self.rules is not None:
            # Rules need no Prometheus answer: kept even while the SLO cannot be evaluated.
            self.rules.upsert(
                meta["namespace"], meta["name"], meta.get("uid", ""), meta.get("generation"), spec
            )
        try:
            self.evaluator.upsert(body, spec)
        except ValueError as exc:
            # What the models accept but the query builder cannot use: this SLO alone fails.
            log.warning("SLO %s/%s cannot be evaluated: %s", meta["namespace"], meta["name"], exc)
            await self._report_invalid(
                body, Problem("InvalidSpec", str(exc)[:1000], "spec.indicator")
            )

    async def _report_invalid(self, body: dict[str, Any], problem: Problem) -> None:
        assert self.evaluator is not None and self.sink is not None
        meta = body["metadata"]
        self.evaluator.remove((meta["namespace"], meta["name"]))
        if invalid_spec_reported(body.get("status"), meta.get("generation")):
            return
        status = failed_status(
            body.get("status"), generation=meta.get("generation"), now=time.time(), problem=problem
        )
        with contextlib.suppress(SloGone):
            await self.sink.write_status(meta["namespace"], meta["name"], status)

    def operator_kwargs(self) -> dict[str, Any]:
        """Arguments for ``kopf.run`` / ``kopf.operator`` (``slogate run`` combines roles)."""
        return {
            "registry": self.registry,
            "clusterwide": not self.options.namespaces,
            "namespaces": self.options.namespaces,
            "standalone": self.options.peering is None,
            "peering_name": self.options.peering,
            "priority": self.priority,
            "identity": self.identity,
        }

    def run(self) -> None:
        limit_arenas()  # before any thread exists (the metrics server, kopf's executor)
        configure_logging(self.options.log_format)
        if self.options.metrics_port:
            start_http_server(self.options.metrics_port, registry=metrics.REGISTRY)
        kopf.run(**self.operator_kwargs())


def configure_logging(log_format: str) -> None:
    kopf.configure(
        verbose=False,
        log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.PLAIN,
    )
    # One line per query or per handled watch event is noise at thousands of SLOs.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
