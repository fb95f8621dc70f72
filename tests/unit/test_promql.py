"""PromQL built from indicators: the strings Prometheus will run."""

import pytest

from slogate.core.objective import Indicator, RatioIndicator
from slogate.core.promql import (
    batch,
    bucket_bounds_query,
    event_queries,
    match_bucket,
    parse_selector,
    render,
)


def test_errors_ratio_defaults_missing_error_series_to_zero() -> None:
    q = event_queries(
        Indicator.model_validate(
            {
                "ratio": {
                    "errors": 'http_requests_total{code=~"5.."}',
                    "total": "http_requests_total",
                }
            }
        )
    )
    assert q.kind == "counts"
    assert render(q.bad, "5m") == (
        '(sum(increase(http_requests_total{code=~"5.."}[5m])) or vector(0))'
    )
    assert q.total is not None
    assert render(q.total, "30d") == "sum(increase(http_requests_total[30d]))"


def test_good_ratio_counts_bad_as_total_minus_good() -> None:
    q = event_queries(
        Indicator.model_validate({"ratio": {"good": 'req_total{ok="1"}', "total": "req_total"}})
    )
    assert render(q.bad, "1h") == (
        '(sum(increase(req_total[1h])) - (sum(increase(req_total{ok="1"}[1h])) or vector(0)))'
    )


def test_latency_reads_the_bucket_with_its_exact_le() -> None:
    ind = Indicator.model_validate(
        {"latency": {"histogram": 'rpc_seconds{job="api"}', "threshold": 0.3}}
    )
    assert bucket_bounds_query(ind) == 'count by (le) (rpc_seconds_bucket{job="api"})'
    q = event_queries(ind, le="0.30")
    assert 'rpc_seconds_bucket{job="api",le="0.30"}' in q.bad
    assert q.total == 'sum(increase(rpc_seconds_count{job="api"}[{{window}}]))'
    with pytest.raises(ValueError, match="le label"):
        event_queries(ind)


def test_query_indicator_is_a_ratio() -> None:
    q = event_queries(
        Indicator.model_validate(
            {"query": {"errorRatio": "sum(rate(e[{{window}}])) / sum(rate(t[{{window}}]))"}}
        )
    )
    assert q.kind == "ratio"
    assert q.total is None
    assert render(q.bad, "6h") == "(sum(rate(e[6h])) / sum(rate(t[6h])))"


@pytest.mark.parametrize(
    ("text", "name", "matchers"),
    [
        ("up", "up", ()),
        ('up{job="a"}', "up", ('job="a"',)),
        ('{__name__="rpc_seconds", job="a"}', "rpc_seconds", ('job="a"',)),
        ('  x_total { a="1" , b=~"2" } ', "x_total", ('a="1"', 'b=~"2"')),
        ("x{a='}{', b=`)`}", "x", ("a='}{'", "b=`)`")),
    ],
)
def test_parse_selector(text: str, name: str, matchers: tuple[str, ...]) -> None:
    sel = parse_selector(text)
    assert (sel.name, sel.matchers) == (name, matchers)


def test_named_selector_renders_with_suffix_and_extra_matcher() -> None:
    sel = parse_selector('{__name__="rpc_seconds", job="a"}')
    assert sel.render("_bucket", 'le="1"') == 'rpc_seconds_bucket{job="a",le="1"}'


@pytest.mark.parametrize(
    ("threshold", "bounds", "found"),
    [
        (0.3, ["0.1", "0.30", "+Inf"], "0.30"),
        (0.3, ["0.1", "0.3"], "0.3"),
        (0.3, ["3e-01"], "3e-01"),
        (0.25, ["0.1", "0.3", "+Inf"], None),
        (1.0, ["1", "junk"], "1"),
    ],
)
def test_match_bucket_compares_numbers_not_strings(
    threshold: float, bounds: list[str], found: str | None
) -> None:
    assert match_bucket(threshold, bounds) == found


def test_batch_tags_every_part() -> None:
    expr = batch([("a", "sum(x)"), ('b"c', "sum(y)")])
    assert expr == (
        'label_replace(sum(x), "slogate_q", "a", "", "") or '
        'label_replace(sum(y), "slogate_q", "b\\"c", "", "")'
    )
    with pytest.raises(ValueError, match="at least one"):
        batch([])


@pytest.mark.parametrize(
    "text",
    [
        'x{a="b"}) or vector(1',  # closes the query around it
        'x{a="b"}[5m]',  # a range: slogate adds its own
        'x{a="b',  # an unterminated string swallows what follows
        'x{a="b"} # comment',  # comments out the rest of a batch
        'x{a="b"} or y',
        "{}",
        '{__name__="x{y}"}',  # a name that is not one
        '{job="no-name"}',
    ],
)
def test_parse_selector_refuses_anything_but_a_selector(text: str) -> None:
    with pytest.raises(ValueError, match=r"selector|metric name"):
        parse_selector(text)


def test_ratio_queries_refuse_a_selector_the_models_would_refuse() -> None:
    # A model built without validation (an older CRD let it through) still cannot inject.
    indicator = Indicator.model_construct(
        ratio=RatioIndicator.model_construct(errors='e{a="1"}) or vector(1', total="t", good=None),
        latency=None,
        query=None,
    )
    with pytest.raises(ValueError, match="not a series selector"):
        event_queries(indicator)
