"""Logging configuration (interim: plain text)."""

from __future__ import annotations

import logging


def configure_logging(log_format: str | None = None, level: str | None = None) -> None:
    logging.basicConfig(
        level=(level or "INFO").upper()
        if (level or "INFO").upper() in ("DEBUG", "INFO", "WARNING", "ERROR")
        else "INFO",
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("pgserver").setLevel(logging.WARNING)  # it logs every pg_ctl call at INFO
