"""Password hashing (argon2id) and generated passwords.

Security: holds secrets in memory only; hashes are argon2id with per-hash salts. The `fast`
parameters exist for tests and must never be used for stored production credentials.
"""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher, Type

GENERATED_PASSWORD_BYTES = 18  # 24 url-safe characters, 144 bits


def make_hasher(fast: bool = False) -> PasswordHasher:
    """argon2id with RFC 9106's low-memory profile, or cheap parameters for tests."""
    if fast:
        return PasswordHasher(time_cost=1, memory_cost=64, parallelism=1, hash_len=16,
                              salt_len=16, type=Type.ID)
    return PasswordHasher(type=Type.ID)  # argon2-cffi defaults: t=3, m=64 MiB, p=4


def generate_password() -> str:
    """24 url-safe random characters (A-Z a-z 0-9 - _)."""
    return secrets.token_urlsafe(GENERATED_PASSWORD_BYTES)
