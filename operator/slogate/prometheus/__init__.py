"""The Prometheus edge of the operator: an async query client and its classified errors."""

from slogate.prometheus.client import (
    Observer,
    PrometheusClient,
    PrometheusConfig,
    QueryResult,
    RangeSeries,
    ResultType,
    Sample,
    is_finite,
)
from slogate.prometheus.errors import ErrorKind, PrometheusError

__all__ = [
    "ErrorKind",
    "Observer",
    "PrometheusClient",
    "PrometheusConfig",
    "PrometheusError",
    "QueryResult",
    "RangeSeries",
    "ResultType",
    "Sample",
    "is_finite",
]
