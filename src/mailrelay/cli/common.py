"""What every non-serve command shares: the config file, the database, user errors."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import sqlalchemy as sa

from mailrelay.settings import Settings, load_settings
from mailrelay.store.db import check_row_limit
from mailrelay.store.open import open_storage

CONFIG_ENV = "MAILRELAY_CONFIG"
DEFAULT_CONFIG_PATH = "mailrelay.toml"


class UsageError(Exception):
    """Bad input on the command line (unknown queue id, mismatched passwords): exit code 2."""


def row_limit(text: str) -> int:
    """An argparse type for --limit N: a whole number from 1 to what a database LIMIT takes."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    try:
        return check_row_limit(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def resolve_config(args: argparse.Namespace) -> None:
    """Set `args.config_path` and `args.config_given` (named by -c or $MAILRELAY_CONFIG).

    `args.config` is left as typed (None without -c): `cli/serve.py` reads it itself.
    """
    if args.config is not None:
        args.config_path, args.config_given = args.config, True
    elif os.environ.get(CONFIG_ENV):
        args.config_path, args.config_given = os.environ[CONFIG_ENV], True
    else:
        args.config_path, args.config_given = DEFAULT_CONFIG_PATH, False


def load_config(args: argparse.Namespace) -> Settings:
    """A missing default file means built-in defaults; a file the user named must exist."""
    if not args.config_given and not Path(args.config_path).exists():
        return load_settings(None)
    return load_settings(args.config_path)


def open_from_args(args: argparse.Namespace) -> tuple[Settings, sa.Engine]:
    settings = load_config(args)
    return settings, open_storage(settings)
