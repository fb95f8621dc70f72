"""Generated hostile SLO specs: what a careless or malicious tenant could get past the API server.

Seeded and deterministic (``HostileSpecs(seed)``), so a failure names a reproducible case. Each
spec is built to pass the CRD (the API server decides; refused ones are counted and dropped by
the caller) while carrying what might hurt someone else: selectors with every string-literal
form, escaped quotes, backslashes, unicode and label values near the length limit; free-form
PromQL that tries to break out of its parentheses, comment out the rest of a batch, forge another
SLO's result label, return many series or huge numbers; URLs nobody allowed or that are not URLs
at all; odd windows, calendars and burn-rate rules.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterator
from typing import Any

METRICS = ("iso_requests_total", "http_requests_total", "up", "nonexistent_metric_total")
UNICODE = "äöüßéèñçøå漢字テストрусскийעבריתالعربية🙂\u200b\u00a0"
FORGED_KEYS = ("0/b/5m", "0/t/5m", "1/b/1h", "0/r/300", "2/t/21600s", "0/b", "0/t")
QUOTE_FORMS = ('"{}"', "'{}'", "`{}`")


class HostileSpecs:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    # --- pieces ------------------------------------------------------------------------------

    def _text(self, max_len: int) -> str:
        alphabet = string.ascii_letters + string.digits + " _-./:;,|()[]{}<>=!~*+?^$#" + UNICODE
        n = self.rng.choice([1, 5, 20, max_len // 2, max_len])
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    def _literal(self, max_len: int = 60) -> str:
        """A complete PromQL string literal (the CRD's grammar), in any of the three forms."""
        raw = self._text(max_len)
        form = self.rng.choice(QUOTE_FORMS)
        if form.startswith("`"):
            return form.format(raw.replace("`", ""))
        quote = form[0]
        escaped = raw.replace("\\", "\\\\").replace(quote, "\\" + quote).replace("\n", " ")
        return form.format(escaped)

    def selector(self) -> str:
        name = self.rng.choice(METRICS)
        matchers = []
        for _ in range(self.rng.choice([0, 1, 2, 5])):
            label = self.rng.choice(["job", "code", "slogate_q", "__name__", "le", "x" * 50])
            op = self.rng.choice(["=", "!=", "=~", "!~"])
            matchers.append(f"{label}{op}{self._literal(self.rng.choice([10, 60, 700]))}")
        if self.rng.random() < 0.1:
            # Near the 4096-character limit of a selector.
            matchers.append(f'job="{"x" * 3900}"')
        body = ", ".join(matchers)
        spacing = self.rng.choice(["", " ", "\n\t "])
        if not matchers:
            return name
        return f"{name}{spacing}{{{spacing}{body}{spacing}}}"

    def error_ratio(self) -> str:
        sel = self.selector()
        key = self.rng.choice(FORGED_KEYS)
        forms = [
            # Break out of the wrapping label_replace and add a series with another SLO's key.
            f'1)) or label_replace(vector(0), "slogate_q", "{key}", "", "") or ((vector(1)'
            " # {{window}}",
            f'label_replace(vector(0.5), "slogate_q", "{key}", "", "") or '
            f"sum(rate({sel}[{{{{window}}}}]))",
            # Comment out whatever a batch would append.
            f"sum(rate({sel}[{{{{window}}}}])) # ) or everything after this",
            # Unbalanced, unterminated, nonsense.
            f"sum(rate({sel}[{{{{window}}}}]) / (",
            f'sum(rate({sel}[{{{{window}}}}])) / "unterminated',
            f"{{{{window}}}} {self._text(200)}",
            # Many series, huge values, NaN and Inf.
            f"rate({sel}[{{{{window}}}}])",
            "vector(1e308) * 10 + 0 * absent(x[{{window}}])",
            "vector(0) / vector(0) + 0 * absent(x[{{window}}])",
            "-vector(1) + 0 * absent(x[{{window}}])",
            # Expensive-looking but valid.
            'count_over_time({__name__=~".+"}[{{window}}]) > 1e12',
            # Near the 8192-character limit.
            f"sum(rate({sel}[{{{{window}}}}])) " + " + 0" * 1900,
        ]
        return self.rng.choice(forms)

    def url(self) -> str:
        return self.rng.choice(
            [
                "http://prometheus.attacker.example:9090",
                "https://10.0.0.1:443/prefix/..",
                "http://[::1:9090",
                "http://127.0.0.1:1",
                f"http://h{self.rng.randrange(10**6)}.example/api",
                "http://exa mple".replace(" ", "\u00a0"),
                "http://" + "a" * 2000,
                "http://%00:80",
                "http://ünïcödé.example",
            ]
        )

    # --- specs -------------------------------------------------------------------------------

    def indicator(self) -> dict[str, Any]:
        kind = self.rng.choice(["errors", "good", "latency", "query", "query"])
        if kind in ("errors", "good"):
            return {"ratio": {kind: self.selector(), "total": self.selector()}}
        if kind == "latency":
            name = self.rng.choice(["iso_duration_seconds", "iso_requests_total", "up"])
            sel = self.selector().split("{", 1)
            matchers = "{" + sel[1] if len(sel) > 1 else ""
            return {
                "latency": {
                    "histogram": f"{name}{matchers}",
                    "threshold": self.rng.choice([0.1, 0.3, 1e-9, 1e9, 0.30000000000000004]),
                }
            }
        return {"query": {"errorRatio": self.error_ratio()}}

    def spec(self, index: int) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "service": self.rng.choice(["svc", self._text(200).strip() or "svc", "x" * 253]),
            "target": self.rng.choice([0.001, 50.0, 99.9, 99.999999, 99.9999999999]),
            "indicator": self.indicator(),
            "evaluation": {
                "interval": self.rng.choice(["30s", "1m", "5m", "1h"]),
                "minEvents": self.rng.choice([0, 1, 10**9]),
            },
        }
        choice = self.rng.random()
        if choice < 0.25:
            spec["window"] = self.rng.choice(["1d", "7d", "28d", "90d", "366d"])
        elif choice < 0.4:
            spec["calendar"] = {
                "period": self.rng.choice(["week", "month", "quarter"]),
                "timeZone": self.rng.choice(["UTC", "Pacific/Kiritimati", "America/St_Johns"]),
            }
        if self.rng.random() < 0.25:
            spec["prometheus"] = {"url": self.url()}
        if self.rng.random() < 0.2:
            spec["alerting"] = {
                "rules": [
                    {
                        "name": f"r{i}",
                        "long": self.rng.choice(["1h", "6h", "366d"]),
                        "short": self.rng.choice(["1s", "5m"]),
                        "burnRate": self.rng.choice([0.001, 1.0, 1000.0]),
                        "severity": self.rng.choice(["page", "ticket"]),
                    }
                    for i in range(self.rng.choice([1, 16]))
                ]
            }
        if self.rng.random() < 0.2:
            spec["dependsOn"] = [
                {"name": self.rng.choice(["missing", "iso-0/healthy-0", f"other-ns/x{index}"])}
            ]
        if self.rng.random() < 0.3:
            spec["owner"] = self._text(253)[:253]
            spec["description"] = self._text(1024)[:1024]
        return spec

    def manifests(self, namespaces: list[str]) -> Iterator[dict[str, Any]]:
        """Endless hostile SLO manifests, spread over ``namespaces``."""
        index = 0
        while True:
            labels = {
                "hostile": "yes",
                self.rng.choice(["team", "slogate.dev/x", "a" * 63]): self.rng.choice(
                    ["pay", "", "z" * 63]
                ),
            }
            yield {
                "apiVersion": "slogate.dev/v1alpha1",
                "kind": "ServiceLevelObjective",
                "metadata": {
                    "name": f"hostile-{index:04d}",
                    "namespace": namespaces[index % len(namespaces)],
                    "labels": labels,
                },
                "spec": self.spec(index),
            }
            index += 1
