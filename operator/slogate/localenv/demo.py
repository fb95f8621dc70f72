"""``make demo``: slogate on a local control plane and Prometheus, no Docker needed."""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from pathlib import Path

from slogate.localenv.binaries import REPO_ROOT, bin_dir
from slogate.localenv.controlplane import ControlPlane
from slogate.localenv.prometheus import PrometheusServer


def _step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def _show(cp: ControlPlane, *args: str) -> str:
    print(f"$ kubectl {' '.join(args)}", flush=True)
    result = cp.kubectl(*args)
    out = result.stdout + result.stderr
    print(out.rstrip(), flush=True)
    return out


def run_demo(once: bool, workdir: Path | None = None) -> int:
    bins = bin_dir()
    with contextlib.ExitStack() as stack:
        _step("starting etcd and kube-apiserver (local control plane)")
        cp = stack.enter_context(ControlPlane(workdir=workdir))
        print(f"kube-apiserver {cp.url}, kubeconfig {cp.kubeconfig}")
        _step("starting Prometheus")
        prom = stack.enter_context(PrometheusServer())
        print(f"Prometheus {prom.url}")
        _step("installing the CRDs and applying examples/")
        _show(cp, "apply", "--server-side", "-f", str(REPO_ROOT / "crds"))
        cp.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        _show(cp, "apply", "-f", str(REPO_ROOT / "examples"))
        _show(cp, "get", "slogate", "-n", "shop")
        if once:
            return 0
        print(
            "\nThe local environment is running. Try:\n"
            f"  export PATH={bins}:$PATH KUBECONFIG={cp.kubeconfig}\n"
            "  kubectl get slo,gate -n shop\n"
            f"  curl -s '{prom.url}/api/v1/query?query=up'\n"
            "Press Ctrl-C to stop everything.",
            flush=True,
        )
        stop = False

        def _stop(*_: object) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGTERM, _stop)
        try:
            while not stop:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        _step("stopping")
    return 0


if __name__ == "__main__":
    sys.exit(run_demo(once="--once" in sys.argv))
