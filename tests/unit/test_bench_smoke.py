"""The benchmark harness's pure pieces work (no servers, nothing timed): `make bench` relies on
them to build the baseline's queries, the load generator's requests and the report."""

from __future__ import annotations

import json
import math

import pytest

from bench import baseline, report
from bench.bench_admission import (
    MIX,
    GateTarget,
    admission_review,
    current_replicasets,
    histogram_buckets,
    plan_requests,
    stored_templates,
)
from bench.bench_scale import compare_budgets, parse_tick_line
from bench.world import exporter_spec, kind_of_slo, make_services, slo_manifest, story_series
from slogate.core.admission import template_digest
from slogate.core.objective import SloSpec


def test_baseline_sends_one_raw_query_per_window_and_the_whole_window() -> None:
    slo = baseline.BaselineSlo("ns", "a", 'x_total{code="500"}', "x_total", 99.9)
    queries = baseline.queries_for(slo)
    assert [w for w, _ in queries] == ["5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"]
    assert queries[-1][1] == (
        '(sum(increase(x_total{code="500"}[30d])) or vector(0)) / sum(increase(x_total[30d]))'
    )
    status = baseline.status_for(slo, {"30d": 0.0005, "1h": 0.002, "5m": None}, 1_800_000_000)
    assert status["errorBudget"]["consumed"] == pytest.approx(0.5)
    assert status["burnRates"]["1h"] == pytest.approx(2.0)
    assert status["burnRates"]["5m"] is None
    assert status["lastEvaluationTime"] == "2027-01-15T08:00:00Z"


def test_tables_and_quantiles() -> None:
    table = report.render_table(("a", "b|c"), [(1, "x|y")])
    assert table.splitlines() == ["| a | b\\|c |", "| --- | --- |", "| 1 | x\\|y |"]
    with pytest.raises(ValueError, match="columns"):
        report.render_table(("a",), [(1, 2)])
    assert report.percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert report.percentile([1.0, 2.0], 99) == pytest.approx(1.99)
    assert math.isnan(report.percentile([], 50))
    buckets = [(0.001, 50.0), (0.005, 99.0), (math.inf, 100.0)]
    assert report.histogram_quantile(buckets, 0.5) == pytest.approx(0.001)
    assert report.histogram_quantile(buckets, 0.99) == pytest.approx(0.005)
    assert report.histogram_quantile(buckets, 1.0) == pytest.approx(0.005)  # +Inf: last bound
    assert report.bucket_deltas({0.001: 5.0, math.inf: 9.0}, {0.001: 1.0}) == [
        (0.001, 4.0),
        (math.inf, 9.0),
    ]
    assert report.ratio(10, 250) == "25.0x fewer"
    assert report.fmt(12345.0) == "12,345"
    assert report.ms(0.0042) == "4.2 ms"
    sec = report.Section("S", intro="hi", notes=["n"])
    sec.table("t", ("a",), [(1,)])
    doc = report.render_document("T", {"date": "now"}, "pre", [sec])
    assert doc.startswith("# T\n") and "## S" in doc and "| 1 |" in doc and "- n" in doc


