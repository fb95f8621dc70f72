"""The local environment: real etcd, kube-apiserver, Prometheus, Alertmanager and slogate's own
processes for tests, benchmarks and ``make demo`` (``python -m localenv.demo``), plus the fault
injectors that stand in front of them. Not part of the product: neither the wheel nor the image
carries it, and ``slogate`` never imports it (docs/local-environment.md)."""
