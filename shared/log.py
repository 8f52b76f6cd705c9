"""Structured logs: one JSON object per line with ``severity``, ``message`` and the job's fields.

Cloud Logging reads ``severity`` and ``message`` from JSON on stdout. Secrets never reach a line: values
registered with ``add_secret`` and anything shaped like a bearer token or an API key are masked.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
from typing import Any, TextIO

LOGGER_NAME = "batch_relay"
_SEVERITY = {"DEBUG": "DEBUG", "INFO": "INFO", "WARNING": "WARNING", "ERROR": "ERROR", "CRITICAL": "CRITICAL"}
_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(?i)((?:x-goog-api-key|api[_-]?key|key)[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9._~+/-]{8,}"),
    re.compile(r"\bAIza[0-9A-Za-z_-]{20,}"),
    re.compile(r"\bya29\.[0-9A-Za-z._-]+"),
]
_secrets: set[str] = set()


def add_secret(value: str | None) -> None:
    """Mask this exact value wherever it would appear in a log line."""
    if value and len(value) >= 4:
        _secrets.add(value)


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "[REDACTED]")
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "[REDACTED]", text)
    return text


def storable(text: str, limit: int = 500) -> str:
    """An error message fit for a record and an event: secrets redacted, cut to ``limit`` characters, and
    valid UTF-8 (an API's reply can carry lone surrogates, which Firestore refuses: they are escaped)."""
    return redact(text)[:limit].encode("utf-8", "backslashreplace").decode("utf-8")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelname, "DEFAULT"),
            "message": record.getMessage(),
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        line = redact(json.dumps(entry, default=str, ensure_ascii=False))
        return line.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates from an API, escaped


class _Handler(logging.StreamHandler[TextIO]):
    """Writes to the stream of the moment (``sys.stdout`` unless told otherwise), looked up per line."""

    def __init__(self, stream_name: str) -> None:
        super().__init__()
        self.stream_name = stream_name

    @property
    def stream(self) -> TextIO:
        stream: TextIO = getattr(sys, self.stream_name)
        return stream

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def configure(stream: str = "stdout", level: int = logging.INFO) -> logging.Logger:
    """Install the JSON handler on the package logger (idempotent). ``stream``: stdout or stderr."""
    logger = logging.getLogger(LOGGER_NAME)
    handler = next((h for h in logger.handlers if isinstance(h, _Handler)), None)
    if handler is None:
        handler = _Handler(stream)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
        logger.propagate = False
    handler.stream_name = stream
    logger.setLevel(level)
    return logger


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}")


def log(logger: logging.Logger, level: int, message: str, **fields: Any) -> None:
    logger.log(level, message, extra={"fields": fields})
