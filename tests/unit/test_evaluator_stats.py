"""What an evaluation round reports: failed evaluations counted by their Ready reason."""

from __future__ import annotations

from typing import Any

from slogate.controller.evaluator import Evaluator, EvaluatorSettings, TickStats
from slogate.core.objective import SloSpec
from slogate.core.slo.evaluate import Forecast, Recommendation, SloResult
from slogate.core.status import Event, Problem, evaluated_status, failed_status

NOW = 1_750_000_000.0
SPEC = {
    "service": "checkout",
    "target": 99.9,
    "indicator": {"ratio": {"errors": "e", "total": "t"}},
}


class Sink:
    def __init__(self) -> None:
        self.written: list[tuple[str, dict[str, Any]]] = []
        self.events: list[Event] = []

    async def write_status(self, namespace: str, name: str, status: dict[str, Any]) -> bool:
        self.written.append((name, status))
        return True

    async def post_event(self, ref: dict[str, Any], event: Event) -> None:
        self.events.append(event)


def _evaluated() -> dict[str, Any]:
    result = SloResult(
        sli=0.9995,
        consumed=0.5,
        remaining=0.5,
        burn_rates={"1h": 0.5},
        firing=(),
        risk="SAFE",
        forecast=Forecast(None, "never", None, "stable", "high", "history"),
        recommendation=Recommendation(99.9, 99.95, None, None),
        message="msg",
    )
    return evaluated_status(result, None, generation=1, now=NOW, problems=[])


async def test_failures_are_counted_by_ready_reason_and_successes_are_not() -> None:
    sink = Sink()
    ev = Evaluator(lambda url: None, sink, EvaluatorSettings())  # type: ignore[arg-type,return-value]
    entries = [
        ev.upsert(
            {"metadata": {"namespace": "ns", "name": name, "uid": name}, "spec": SPEC},
            SloSpec.model_validate(SPEC),
        )
        for name in ("ok", "down", "slow", "also-down")
    ]
    outcomes = {
        ("ns", "ok"): _evaluated(),
        **{
            ("ns", name): failed_status(
                None, generation=1, now=NOW, problem=Problem(reason, "it failed")
            )
            for name, reason in (
                ("down", "PrometheusUnreachable"),
                ("slow", "PrometheusTimeout"),
                ("also-down", "PrometheusUnreachable"),
            )
        },
    }
    stats = TickStats()
    await ev._write(entries, outcomes, NOW, stats)
    assert stats.evaluated == 4
    assert dict(stats.failures) == {"PrometheusUnreachable": 2, "PrometheusTimeout": 1}
    assert stats.writes == len(sink.written) == 4
    assert sorted(e.reason for e in sink.events) == [
        "PrometheusTimeout",
        "PrometheusUnreachable",
        "PrometheusUnreachable",
    ]
