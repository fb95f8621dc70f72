"""The functional core: spec models, SLO math and gate decisions.

Nothing under this package performs I/O or imports kopf, httpx or a Kubernetes client; the
shell around it (Prometheus client, kopf handlers, webhook, CLI) feeds it plain data.
"""
