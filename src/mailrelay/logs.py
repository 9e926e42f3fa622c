"""Logging set-up shared by the serve process and its delivery workers: one format, to stderr."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    # alembic narrates every migration step at INFO; we log what matters ourselves.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLogger().level))
