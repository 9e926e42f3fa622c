"""Operator keys: the credentials of the operator's API (/admin/v1), apart from accounts.

An operator key is `MRO.<id>.<secret>` (the id and secret of an account key, another prefix):
it belongs to no account, so it can never send mail, log in over SMTP or reach /v3 (the
account key parser refuses its prefix), and an account key never parses as one.

Where they live: `<data_dir>/operator_keys.json`, mode 0600, with argon2id hashes of the
secrets (as api_keys holds them), not in the database. A row of api_keys needs an account, and
an account (even a reserved, disabled one) is one `account enable` away from sending; the
schema has no other table for them. A key works on the node whose data_dir holds it, and
revoking it there ends it everywhere it works (it is nowhere else, unless the file is copied).
The file is re-read on every check, so a revocation takes effect at the next request; writes
replace it whole (a new file, then rename) under an exclusive lock.

Security: a file that others may write is refused (whoever can write it can add a key), so is a
symlink; secrets are shown once and never stored or logged; a miss does the same argon2 work as
a hit, so timing does not tell which ids exist.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from mailrelay.accounts.passwords import generate_password
from mailrelay.accounts.service import MAX_LABEL, MAX_PASSWORD, AccountError, VerifiedCache
from mailrelay.core.ids import random_id
from mailrelay.core.text import has_control_chars
from mailrelay.store.db import StorageError

log = logging.getLogger("mailrelay.accounts")

FILE_NAME = "operator_keys.json"
PREFIX = "MRO"
ID_LENGTH = 22
SECRET_BYTES = 32  # 43 url-safe characters
_KEY = re.compile(rf"{PREFIX}\.([A-Za-z0-9]{{{ID_LENGTH}}})\.([A-Za-z0-9_-]{{43}})\Z")
_ID = re.compile(rf"[A-Za-z0-9]{{{ID_LENGTH}}}\Z")


class OperatorKeyError(AccountError):
    """A user mistake about operator keys, or a key file that cannot be trusted."""


@dataclass(frozen=True, slots=True)
class OperatorKey:
    id: str
    label: str
    created_at: float
    revoked_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def key_path(data_dir: Path) -> Path:
    return data_dir / FILE_NAME


def parse_key(text: str) -> tuple[str, str] | None:
    m = _KEY.match(text.strip())
    return (m.group(1), m.group(2)) if m else None


class OperatorKeys:
    """The key file of one node; every method reads it afresh."""

    def __init__(self, path: Path, hasher: PasswordHasher, *, clock: Callable[[], float] = time.time,
                 cache_seconds: float = 600.0) -> None:
        self.path = path
        self._hasher = hasher
        self._clock = clock
        self._verified = VerifiedCache(cache_seconds)

    # -- the file ----------------------------------------------------------------------------

    def _read(self) -> list[dict[str, Any]]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise OperatorKeyError(f"cannot read {self.path}: {exc.strerror or exc} "
                                   "(a symlink is refused)") from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o022:
                raise OperatorKeyError(f"{self.path} is writable by group or others (or not a file): "
                                       "refused; chmod 600 it")
            data = f.read(1 << 20)
        try:
            doc = json.loads(data)
            entries = doc["keys"]
            if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise OperatorKeyError(f"{self.path} is not an operator key file") from None
        return entries

    def _write(self, entries: list[dict[str, Any]]) -> None:
        tmp = self.path.with_name(f".{FILE_NAME}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"version": 1, "keys": entries}, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[dict[str, Any]]]:
        """The entries, read under an exclusive lock held until the block has written them."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = os.open(self.path.with_name(f".{FILE_NAME}.lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW,
                           0o600)
        except OSError as exc:
            raise StorageError(f"cannot write operator keys in {self.path.parent}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield self._read()
        except OSError as exc:
            raise StorageError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        finally:
            os.close(lock)

    # -- keys --------------------------------------------------------------------------------

    def create(self, label: str = "") -> tuple[OperatorKey, str]:
        """A new key; the full key is returned here and never again."""
        if len(label) > MAX_LABEL or has_control_chars(label):
            raise OperatorKeyError(f"invalid label: at most {MAX_LABEL} printable characters")
        key_id = random_id(ID_LENGTH)
        secret = secrets.token_urlsafe(SECRET_BYTES)
        now = self._clock()
        entry = {"id": key_id, "label": label, "secret_hash": self._hasher.hash(secret),
                 "created_at": now, "revoked_at": None}
        with self._locked() as entries:
            self._write([*entries, entry])
        return _key(entry), f"{PREFIX}.{key_id}.{secret}"

    def list(self) -> list[OperatorKey]:
        """Every key, revoked ones too, oldest first."""
        return [_key(e) for e in sorted(self._read(), key=lambda e: (e.get("created_at", 0), e.get("id", "")))]

    def revoke(self, key_id: str) -> OperatorKey:
        """Revoke by id (or full key); revoking twice keeps the first time."""
        parsed = parse_key(key_id)
        wanted = parsed[0] if parsed else key_id.strip()
        if not _ID.match(wanted):
            raise OperatorKeyError("not an operator key id: expected the id shown by `operator key list`")
        with self._locked() as entries:
            entry = next((e for e in entries if e.get("id") == wanted), None)
            if entry is None:
                raise OperatorKeyError(f"no operator key with id {wanted!r}")
            if entry.get("revoked_at") is None:
                entry["revoked_at"] = self._clock()
                self._write(entries)
        return _key(entry)

    @cached_property
    def _dummy_hash(self) -> str:
        return self._hasher.hash(generate_password())

    def _verify(self, stored_hash: str, secret: str) -> bool:
        if self._verified.hit(stored_hash, secret):
            return True
        try:
            ok = self._hasher.verify(stored_hash, secret)
        except (VerificationError, InvalidHashError):
            return False
        if ok:
            self._verified.add(stored_hash, secret)
        return ok

    def authenticate(self, full_key: str) -> OperatorKey | None:
        """The active key `full_key` is, else None (also when the file is unreadable: logged)."""
        if len(full_key) > MAX_PASSWORD:
            return None
        parsed = parse_key(full_key)
        try:
            entries = self._read() if parsed else []
        except OperatorKeyError as exc:
            log.error("operator keys refused: %s", exc)
            entries = []
        entry = next((e for e in entries if parsed and e.get("id") == parsed[0]), None)
        if parsed is None or entry is None or not isinstance(entry.get("secret_hash"), str):
            self._verify(self._dummy_hash, full_key)
            return None
        if not self._verify(entry["secret_hash"], parsed[1]) or entry.get("revoked_at") is not None:
            return None
        return _key(entry)


def _key(e: dict[str, Any]) -> OperatorKey:
    return OperatorKey(id=str(e.get("id", "")), label=str(e.get("label", "")),
                       created_at=float(e.get("created_at", 0)), revoked_at=e.get("revoked_at"))