def test_admission_requests_follow_the_mix_and_expect_the_right_answer() -> None:
    review = admission_review("u1", "team-01", "web", "web", "img:1", "img:2")
    req = review["request"]
    assert req["operation"] == "UPDATE" and req["kind"]["kind"] == "Deployment"
    assert req["oldObject"]["spec"]["template"] != req["object"]["spec"]["template"]
    gates = [GateTarget("team-01", "a", "allow"), GateTarget("team-02", "b", "deny")]
    gates.append(GateTarget("team-03", "c", "warn"))
    planned = plan_requests(gates, ["team-01"], 2000)
    kinds = {k: sum(1 for p in planned if p.kind == k) for k, _ in MIX}
    for kind, share in MIX:
        assert abs(kinds[kind] / 2000 - share) < 0.04, kinds
    assert all(p.allowed == (p.kind != "deny") for p in planned)
    assert json.loads(planned[0].body)["kind"] == "AdmissionReview"
    # Every gated request's Deployment has the ReplicaSet of its current template, so the
    # webhook's index (not a LIST) can answer its rollback check; the new image is no rollback.
    indexed = {template_digest(rs["spec"]["template"]) for rs in current_replicasets(gates)}
    for p in planned:
        request = json.loads(p.body)["request"]
        if p.kind != "ungated":
            assert template_digest(request["oldObject"]["spec"]["template"]) in indexed
            assert template_digest(request["object"]["spec"]["template"]) not in indexed
    # As the API server stores them (with defaults): reviews must carry those same templates.
    listed = current_replicasets(gates)
    for rs in listed:
        rs["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"
        rs["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    defaulted = {template_digest(rs["spec"]["template"]) for rs in listed}
    stored = stored_templates(listed)
    assert len(stored) == len(gates)
    for p in plan_requests(gates, ["team-01"], 200, stored=stored):
        request = json.loads(p.body)["request"]
        if p.kind != "ungated":
            assert template_digest(request["oldObject"]["spec"]["template"]) in defaulted
    text = (
        'x_bucket{le="0.001"} 3.0\nx_bucket{le="+Inf"} 4.0\nx_count 4.0\ny_bucket{le="0.001"} 9.0\n'
    )
    assert histogram_buckets(text, "x") == {0.001: 3.0, math.inf: 4.0}


def test_scale_helpers() -> None:
    line = "[2026 INFO] evaluated 5001 SLOs: 101 Prometheus requests, 7 status writes, 3.25s"
    assert parse_tick_line(line) == (5001, 101, 7, 3.25)
    assert parse_tick_line("something else") is None
    statuses = {("ns", "a"): {"errorBudget": {"consumed": 0.5004}}, ("ns", "b"): {}}
    got = compare_budgets(statuses, [["ns", "a", 0.0, 0.5], ["ns", "b", 0.0, 0.1]])
    assert got["compared"] == 1 and got["within"] == 1 and got["missing"] == 1
    assert got["max_abs"] == pytest.approx(0.0004)


def test_world_is_consistent() -> None:
    services = make_services(10, 1_800_000_000.0, days=2)
    assert [s.kind for s in services] == [kind_of_slo(i, 10) for i in range(10)]
    series = story_series(services[0], "127.0.0.1:1")
    assert len(series) == 2 and series[0].labels["code"] == "500"
    assert series[0].values[-1] == pytest.approx(exporter_spec(services[0])["bad0"])
    assert all(b >= a for a, b in zip(series[1].values, series[1].values[1:], strict=False))
    manifest = slo_manifest(7, 10, 3)
    SloSpec.model_validate(manifest["spec"])
    assert manifest["metadata"]["namespace"] == "team-01"


def test_rule_bench_compares_the_same_long_windows_derived_and_raw() -> None:
    from bench import bench_rules

    derived = bench_rules.variant_group(7, "long-derived")["rules"]
    raw = bench_rules.variant_group(7, "long-raw")["rules"]
    assert [r["record"] for r in derived] == [r["record"] for r in raw]
    assert {r["record"] for r in derived} == bench_rules.LONG_RECORDS
    assert all("avg_over_time(slogate:" in r["expr"] for r in derived)
    assert sorted(r["expr"].split("[")[1].split("]")[0] for r in raw) == sorted(
        ["6h", "1d", "3d", "30d"] * 2
    )
    assert all('service="svc-7"' in r["expr"] for r in raw)
    # Derived windows read the backfilled rates of SLO 7 mod RATE_SERIES, labelled as SLO 7.
    assert all('slo="rates-7"' in r["expr"] and r["labels"]["slo"] == "slo-7" for r in derived)
    whole = bench_rules.variant_group(7, "whole-derived")["rules"]
    assert any("alert" in r for r in whole)
    rows = [
        {"n": 1000, "variant": "long-derived", "group_seconds": 0.5, "cpu_per_round": 0.2},
        {"n": 1000, "variant": "long-raw", "group_seconds": 6.0, "cpu_per_round": 3.0},
    ]
    assert bench_rules.ratios({"rows": rows}) == {1000: (12.0, 15.0)}
