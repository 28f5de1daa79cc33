"""Capture what the app logs exactly as a deployment writes it: app/core/logs.py's JSON handler on the root
logger and its quiet libraries, into memory, parsed back line by line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from app.core.logs import QUIET_LOGGERS, make_handler, quiet_libraries


@dataclass
class CapturedLogs:
    stream: io.StringIO = field(default_factory=io.StringIO)

    @property
    def text(self) -> str:
        """Everything written, as written."""
        return self.stream.getvalue()

    def lines(self, level: int = logging.DEBUG) -> list[dict]:
        """Every line at `level` or above, parsed (each must be one JSON object)."""
        parsed = [json.loads(line) for line in self.text.splitlines()]
        return [line for line in parsed if logging.getLevelName(line["level"]) >= level]

    def named(self, msg: str) -> list[dict]:
        return [line for line in self.lines() if line["msg"] == msg]


@contextmanager
def captured_logs(level: int = logging.INFO) -> Iterator[CapturedLogs]:
    """Root logging at `level` into a CapturedLogs for the block (the previous levels come back)."""
    captured = CapturedLogs()
    handler = make_handler("json", captured.stream)
    root = logging.getLogger()
    previous = {name: logging.getLogger(name).level for name in ("", *QUIET_LOGGERS)}
    root.addHandler(handler)
    root.setLevel(level)
    quiet_libraries(level)
    try:
        yield captured
    finally:
        root.removeHandler(handler)
        for name, was in previous.items():
            logging.getLogger(name).setLevel(was)
