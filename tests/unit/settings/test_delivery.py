"""[delivery.routes."DOMAIN"] and [delivery.tls_policy]: parsing, and ConfigError naming the key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailrelay.settings import ConfigError, Route, Settings, load_settings


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "mailrelay.toml"
    path.write_text(text)
    return load_settings(path, env=env or {})


def config_error(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert info.value.source.endswith("mailrelay.toml")
    return info.value


def test_defaults_have_no_routes_and_no_policies() -> None:
    s = load_settings(None, env={})
    assert s.delivery.routes == () and s.delivery.tls_policy == () and s.delivery.tls == "may"


def test_routes_parse_with_defaults_and_normalised_domains(tmp_path: Path) -> None:
    s = load(tmp_path, """
[delivery.routes."Example.COM."]
host = "smtp.relay.example"
port = 587
username = "apikey"
password = "s3cret"
tls = "encrypt"

[delivery.routes."*"]
host = "10.0.0.5"
""")
    assert s.delivery.routes == (
        Route(domain="example.com", host="smtp.relay.example", port=587, username="apikey",
              password="s3cret", tls="encrypt"),
        Route(domain="*", host="10.0.0.5", port=25, username="", password="", tls="may"),
    )


def test_tls_policy_parses_with_normalised_domains(tmp_path: Path) -> None:
    s = load(tmp_path, """
[delivery]
tls = "encrypt"

[delivery.tls_policy]
"Bank.Example." = "verify"
"legacy.example" = "none"
""")
    assert s.delivery.tls == "encrypt"
    assert s.delivery.tls_policy == (("bank.example", "verify"), ("legacy.example", "none"))


def test_tables_are_not_read_from_the_environment(tmp_path: Path) -> None:
    s = load(tmp_path, '[delivery.tls_policy]\n"a.example" = "verify"\n',
             env={"MAILRELAY_DELIVERY_ROUTES": "x", "MAILRELAY_DELIVERY_TLS_POLICY": "y",
                  "MAILRELAY_DELIVERY_TLS": "verify"})
    assert s.delivery.routes == () and s.delivery.tls_policy == (("a.example", "verify"),)
    assert s.delivery.tls == "verify"  # the scalar keys still are


@pytest.mark.parametrize(("text", "key", "expected"), [
    ('[delivery.routes."example.com"]\nport = 587\n', 'delivery.routes."example.com".host', "required"),
    ('[delivery.routes."example.com"]\nhost = "h"\ntls = "always"\n', 'delivery.routes."example.com".tls',
     '"verify"'),
    ('[delivery.routes."example.com"]\nhost = "h"\nport = "587"\n', 'delivery.routes."example.com".port',
     "an integer"),
    ('[delivery.routes."example.com"]\nhost = "h"\nport = -1\n', 'delivery.routes."example.com".port',
     "an integer"),
    ('[delivery.routes."example.com"]\nhost = 5\n', 'delivery.routes."example.com".host', "a string"),
    ('[delivery.routes."example.com"]\nhost = "h"\nuser = "u"\n', 'delivery.routes."example.com".user',
     "unknown key"),
    ('[delivery.routes."example.com"]\nhost = "h"\ndomain = "other.example"\n',
     'delivery.routes."example.com".domain', "unknown key"),
    ('[delivery]\nroutes = "smtp.example.net"\n', "delivery.routes", "expected tables"),
    ('[delivery.routes]\n"example.com" = "smtp.example.net"\n', 'delivery.routes."example.com"',
     "expected a table"),
    ('[delivery.tls_policy]\n"bank.example" = "strict"\n', 'delivery.tls_policy."bank.example"', "strict"),
    ('[delivery.tls_policy]\n"bank.example" = true\n', 'delivery.tls_policy."bank.example"', "True"),
    ('[delivery]\ntls_policy = ["bank.example"]\n', "delivery.tls_policy", "expected a table"),
    ('[delivery]\ntls = "strict"\n', "delivery.tls", '"encrypt"'),
    ('[delivery]\nheartbeat_seconds = 0\n', "delivery.heartbeat_seconds", "above 0"),
    ('[delivery]\nheartbeat_seconds = 5\ndead_after = 8\n', "delivery.dead_after", "twice"),
    ('[delivery]\nlease_seconds = 10\n', "delivery.lease_seconds", "dead_after"),
    ('[inbound]\nrecipient_delimiter = "@"\n', "inbound.recipient_delimiter", "no space"),
])
def test_bad_input_names_the_key(tmp_path: Path, text: str, key: str, expected: str) -> None:
    err = config_error(tmp_path, text)
    assert err.key == key
    assert expected in err.expected
    assert key in str(err)


# Loader gaps a review found: route port range, empty host, duplicate spellings, password in repr.


@pytest.mark.parametrize("port", [0, 70000])
def test_route_port_out_of_range(tmp_path: Path, port: int) -> None:
    err = config_error(tmp_path, f'[delivery.routes."example.com"]\nhost = "h"\nport = {port}\n')
    assert err.key == 'delivery.routes."example.com".port'


def test_route_empty_host(tmp_path: Path) -> None:
    err = config_error(tmp_path, '[delivery.routes."example.com"]\nhost = ""\n')
    assert err.key == 'delivery.routes."example.com".host'


def test_route_duplicate_domain(tmp_path: Path) -> None:
    err = config_error(tmp_path, '[delivery.routes."Example.com"]\nhost = "a"\n'
                                 '[delivery.routes."example.com."]\nhost = "b"\n')
    assert err.key.startswith("delivery.routes.")


def test_route_repr_hides_password() -> None:
    assert "s3cret" not in repr(Route(domain="*", host="h", password="s3cret"))


@pytest.mark.parametrize(("processes", "total", "per_domain", "each"), [
    (1, 100, 20, (100, 20)), (2, 100, 20, (50, 10)), (3, 100, 20, (34, 7)), (4, 2, 1, (1, 1)),
    (0, 100, 20, (100, 20)),
])
def test_worker_processes_share_the_node_wide_connection_limits(
        tmp_path: Path, processes: int, total: int, per_domain: int, each: tuple[int, int]) -> None:
    from mailrelay.cli.workers import worker_share

    s = load(tmp_path, f"[delivery]\nprocesses = {processes}\nmax_connections = {total}\n"
                       f"max_per_domain = {per_domain}\n")
    share = worker_share(s).delivery
    assert (share.max_connections, share.max_per_domain) == each
    assert share.processes == processes and worker_share(s).server == s.server


def test_delivery_processes_default_to_one_per_cpu_up_to_four() -> None:
    cpus = len(os.sched_getaffinity(0))
    assert load_settings(None, env={}).delivery.processes == min(cpus, 4) >= 1
    assert load_settings(None, env={"MAILRELAY_DELIVERY_PROCESSES": "0"}).delivery.processes == 0
