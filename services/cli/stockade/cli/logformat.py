"""``--log-format text|json`` for the daemons (brain, agent).

json: one object per line, for log pipelines (Loki, Elasticsearch, Cloud Logging) that would
otherwise split a traceback into many records: ``time`` (RFC 3339, UTC, milliseconds),
``level``, ``logger``, ``message`` and, when there is one, ``exception`` (the traceback's text).
"""

from __future__ import annotations

import argparse
import json
import logging
from datetime import UTC, datetime

FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        at = datetime.fromtimestamp(record.created, UTC)
        out: dict[str, str] = {
            "time": at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False)


def add_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default="text",
        help="text (default) or json: one JSON object per line with time, level, logger, message, exception",
    )


def apply(log_format: str, root: logging.Logger | None = None) -> None:
    """Switch the root logger's handlers (set up by `stockade`'s main) to ``log_format``."""
    if log_format != "json":
        return
    root = root or logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter())
