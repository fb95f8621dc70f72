"""slogate's benchmarks: ``make bench`` (``python -m bench.harness``) writes docs/benchmarks.md."""
