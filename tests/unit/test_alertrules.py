"""Generated Prometheus rules: which windows are raw or derived, what alerts carry, and that
promtool (Prometheus's own checker) accepts every group, hostile text included."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from slogate.cli import main
from slogate.core.alertrules import (
    ALERT_NAME,
    BUDGET_RECORD,
    backfill_group,
    content_hash,
    inert,
    prometheus_rule,
    record,
    rule_file,
    rule_group,
    rule_object_name,
)
from slogate.core.objective import SloSpec
from slogate.core.slo.rules import default_rules
from slogate.manifests import dump_yaml

REPO = Path(__file__).resolve().parents[2]


def spec(**extra: Any) -> SloSpec:
    body: dict[str, Any] = {
        "service": "checkout",
        "target": 99.9,
        "indicator": {"ratio": {"errors": 'req_total{code=~"5.."}', "total": "req_total"}},
    }
    body.update(extra)
    return SloSpec.model_validate(body)


def by_name(group: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["record"]: r for r in group["rules"] if "record" in r}


def alerts(group: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in group["rules"] if "alert" in r]


def promtool_check(tmp_path: Path, doc: dict[str, Any]) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(dump_yaml(doc))
    done = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_short_windows_read_raw_series_long_ones_the_recorded_base():
    records = by_name(rule_group("shop", "co", spec()))
    assert records[record("events", 300)]["expr"] == "sum(rate(req_total[5m]))"
    assert records[record("events", 7200)]["expr"] == "sum(rate(req_total[2h]))"
    # 6h: 5-minute rates over 5h55m, plus half the newest and half the oldest 5 minutes.
    base = 'slogate:events:rate5m{slo="co",namespace="shop"}'
    assert records[record("events", 21600)]["expr"] == (
        f"(avg_over_time({base}[355m]) * 21300 + 150 * {base}"
        f" + 150 * ({base} offset 355m or {base} * 0)) / 21600"
    )
    assert records[record("errors", 30 * 86400)]["expr"].startswith(
        '(avg_over_time(slogate:errors:rate5m{slo="co",namespace="shop"}[43195m]) * 2591700'
    )
    # Every recorded series names its SLO, so one Prometheus holds many teams' rules.
    assert all(r["labels"] == {"slo": "co", "namespace": "shop"} for r in records.values())


def test_burn_rate_record_applies_min_events_and_the_target():
    records = by_name(rule_group("shop", "co", spec(evaluation={"minEvents": 50})))
    burn = records[record("burn_rate", 3600)]["expr"]
    assert burn == (
        'clamp(slogate:errors:rate1h{slo="co",namespace="shop"} / '
        'slogate:events:rate1h{slo="co",namespace="shop"}, 0, 1) / 0.001 and '
        '(slogate:events:rate1h{slo="co",namespace="shop"} * 3600 >= 50)'
    )
    assert BUDGET_RECORD in records


def test_min_events_zero_still_needs_one_event():
    burn = by_name(rule_group("shop", "co", spec(evaluation={"minEvents": 0})))[
        record("burn_rate", 300)
    ]["expr"]
    assert burn.endswith("* 300 > 0)")


def test_one_alert_per_default_rule_with_the_status_condition():
    group = rule_group("shop", "co", spec(owner="payments", tier=1))
    found = alerts(group)
    assert [a["labels"]["rule"] for a in found] == [r.name for r in default_rules(30 * 86400)]
    fast = found[0]
    assert fast["alert"] == ALERT_NAME
    # status.firing's tolerance (1e-9) is part of the bar.
    assert fast["expr"] == (
        'slogate:burn_rate:rate1h{slo="co",namespace="shop"} > 14.4000000144 and '
        'slogate:burn_rate:rate5m{slo="co",namespace="shop"} > 14.4000000144'
    )
    assert [a["for"] for a in found] == ["2m", "15m", "1h", "3h"]
    assert fast["labels"] == {
        "severity": "page",
        "rule": "page-fast",
        "slo": "co",
        "namespace": "shop",
        "service": "checkout",
        "owner": "payments",
        "tier": "1",
    }
    assert fast["annotations"]["kubectl"] == "kubectl describe slo co -n shop"
    assert "2% of the budget goes every 1h" in fast["annotations"]["description"]


def test_spec_labels_annotations_runbook_and_for():
    group = rule_group(
        "shop",
        "co",
        spec(
            alerting={
                "labels": {"team": "payments"},
                "annotations": {"dashboard": "https://grafana/d/x"},
                "runbookURL": "https://runbooks/checkout",
                "rules": [
                    {
                        "name": "fast",
                        "long": "1h",
                        "short": "5m",
                        "burnRate": 10.0,
                        "severity": "page",
                        "for": "5m",
                    }
                ],
            }
        ),
    )
    (alert,) = alerts(group)
    assert alert["for"] == "5m"
    assert alert["labels"]["team"] == "payments"
    assert alert["annotations"]["runbook_url"] == "https://runbooks/checkout"
    assert alert["annotations"]["dashboard"] == "https://grafana/d/x"
    # Custom rules record their own windows plus the compliance window, nothing else.
    windows = {r["record"] for r in group["rules"] if "record" in r}
    assert record("burn_rate", 21600) not in windows
    assert record("burn_rate", 30 * 86400) in windows


def test_latency_matches_the_bucket_however_it_is_written():
    group = rule_group(
        "shop",
        "lat",
        spec(indicator={"latency": {"histogram": 'rpc_seconds{job="a"}', "threshold": 0.3}}),
    )
    expr = by_name(group)[record("errors", 300)]["expr"]
    assert expr == (
        '(sum(rate(rpc_seconds_count{job="a"}[5m])) - '
        '(sum(rate(rpc_seconds_bucket{job="a",le=~"0\\\\.30*"}[5m])) or vector(0)))'
    )


def test_query_indicator_records_its_ratio_per_window():
    group = rule_group(
        "shop",
        "q",
        spec(indicator={"query": {"errorRatio": "avg_over_time(err_ratio[{{window}}])"}}),
    )
    records = by_name(group)
    assert records[record("error_ratio", 3600)]["expr"] == (
        "clamp(avg_over_time(err_ratio[1h]), 0, 1)"
    )
    assert records[record("error_ratio", 86400)]["expr"].startswith(
        '(avg_over_time(slogate:error_ratio:rate5m{slo="q",namespace="shop"}[1435m])'
    )


def test_backfill_group_holds_only_what_reads_raw_series():
    group = backfill_group("shop", "co", spec())
    assert [r["record"] for r in group["rules"]] == [
        "slogate:events:rate5m",
        "slogate:errors:rate5m",
    ]


def test_calendar_slo_scales_factors_to_the_period():
    group = rule_group("shop", "cal", spec(calendar={"period": "week"}))
    found = alerts(group)
    assert [a["labels"]["rule"] for a in found] == [r.name for r in default_rules(7 * 86400)]
    assert "over the week" in found[0]["annotations"]["description"]
    # 2% of a week in 1h: 0.02 * 168 = 3.36.
    assert "> 3.36000000336 and" in found[0]["expr"]


def test_spec_text_never_reaches_the_template_engine():
    hostile = '{{ with query "secret_total" }}{{ . | first | value }}{{ end }}'
    group = rule_group(
        "shop",
        "co",
        spec(
            service=hostile,
            owner=hostile,
            alerting={"labels": {"team": hostile}, "annotations": {"note": hostile}},
        ),
    )
    alert = alerts(group)[0]
    for text in (
        alert["labels"]["service"],
        alert["labels"]["owner"],
        alert["labels"]["team"],
        alert["annotations"]["note"],
        alert["annotations"]["summary"],
    ):
        assert "{{ with query" not in text
    assert inert("a {{ b }}") == 'a {{ "{{" }} b }}'


def test_promtool_accepts_every_kind_of_group(tmp_path):
    hostile = '{{ query "x" }} "quoted" \\ back'
    groups = [
        rule_group("shop", "co", spec()),
        rule_group(
            "shop", "cal", spec(calendar={"period": "quarter", "timeZone": "Europe/Berlin"})
        ),
        rule_group(
            "shop",
            "lat",
            spec(indicator={"latency": {"histogram": "rpc_seconds", "threshold": 1.0}}),
        ),
        rule_group(
            "shop", "q", spec(indicator={"query": {"errorRatio": "avg_over_time(r[{{window}}])"}})
        ),
        rule_group(
            "shop",
            "good",
            spec(
                indicator={"ratio": {"good": 'req_total{code!~"5.."}', "total": "req_total"}},
                service=hostile,
                alerting={"labels": {"team": hostile}, "runbookURL": "https://r/x"},
            ),
        ),
    ]
    promtool_check(tmp_path, rule_file(groups))


def test_prometheus_rule_is_owned_labelled_and_hashed():
    obj = prometheus_rule("shop", "co", "uid-1", spec(), labels={"release": "prometheus"})
    meta = obj["metadata"]
    assert obj["apiVersion"] == "monitoring.coreos.com/v1"
    assert meta["name"] == "slogate-co"
    assert meta["labels"]["release"] == "prometheus"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "slogate"
    (owner,) = meta["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("ServiceLevelObjective", "co", "uid-1")
    assert meta["annotations"]["slogate.dev/rules-hash"] == content_hash(
        obj["spec"], meta["labels"]
    )
    changed = prometheus_rule("shop", "co", "uid-1", spec(target=99.5))
    assert changed["metadata"]["annotations"] != meta["annotations"]
    assert len(rule_object_name("x" * 253)) <= 253


def test_cli_rules_on_the_examples_passes_promtool(tmp_path, capsys):
    out = tmp_path / "rules.yaml"
    assert main(["rules", str(REPO / "examples"), "-o", str(out)]) == 0
    done = subprocess.run(
        ["promtool", "check", "rules", str(out)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout
    assert "SUCCESS" in done.stdout


def test_cli_rules_refuses_invalid_manifests_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: slogate.dev/v1alpha1\nkind: ServiceLevelObjective\n"
        "metadata: {name: x}\nspec: {service: s, target: 120, indicator: {ratio: {total: t}}}\n"
    )
    out = tmp_path / "rules.yaml"
    assert main(["rules", str(bad), "-o", str(out)]) == 1
    assert not out.exists()
    assert "spec.target" in capsys.readouterr().err


@pytest.mark.parametrize("disabled", [True, False])
def test_cli_rules_skips_slos_with_alerting_disabled(tmp_path, capsys, disabled):
    doc = tmp_path / "slo.yaml"
    doc.write_text(
        "apiVersion: slogate.dev/v1alpha1\nkind: ServiceLevelObjective\n"
        "metadata: {name: x, namespace: a}\n"
        "spec: {service: s, target: 99.0, indicator: {ratio: {errors: e, total: t}},"
        f" alerting: {{disabled: {str(disabled).lower()}}}}}\n"
    )
    assert main(["rules", str(doc)]) == 0
    out = capsys.readouterr().out
    assert ("slogate/a/x" in out) is not disabled
