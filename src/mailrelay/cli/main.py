"""`mailrelay` entry point: parses the command line, dispatches, and maps errors to exits.

Exit codes: 0 success, 2 a user mistake (bad option, config or input; one line on stderr),
1 a runtime failure (database unreachable, ...), 130 interrupted. No tracebacks, except with
MAILRELAY_DEBUG=1 for failures that are bugs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from types import ModuleType
from typing import NoReturn

import sqlalchemy as sa

from mailrelay import __version__
from mailrelay.accounts.service import AccountError
from mailrelay.cli.common import CONFIG_ENV, DEFAULT_CONFIG_PATH, UsageError, resolve_config
from mailrelay.core.domains import DomainError
from mailrelay.logs import json_logging
from mailrelay.settings import ConfigError
from mailrelay.store.db import StorageError

PROG = "mailrelay"

# Each command's module (mailrelay.cli.<module>) and its line in `mailrelay --help`. Only the
# module of the command given is imported: every module together pulls in most of mailrelay
# (the queue's commands the delivery code, `account` the webhook signer's cryptography), which
# took each command about 1.2 s to start; one module, about 0.8 s (measured wall time).
COMMANDS = {
    "account": ("account_cmd", "manage accounts and their API keys"),
    "domain": ("domain_cmd", "manage sender domains and their DKIM keys"),
    "address": ("address_cmd", "manage the known recipients of inbound domains"),
    "queue": ("queue_cmd", "inspect and manage the mail queue"),
    "suppression": ("suppression_cmd", "manage suppression lists (addresses not sent to)"),
    "events": ("events_cmd", "show the event log (processed, delivered, deferred, bounced...)"),
    "inbox": ("inbox_cmd", "mail captured by sandbox accounts, and received mail kept or posted"),
    "node": ("node_cmd", "the delivering processes of the nodes sharing this database"),
    "operator": ("operator_cmd", "operator accounts of the dashboard; keys of the operator's HTTP API (/admin/v1)"),
    "status": ("status_cmd", "database, schema, delivery processes and queue at a glance; "
                             "exit code 1 when something is wrong"),
    "retention": ("retention_cmd", "delete finished mail past its [retention] period"),
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, like every other mailrelay error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message} (see `{self.prog} --help`)\n")


def _serve_module() -> ModuleType | None:
    # cli/serve.py pulls in the whole server (asyncio, ssl, cryptography: ~0.1 s), so it is
    # imported only for `serve`, and by name so that this file does not depend on it.
    try:
        return importlib.import_module("mailrelay.cli.serve")
    except ModuleNotFoundError as exc:
        if exc.name != "mailrelay.cli.serve":
            raise
        return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line; with `command`, only that command's arguments are filled in (the
    others are listed by name and help, their modules not imported). None: every command."""
    parser = _Parser(prog=PROG, description="Self-hosted email delivery service.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-c", "--config", metavar="PATH", default=None,
        help=f"configuration file (default: ${CONFIG_ENV} or ./{DEFAULT_CONFIG_PATH}; "
             "when the default file is missing, built-in defaults are used)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=_Parser)
    serve_parser = sub.add_parser("serve", help="run the SMTP server")
    serve_parser.set_defaults(func=_cmd_serve)
    serve = _serve_module() if command in (None, "serve") else None
    add_serve_arguments = getattr(serve, "add_serve_arguments", None)
    if add_serve_arguments is not None:
        add_serve_arguments(serve_parser)
    for name, (module, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text)
        if command in (None, name):
            importlib.import_module(f"mailrelay.cli.{module}").add_arguments(command_parser)
    return parser


def command_word(argv: list[str]) -> str:
    """The command named in `argv` ("" when none): the first word that is not an option of
    `mailrelay` itself or the value of -c/--config."""
    words = iter(argv)
    for word in words:
        if word in ("-c", "--config"):
            next(words, None)
        elif word == "--":
            return next(words, "")
        elif not word.startswith("-"):
            return word
    return ""


def _cmd_serve(args: argparse.Namespace) -> int:
    serve = _serve_module()
    if serve is None:
        raise StorageError("the server is not part of this build (mailrelay.cli.serve is missing)")
    return int(serve.cmd_serve(args))


def _error(message: str) -> None:
    # One line, whatever the exception text holds.
    text = " ".join(message.split())
    if json_logging():  # `serve` with log_format = "json" got this far: keep every line JSON
        logging.getLogger("mailrelay").error("%s", text)
        return
    print(f"{PROG}: error: {text}", file=sys.stderr)


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else type(orig).__name__


def main(argv: list[str] | None = None) -> int:
    try:
        argv = sys.argv[1:] if argv is None else argv
        args = build_parser(command_word(argv)).parse_args(argv)
        resolve_config(args)
        return int(args.func(args))
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except KeyboardInterrupt:
        return 130
    except (ConfigError, AccountError, DomainError, UsageError) as exc:
        _error(str(exc))
        return 2
    except StorageError as exc:
        _error(str(exc))
        return 1
    except sa.exc.SQLAlchemyError as exc:
        _error(f"database error: {_reason(exc)}")
        return 1
    except BrokenPipeError:
        # `mailrelay queue list | head`: the reader went away; say nothing more.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as exc:
        if os.environ.get("MAILRELAY_DEBUG") == "1":
            raise
        _error(f"unexpected {type(exc).__name__}: {exc} (set MAILRELAY_DEBUG=1 for a traceback)")
        return 1
