"""Logging for the webhook role, without kopf: one JSON object per line, or plain text.

The JSON lines carry the fields kopf's JSON format has (``message``, ``timestamp``,
``severity``), so both roles' logs read alike in one log pipeline.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from slogate.core.timetext import rfc3339_micro

_SEVERITY = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warn",
    logging.ERROR: "error",
    logging.CRITICAL: "fatal",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "message": record.getMessage(),
            "timestamp": rfc3339_micro(record.created),
            "severity": _SEVERITY.get(record.levelno, "info"),
            "logger": record.name,
        }
        fields = getattr(record, "audit", None)
        if isinstance(fields, dict):
            line["audit"] = fields
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(line)


_audit = logging.getLogger("slogate.audit")


def audit(**fields: Any) -> None:
    """One structured line per admission decision that refused, warned, overrode or rolled
    back (and per override recorded): under ``audit`` in JSON logs, as JSON in plain ones."""
    _audit.info("audit %s", json.dumps(fields, sort_keys=True), extra={"audit": fields})


def configure_logging(log_format: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("[%(asctime)s] %(name)-24.24s [%(levelname)-8.8s] %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # urllib3 warns about every connection a watch loses; the informer says it once, better.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
