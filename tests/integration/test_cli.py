"""The ``slogate`` command line against the real API server (and offline validation)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from localenv.controlplane import ControlPlane
from localenv.objects import deployment
from tests.conftest import EXAMPLES, MANIFESTS
from tests.integration.test_webhook import apply, gate, set_status, slo, slo_status

NS = "cli"


def slogate(*args: str, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["--kubeconfig", str(kubeconfig)] if kubeconfig else []
    return subprocess.run(
        [sys.executable, "-m", "slogate", *args, *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_validate_examples_passes() -> None:
    result = slogate("validate", str(EXAMPLES), str(MANIFESTS / "valid"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "10 of 10 slogate manifest(s) valid" in result.stderr


def test_validate_broken_manifests_one_line_per_error() -> None:
    invalid = sorted((MANIFESTS / "invalid").glob("*.yaml"))
    result = slogate("validate", str(MANIFESTS / "invalid"))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    # Every broken file is reported, each error on its own line naming file, object and field.
    assert {line.split(":")[0] for line in lines} == {str(p) for p in invalid}
    for line in lines:
        path, name, field, message = (part.strip() for part in line.split(":", 3))
        assert name == Path(path).stem
        assert field.startswith("spec")
        assert message
    assert f"0 of {len(invalid)} slogate manifest(s) valid" in result.stderr


def test_validate_reports_unreadable_yaml(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: ServiceLevelObjective\nspec: [unclosed\n")
    result = slogate("validate", str(broken))
    assert result.returncode == 1
    assert f"{broken}: not valid YAML at line 3, column 1" in result.stdout


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane) -> ControlPlane:
    cp = control_plane
    cp.kubectl("create", "namespace", NS)
    docs: list[dict[str, Any]] = [
        slo("spent", NS),
        slo("fine", NS),
        slo("risky", NS),
        gate("block", "checkout", "spent", NS),
        gate("ok", "cart", "fine", NS),
        gate("warn", "pay", "risky", NS),
        *(deployment(name, NS) for name in ("checkout", "cart", "pay", "other")),
    ]
    apply(cp, *docs)
    for name, st in (
        ("spent", slo_status(-0.29, "FREEZE", 3.2, ["page-fast"])),
        ("fine", slo_status(0.8, "SAFE", 0.2, [])),
        ("risky", slo_status(0.3, "DANGER", 3.5, ["ticket-fast"])),
    ):
        set_status(cp, name, st, NS)
    return cp


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("target", "code", "first"),
    [
        ("deployment/checkout", 1, "BLOCK: deployment/checkout"),
        ("deployment/cart", 0, "ALLOW: deployment/cart"),
        ("deployment/pay", 2, "WARN: deployment/pay"),
        ("deployment/other", 0, "ALLOW: deployment/other"),
        ("releasegate/block", 1, "BLOCK: releasegate/block"),
        ("gate/ok", 0, "ALLOW: gate/ok"),
        ("gate/missing", 2, "UNKNOWN: gate/missing"),
    ],
)
def test_check_exit_codes(cluster: ControlPlane, target: str, code: int, first: str) -> None:
    result = slogate("check", target, "-n", NS, kubeconfig=cluster.kubeconfig)
    assert result.returncode == code, result.stdout + result.stderr
    assert result.stdout.splitlines()[0].startswith(first)


@pytest.mark.cluster
def test_check_block_prints_reasons(cluster: ControlPlane) -> None:
    result = slogate("check", "deployment/checkout", "-n", NS, kubeconfig=cluster.kubeconfig)
    assert "spent: error budget exhausted (-29%), burning 3.2x over 1h" in result.stdout


@pytest.mark.cluster
def test_check_unreachable_cluster_is_unknown(tmp_path: Path) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "x",
                "clusters": [{"name": "x", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "x", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}],
            }
        )
    )
    result = slogate("check", "deployment/checkout", "-n", NS, kubeconfig=config)
    assert result.returncode == 2
    assert result.stderr.startswith("UNKNOWN:")


@pytest.mark.cluster
def test_status_table_and_json(cluster: ControlPlane) -> None:
    table = slogate("status", "-n", NS, kubeconfig=cluster.kubeconfig)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "NAMESPACE",
        "NAME",
        "SERVICE",
        "TARGET",
        "SLI",
        "BUDGET",
        "BURN-1H",
        "BURN-6H",
        "RISK",
        "EXHAUSTS",
        "FIRING",
    ]
    rows = {line.split()[1]: line.split() for line in lines[1:]}
    assert rows["spent"][8] == "FREEZE"
    assert rows["spent"][10] == "page-fast"
    as_json = json.loads(
        slogate("status", "-A", "-o", "json", kubeconfig=cluster.kubeconfig).stdout
    )
    spent = next(r for r in as_json if r["namespace"] == NS and r["name"] == "spent")
    assert spent["budgetRemaining"] == -0.29
    assert spent["risk"] == "FREEZE"
