"""The Prometheus edge of the operator: an async query client, its classified errors, and the
pool that decides which client (and so which credentials) serves an SLO's backend URL."""

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
from slogate.prometheus.errors import PROMETHEUS_ERROR_TYPES, ErrorKind, PrometheusError
from slogate.prometheus.pool import ClientPool, UrlInvalid, UrlNotAllowed

__all__ = [
    "PROMETHEUS_ERROR_TYPES",
    "ClientPool",
    "ErrorKind",
    "Observer",
    "PrometheusClient",
    "PrometheusConfig",
    "PrometheusError",
    "QueryResult",
    "RangeSeries",
    "ResultType",
    "Sample",
    "UrlInvalid",
    "UrlNotAllowed",
    "is_finite",
]
