"""`mailrelay operator key create | list | revoke`: keys of the operator API, in data_dir."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from mailrelay.accounts.operators import FILE_NAME, OperatorKeys
from mailrelay.accounts.passwords import make_hasher
from tests.integration.cli.conftest import CLI, InProcess


def _created(out: str) -> tuple[str, str]:
    lines = out.splitlines()
    key = next(line.removeprefix("key: ") for line in lines if line.startswith("key: "))
    key_id = lines[0].split()[3]
    return key_id, key


def test_create_prints_the_key_once_and_stores_only_a_hash_in_a_0600_file(cli: CLI) -> None:
    result = cli("operator", "key", "create", "--label", "ops team")
    assert result.code == 0, result.err
    key_id, key = _created(result.out)
    assert key.startswith(f"MRO.{key_id}.")
    path = cli.config.parent / "data" / FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert key_id in text and key.split(".")[2] not in text
    assert "$argon2id$" in text
    listed = cli("operator", "key", "list", "--json")
    assert listed.code == 0, listed.err
    [entry] = json.loads(listed.out)
    assert entry["id"] == key_id and entry["label"] == "ops team" and entry["status"] == "active"
    assert key not in listed.out
    # The key authenticates against the file; an account-shaped key with the same parts does not.
    keys = OperatorKeys(path, make_hasher())
    found = keys.authenticate(key)
    assert found is not None and found.id == key_id
    assert keys.authenticate("SG." + key.split(".", 1)[1]) is None


def test_revoke_ends_the_key_and_is_listed(cli: CLI) -> None:
    key_id, key = _created(cli("operator", "key", "create").out)
    other_id, other = _created(cli("operator", "key", "create", "--label", "second").out)
    result = cli("operator", "key", "revoke", key_id)
    assert result.code == 0, result.err
    assert result.out.strip() == f"revoked operator key {key_id}"
    table = cli("operator", "key", "list").out.splitlines()
    assert table[0].split() == ["ID", "LABEL", "STATUS", "CREATED", "REVOKED"]
    rows = {line.split()[0]: line.split()[2] for line in table[1:]}
    assert rows == {key_id: "revoked", other_id: "active"}
    keys = OperatorKeys(cli.config.parent / "data" / FILE_NAME, make_hasher())
    assert keys.authenticate(key) is None
    assert keys.authenticate(other) is not None
    # Revoking again keeps the first revocation; the full key names it as well as the id.
    assert cli("operator", "key", "revoke", key).code == 0


def test_mistakes_are_one_line_exit_2(inproc: InProcess) -> None:
    assert inproc("operator", "key", "list").out.strip().startswith("no operator keys")
    result = inproc("operator", "key", "revoke", "A" * 22)
    assert result.code == 2
    assert result.error_line == f"mailrelay: error: no operator key with id {'A' * 22!r}"
    result = inproc("operator", "key", "revoke", "no such id")
    assert result.code == 2
    assert "not an operator key id" in result.error_line
    result = inproc("operator", "key", "create", "--label", "a\nb")
    assert result.code == 2
    assert "invalid label" in result.error_line


def test_a_key_file_others_may_write_is_refused(inproc: InProcess) -> None:
    created = inproc("operator", "key", "create")
    assert created.code == 0
    _, key = _created(created.out)
    path = Path(inproc.config).parent / "data" / FILE_NAME
    keys = OperatorKeys(path, make_hasher())
    assert keys.authenticate(key) is not None
    os.chmod(path, 0o620)  # whoever may write it could add a key of their own
    result = inproc("operator", "key", "list")
    assert result.code == 2
    assert "writable by group or others" in result.error_line
    assert keys.authenticate(key) is None
    os.chmod(path, 0o600)
    assert inproc("operator", "key", "list").code == 0
    assert keys.authenticate(key) is not None
