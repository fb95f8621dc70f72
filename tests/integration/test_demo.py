"""``make demo``, run the way a newcomer runs it, checked for its story and its clean exit."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from localenv.binaries import REPO_ROOT, tool

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]


def leftovers() -> tuple[set[str], set[int]]:
    dirs = {p.name for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("slogate-demo-*")}
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"slogate-demo-" in cmdline:
            pids.add(int(proc.name))
    return dirs, pids


def demo(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "localenv.demo", *args],
        cwd=REPO_ROOT,  # localenv is not installed: it imports from the repository root
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_demo_once_tells_the_story_and_leaves_nothing_behind() -> None:
    dirs_before, pids_before = leftovers()
    proc = demo("--once")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    table = out[out.index("$ kubectl get slo -n shop") :]
    rows = {line.split()[0]: line.split() for line in table.splitlines()[2:7]}
    assert rows["checkout-availability"][4:6] == ["0.3x", "SAFE"]
    assert rows["payments-db-availability"][3] == "-40%"
    assert rows["payments-db-availability"][5:7] == ["FREEZE", "exhausted"]
    assert rows["storefront-monthly"][5] == "DANGER"
    refused = out[out.index("$ kubectl set image deployment/payments-db") :]
    assert 'admission webhook "deployments.slogate.dev" denied the request' in refused
    assert (
        "ReleaseGate shop/payments-db: payments-db-availability: error budget exhausted" in refused
    )
    assert "deployment.apps/checkout image updated" in out
    assert "override by oncall-alice" in out
    dirs_after, pids_after = leftovers()
    assert dirs_after <= dirs_before, f"temp dirs left: {dirs_after - dirs_before}"
    assert pids_after <= pids_before, f"processes left: {pids_after - pids_before}"


def test_raising_the_live_error_rate_blocks_checkout() -> None:
    """Follow the printed guide: raise checkout's error rate, time the gate's BLOCK."""
    dirs_before, pids_before = leftovers()
    proc = demo()
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("Press Ctrl-C"):
            break
    guide = "".join(lines)
    try:
        control = re.search(r"curl -X POST '(http://[^']+/control)\?error_ratio=0\.5'", guide)
        kubeconfig = re.search(r"KUBECONFIG=(\S+)", guide)
        assert control and kubeconfig, guide

        def decision() -> str:
            result = subprocess.run(
                [
                    tool("kubectl"),
                    "--kubeconfig",
                    kubeconfig.group(1),
                    "get",
                    "gate",
                    "checkout",
                    "-n",
                    "shop",
                    "-o",
                    "jsonpath={.status.decision}",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            return result.stdout.strip()

        assert decision() == "ALLOW"
        started = time.monotonic()
        urllib.request.urlopen(
            urllib.request.Request(f"{control.group(1)}?error_ratio=1.0", method="POST"), timeout=5
        ).read()
        while decision() != "BLOCK":
            assert time.monotonic() - started < 240, "checkout's gate never blocked"
            time.sleep(1)
        took = time.monotonic() - started
        print(
            f"\nfrom errors starting to the checkout gate's BLOCK: {took:.0f} s "
            "(30s evaluation interval, 5s scrape interval)"
        )
        # page-fast needs the 1h error ratio above 1.44%: 52 s of 100% errors, plus a scrape
        # and an evaluation interval.
        assert took < 52 + 5 + 30 + 30

        # The demo loaded the examples' rules into Prometheus and routes them to Alertmanager
        # (the page itself follows `for: 2m` later; test_alerting.py times that path).
        prom = re.search(r"Prometheus: (http://\S+)", guide)
        am = re.search(r"Alertmanager: (http://\S+)", guide)
        assert prom and am, guide
        with urllib.request.urlopen(f"{prom.group(1)}/api/v1/rules", timeout=5) as resp:
            groups = {g["name"] for g in json.loads(resp.read())["data"]["groups"]}
        assert "slogate/shop/checkout-availability" in groups, groups
        with urllib.request.urlopen(f"{prom.group(1)}/api/v1/alertmanagers", timeout=5) as resp:
            active = json.loads(resp.read())["data"]["activeAlertmanagers"]
        assert [a["url"] for a in active] == [f"{am.group(1)}/api/v2/alerts"]
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, rest
    dirs_after, pids_after = leftovers()
    assert dirs_after <= dirs_before
    assert pids_after <= pids_before
