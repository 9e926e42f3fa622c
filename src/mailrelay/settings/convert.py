"""Values from TOML and the environment checked and converted to a section's declared types.

A section is a frozen dataclass whose annotations are the schema: `build` reads one from a
table, lets `MAILRELAY_...` variables win, and raises `ConfigError` naming the source, the key
and what its type expects.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any, Literal

ENV_PREFIX = "MAILRELAY_"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """A user mistake in the configuration: file, key, and what is expected."""

    def __init__(self, source: str, key: str, expected: str) -> None:
        super().__init__(f"{source}: {key}: {expected}")
        self.source = source
        self.key = key
        self.expected = expected


def build(cls: type, data: Mapping[str, Any], source: str, prefix: str, env: Mapping[str, str],
          env_prefix: str, extra: Mapping[str, Any] | None = None,
          defaults: Mapping[str, Any] | None = None) -> Any:
    """Make `cls` from file values `data`, environment overrides, then `defaults`.

    `extra` are fields the caller has built itself (a name, nested tables); they are not keys.
    """
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)} - set(extra or {})
    for key in data:
        if key not in known:
            raise ConfigError(source, f"{prefix}.{key}", f"unknown key (known: {', '.join(sorted(known))})")
    kwargs: dict[str, Any] = dict(extra or {})
    for name in sorted(known):
        env_name = f"{env_prefix}_{name}".upper()
        if env_name in env:
            kwargs[name] = _convert(env[env_name], hints[name], f"environment {env_name}", f"{prefix}.{name}",
                                    from_env=True)
        elif name in data:
            kwargs[name] = _convert(data[name], hints[name], source, f"{prefix}.{name}", from_env=False)
        elif defaults and name in defaults:
            kwargs[name] = _default_value(defaults[name])
    return cls(**kwargs)


def named_tables(defaults: Mapping[str, Any], raw: Mapping[str, Any], source: str, section: str,
                 example: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """`[section.NAME]` tables: each built-in name, then the file's new ones in file order, with
    the file's table for it (empty when the file has none)."""
    for name in list(defaults) + [n for n in raw if n not in defaults]:
        user = raw.get(name, {})
        if not isinstance(user, dict):
            raise ConfigError(source, f"{section}.{name}", f"expected a table, e.g. [{section}.{name}]{example}")
        yield name, user


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(f'"{a}"' for a in typing.get_args(tp))
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_describe(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is tuple:
        inner = typing.get_args(tp)[0]
        if inner is IPNetwork or inner == IPNetwork:
            return 'a list of networks such as ["10.0.0.0/8", "::1/128"]'
        return "a list of strings"
    return str(tp)


def _convert(value: Any, tp: Any, source: str, key: str, *, from_env: bool) -> Any:
    """Check and convert one value to the declared type, or raise ConfigError."""
    origin = typing.get_origin(tp)
    bad = ConfigError(source, key, f"expected {_describe(tp)}, got {value!r}")
    if origin in (types.UnionType, typing.Union):
        for arg in typing.get_args(tp):
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, source, key, from_env=from_env)
            except ConfigError:
                continue
        raise bad
    if from_env and isinstance(value, str):
        value = _env_literal(value, tp)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        raise bad
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            return float(value)
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise bad
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad
        inner = typing.get_args(tp)[0]
        if inner is str:
            return tuple(value)
        try:
            return tuple(ipaddress.ip_network(v, strict=False) for v in value)
        except ValueError as exc:
            raise ConfigError(source, key, f"expected {_describe(tp)}: {exc}") from None
    raise bad  # pragma: no cover - a type the schema does not use


def _env_literal(text: str, tp: Any) -> Any:
    """Environment values are strings; read them as the declared type when they look like it."""
    origin = typing.get_origin(tp)
    if tp is bool:
        low = text.strip().lower()
        return {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(
            low, text
        )
    if tp is int:
        try:
            return int(text)
        except ValueError:
            return text
    if tp is float:
        try:
            return float(text)
        except ValueError:
            return text
    if origin is tuple:
        stripped = text.strip()
        if stripped.startswith("["):
            try:
                return tomllib.loads(f"v = {stripped}")["v"]
            except tomllib.TOMLDecodeError:
                return text
        return [p.strip() for p in stripped.split(",") if p.strip()]
    return text


def _default_value(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
