"""DKIM verification of inbound mail (RFC 6376; RFC 8463 ed25519-sha256), one result per signature.

`verify_dkim` first reads the DKIM-Signature fields, then fetches every key concurrently through
our async resolver (bounded by `timeout`), and only then verifies, in a worker thread, handing
dkimpy a dnsfunc that returns the pre-fetched record: dkimpy never does DNS itself and the hashing
of a large body never blocks the event loop. RSA is dkimpy's; Ed25519 keeps dkimpy's
canonicalization and header selection but checks the signature with `cryptography` (dkimpy would
need PyNaCl, which we do not ship).

Results (RFC 8601 §2.7.1 values):

    pass        the signature verified
    fail        body hash mismatch, or the signature does not verify against the key
    policy      verified or verifiable, but unacceptable: rsa-sha1, RSA key under 1024 bits (RFC 8301)
    permerror   malformed signature, From not signed, no key / revoked key / unusable key record
    temperror   the key lookup failed (timeout, SERVFAIL) or did not finish within `timeout`

Security: messages and key records are untrusted. Comments are fixed phrases plus names from the
signature, never exception text. At most `max_signatures` signatures are verified (top first;
the rest are ignored, RFC 6376 §6.1 allows a limit), so a message cannot buy unbounded work.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import dkim
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from dkim.canonicalization import CanonicalizationPolicy, InvalidCanonicalizationPolicyError
from dkim.util import InvalidTagValueList, parse_tag_value

from mailrelay.core.headers import header_section
from mailrelay.resolver.base import DNSTemporaryError, TXTResolver

DKIMStatus = Literal["pass", "fail", "neutral", "policy", "temperror", "permerror", "none"]

MAX_SIGNATURES = 5
MIN_HEADER_B = 8  # RFC 6008 §4: header.b carries at least the first 8 characters of b=

_LOG = logging.getLogger(__name__)
_SIGNATURE_FIELD = re.compile(rb"(?im)^dkim-signature[ \t]*:")
_BARE_LF = re.compile(rb"(?<!\r)\n")
_HEADER_END = re.compile(rb"\n\r?\n")
_WSP = re.compile(rb"\s+")


@dataclass(frozen=True, slots=True)
class DKIMResult:
    """The outcome for one DKIM-Signature field; names are as the signature gave them."""

    result: DKIMStatus
    domain: str = ""  # d=, lower case
    selector: str = ""  # s=
    algorithm: str = ""  # a=
    header_b: str = ""  # a unique prefix of b= (RFC 6008), for header.b
    comment: str = ""  # why, for humans (empty on pass)
    identity: str = ""  # i= (AUID), if given

    @property
    def passed(self) -> bool:
        return self.result == "pass"


@dataclass(slots=True)
class _Signature:
    index: int  # among all DKIM-Signature fields, for dkimpy's verify(idx=)
    fields: dict[bytes, bytes]
    header: tuple[bytes, bytes]  # (name, value) as parsed, for the ed25519 header hash
    base: DKIMResult  # identity of the signature, result to be filled in

    @property
    def key_name(self) -> str:
        return f"{self.base.selector}._domainkey.{self.base.domain}"


async def verify_dkim(message: bytes, *, resolver: TXTResolver, max_signatures: int = MAX_SIGNATURES,
                      timeout: float = 10.0) -> list[DKIMResult]:
    """One result per DKIM-Signature (top first, at most `max_signatures`); [] when unsigned.

    `timeout` bounds all key lookups together; never raises.
    """
    if not _SIGNATURE_FIELD.search(header_section(message)):
        return []
    try:
        signer, items = await asyncio.to_thread(_parse, message, max_signatures)
        pending = [s for s in items if isinstance(s, _Signature)]
        records = await _fetch_keys({s.key_name for s in pending}, resolver, timeout)
        verified = await asyncio.to_thread(_verify_all, signer, pending, records)
    except Exception:  # a dkimpy corner we did not map: a fact about this message, not a crash
        _LOG.exception("DKIM verification failed unexpectedly")
        return [DKIMResult("permerror", comment="signature could not be processed")]
    return [verified.get(id(item), item.base) if isinstance(item, _Signature) else item for item in items]


# -- parsing -----------------------------------------------------------------------------------


def _parse(message: bytes, limit: int) -> tuple[Any, list[_Signature | DKIMResult]]:
    """A dkimpy verifier loaded with `message`, and each signature parsed or already judged."""
    head, body = _split(message)
    try:
        headers, _ = dkim.rfc822_parse(head)
    except (dkim.MessageFormatError, IndexError):  # IndexError: a leading continuation line
        return None, [DKIMResult("permerror", comment="unparsable header section")]
    signer = dkim.DKIM(None, logger=_LOG, minkey=1024)
    signer.headers, signer.body = headers, body
    fields = [(name, value) for name, value in headers if name.lower() == b"dkim-signature"][:limit]
    prefixes = _unique_prefixes([_b_value(value) for _, value in fields])
    items: list[_Signature | DKIMResult] = []
    for index, (header, prefix) in enumerate(zip(fields, prefixes, strict=True)):
        items.append(_prepare(signer, index, (header[0], header[1]), prefix))
    return signer, items


def _prepare(signer: Any, index: int, header: tuple[bytes, bytes], header_b: str) -> _Signature | DKIMResult:
    loose = _loose_tags(header[1])
    base = DKIMResult("none", domain=_text(loose.get(b"d", b"")).lower(), selector=_text(loose.get(b"s", b"")),
                      algorithm=_text(loose.get(b"a", b"")), header_b=header_b,
                      identity=_text(loose.get(b"i", b"")))
    try:
        sig, include, _ = signer.verify_headerprep(index)
    except (dkim.MessageFormatError, dkim.ValidationError):
        return _judged(base, "permerror", "malformed signature")
    if sig[b"a"] == b"rsa-sha1":
        return _judged(base, "policy", "rsa-sha1 not accepted (RFC 8301)")
    # RFC 6376 §6.1.1: a signature that does not cover From MUST be ignored (PERMFAIL).
    if b"from" not in include:
        return _judged(base, "permerror", "From not signed")
    if not base.domain or not base.selector:
        return _judged(base, "permerror", "malformed signature")
    return _Signature(index, sig, header, base)


def _split(message: bytes) -> tuple[bytes, bytes]:
    """(header section, body with CRLF line endings), as dkimpy's parser would make them; only
    the header goes through its line splitter, the body gets one regex pass."""
    if message.startswith((b"\r\n", b"\n")):
        return b"", message[2 if message.startswith(b"\r\n") else 1:]
    m = _HEADER_END.search(message)
    if m is None:
        return message, b""
    body = message[m.end():]
    if b"\n" in body:
        body = _BARE_LF.sub(b"\r\n", body)
    return message[:m.start() + 1], body


def _loose_tags(value: bytes) -> dict[bytes, bytes]:
    """Tags of a signature that may be malformed, for naming it in the result."""
    tags: dict[bytes, bytes] = {}
    for part in _WSP.sub(b"", value).split(b";"):
        name, eq, tag_value = part.partition(b"=")
        if eq and name and name not in tags:
            tags[name] = tag_value
    return tags


def _b_value(value: bytes) -> str:
    return _text(_loose_tags(value).get(b"b", b""))


def _unique_prefixes(values: Sequence[str]) -> list[str]:
    """For each b= value, the shortest prefix of at least MIN_HEADER_B characters that no other
    signature of the message shares (RFC 6008 §4)."""
    out = []
    for i, value in enumerate(values):
        others = [v for j, v in enumerate(values) if j != i]
        n = MIN_HEADER_B
        while n < len(value) and any(o.startswith(value[:n]) for o in others):
            n += 1
        out.append(value[:n])
    return out


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def _judged(base: DKIMResult, result: DKIMStatus, comment: str) -> DKIMResult:
    return DKIMResult(result, base.domain, base.selector, base.algorithm, base.header_b, comment, base.identity)


# -- keys --------------------------------------------------------------------------------------


async def _fetch_keys(names: set[str], resolver: TXTResolver, timeout: float
                      ) -> dict[str, list[str] | None]:
    """TXT records per key name; None where the lookup failed or did not finish in time."""
    if not names:
        return {}
    tasks = {name: asyncio.ensure_future(resolver.txt(name)) for name in names}
    _, pending = await asyncio.wait(tasks.values(), timeout=timeout)
    for task in pending:
        task.cancel()
    out: dict[str, list[str] | None] = {}
    for name, task in tasks.items():
        if task in pending or task.cancelled() or isinstance(task.exception(), DNSTemporaryError):
            out[name] = None
        elif task.exception() is not None:
            _LOG.warning("DKIM key lookup %s failed: %r", name, task.exception())
            out[name] = None
        else:
            out[name] = task.result()
    return out


# -- verifying ---------------------------------------------------------------------------------


def _verify_all(signer: Any, signatures: list[_Signature], records: dict[str, list[str] | None]
                ) -> dict[int, DKIMResult]:
    return {id(s): _verify(signer, s, records.get(s.key_name)) for s in signatures}


def _verify(signer: Any, sig: _Signature, records: list[str] | None) -> DKIMResult:
    base = sig.base
    if records is None:
        return _judged(base, "temperror", f"key lookup failed for {sig.key_name}")
    if not records:
        return _judged(base, "permerror", f"no key at {sig.key_name}")
    if len(records) > 1:  # RFC 6376 §3.6.2.2: several records for one selector are undefined
        return _judged(base, "permerror", f"several key records at {sig.key_name}")
    raw = records[0].encode("utf-8", "replace")
    try:
        key = parse_tag_value(raw)
    except InvalidTagValueList:
        return _judged(base, "permerror", "malformed key record")
    if not _WSP.sub(b"", key.get(b"p", b"")):  # RFC 6376 §3.6.1: an empty p= revokes the key
        return _judged(base, "permerror", "key revoked")
    kind = key.get(b"k", b"rsa")
    if (kind == b"ed25519") != (sig.fields[b"a"] == b"ed25519-sha256"):
        return _judged(base, "permerror", "key type does not match a=")  # RFC 6376 §6.1.2
    try:
        if kind == b"ed25519":
            ok = _verify_ed25519(signer, sig, key[b"p"])
        else:
            dkim.evaluate_pk(sig.key_name.encode(), raw)  # KeyFormatError here, not a silent False
            ok = signer.verify(idx=sig.index, dnsfunc=lambda _name, timeout=5: raw)
    except dkim.KeyFormatError as exc:
        if "too small" in str(exc):
            return _judged(base, "policy", "RSA key under 1024 bits (RFC 8301)")
        return _judged(base, "permerror", "unusable key record")
    except (binascii.Error, ValueError):
        return _judged(base, "permerror", "unusable key record")
    except dkim.ValidationError as exc:
        if "body hash mismatch" in str(exc):
            return _judged(base, "fail", "body hash mismatch")
        return _judged(base, "permerror", "malformed signature")
    except dkim.DKIMException:
        return _judged(base, "permerror", "malformed signature")
    if ok:
        return _judged(base, "pass", "")
    return _judged(base, "fail", "signature did not verify")


def _verify_ed25519(signer: Any, sig: _Signature, public: bytes) -> bool:
    """RFC 8463: dkimpy's canonical forms, `cryptography`'s Ed25519 over their SHA-256 hash."""
    key = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(_WSP.sub(b"", public), validate=True))
    fields = sig.fields
    try:
        policy = CanonicalizationPolicy.from_c_value(fields.get(b"c", b"simple/simple"))
    except InvalidCanonicalizationPolicyError:
        raise dkim.ValidationError("invalid c=") from None
    body = policy.canonicalize_body(signer.body)
    if b"l" in fields:
        body = body[:int(fields[b"l"])]
    if hashlib.sha256(body).digest() != base64.b64decode(_WSP.sub(b"", fields[b"bh"])):
        raise dkim.ValidationError("body hash mismatch")
    include = [h.lower() for h in re.split(rb"\s*:\s*", fields[b"h"])]
    include.append(b"from")  # as dkimpy does: a second From added in transit breaks the signature
    digest = hashlib.sha256()
    dkim.hash_headers(digest, policy, policy.canonicalize_headers(signer.headers), include, sig.header, fields)
    try:
        key.verify(base64.b64decode(_WSP.sub(b"", fields[b"b"])), digest.digest())
    except InvalidSignature:
        return False
    return True
