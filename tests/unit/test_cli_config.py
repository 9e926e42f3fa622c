"""Which config file a CLI command reads: -c, $MAILRELAY_CONFIG, or ./mailrelay.toml."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from mailrelay.cli.common import load_config, resolve_config
from mailrelay.cli.main import build_parser
from mailrelay.settings import ConfigError


def _args(argv: list[str]) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    resolve_config(args)
    return args


def test_explicit_config_wins_and_is_left_as_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILRELAY_CONFIG", "/env/path.toml")
    args = _args(["-c", "given.toml", "account", "list"])
    assert (args.config, args.config_path, args.config_given) == ("given.toml", "given.toml", True)


def test_environment_names_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILRELAY_CONFIG", "/env/path.toml")
    args = _args(["account", "list"])
    assert args.config is None  # cli/serve.py reads `config` itself
    assert (args.config_path, args.config_given) == ("/env/path.toml", True)


def test_missing_default_file_means_builtin_defaults(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MAILRELAY_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    args = _args(["queue", "list"])
    assert (args.config_path, args.config_given) == ("mailrelay.toml", False)
    assert load_config(args).source == "(defaults)"


def test_existing_default_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MAILRELAY_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mailrelay.toml").write_text("[smtp]\nmax_recipients = 7\n")
    settings = load_config(_args(["queue", "list"]))
    assert settings.source == "mailrelay.toml"
    assert settings.smtp.max_recipients == 7


def test_missing_named_file_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MAILRELAY_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="file not found"):
        load_config(_args(["-c", str(tmp_path / "nope.toml"), "queue", "list"]))
