"""DKIM signing (RFC 6376 rsa-sha256, RFC 8463 ed25519-sha256) and its keys: made, imported, published.

`DKIMSigner.sign(message)` returns DKIM-Signature header fields to prepend; the stored message
is never rewritten. Canonicalization and header parsing are dkimpy's (the code its verifier
runs, so both sides agree byte for byte), except that the relaxed body rewrite is skipped where
it changes nothing (`relaxed_body`, tested against dkimpy's); the signature itself is
OpenSSL's, through `cryptography` (dkimpy's RSA is pure Python: ~12 ms per signature against
~0.7 ms).

Exceptions:

    Exception
    └── DKIMError
        ├── DKIMKeyError       (also ValueError) unusable or unsupported key, bad domain/selector
        └── DKIMMessageError   (also ValueError) a header section dkimpy cannot parse

Security: holds private keys. `DKIMKey` keeps the PEM out of its repr, so logging a key or a
signer never prints key material. `DKIMSigner` loads keys without the slow RSA consistency
check, trusting that they were checked with `load_private_key` when imported.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

import dkim
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from dkim.canonicalization import Relaxed, correct_empty_body, strip_trailing_lines

KeyKind = Literal["rsa", "ed25519"]
Algorithm = Literal["rsa-sha256", "ed25519-sha256"]
PrivateKey: TypeAlias = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

ALGORITHM_OF: dict[KeyKind, Algorithm] = {"rsa": "rsa-sha256", "ed25519": "ed25519-sha256"}

MIN_RSA_BITS = 1024  # RFC 8301 §3.2: signers MUST use at least 1024 bits
MAX_RSA_BITS = 8192  # beyond this a TXT record is unwieldy and signing needlessly slow

# Header fields signed when present, in this order. RFC 6376 §5.4.1 recommends these; the
# List-* fields are RFC 2369/8058 (one-click unsubscribe needs List-Unsubscribe-Post signed).
DEFAULT_HEADERS: tuple[bytes, ...] = (
    b"from", b"reply-to", b"subject", b"date", b"to", b"cc", b"message-id", b"in-reply-to",
    b"references", b"mime-version", b"content-type", b"content-transfer-encoding", b"list-id",
    b"list-unsubscribe", b"list-unsubscribe-post", b"sender",
)

# RFC 5322 §2.1.1: lines SHOULD be at most 78 characters, CRLF excluded.
LINE_LENGTH = 78

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_BARE_LF = re.compile(rb"(?<!\r)\n")
_HEADER_END = re.compile(rb"\n\r?\n")
# Relaxed body canonicalization's two rewrites, matching only where they change something:
# whitespace before a line end, and whitespace runs that are not already one space.
_TRAILING_WSP = re.compile(rb"[\t ]+\r\n")
_WSP_TO_COMPRESS = re.compile(rb"\t[\t ]*| [\t ]+")


class DKIMError(Exception):
    """Signing is impossible with this key or message; the message says why."""


class DKIMKeyError(DKIMError, ValueError):
    """A key that cannot be used for DKIM: not PEM, encrypted, wrong type, too weak."""


class DKIMMessageError(DKIMError, ValueError):
    """A message whose header section cannot be parsed."""


@dataclass(frozen=True, slots=True)
class DKIMKey:
    """One signing identity: d= domain (A-labels), s= selector, and the PKCS#8 PEM key."""

    domain: str
    selector: str
    algorithm: Algorithm
    private_key_pem: bytes = field(repr=False)


# -- keys ------------------------------------------------------------------------------------


def generate_private_key(kind: KeyKind, bits: int = 2048) -> bytes:
    """A new private key as PKCS#8 PEM (`bits` is for RSA only)."""
    key: PrivateKey
    if kind == "rsa":
        if not MIN_RSA_BITS <= bits <= MAX_RSA_BITS:
            raise DKIMKeyError(f"RSA key size {bits} out of range: use {MIN_RSA_BITS}-{MAX_RSA_BITS} "
                               "bits (2048 recommended, RFC 8301 §3.2)")
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    elif kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise DKIMKeyError(f"unknown key type {kind!r}: expected rsa or ed25519")
    return _pkcs8(key)


def _pkcs8(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_private_key(pem: bytes, *, validate: bool = True) -> tuple[KeyKind, PrivateKey]:
    """Parse a PEM private key (PKCS#8 or PKCS#1) usable for DKIM, or raise DKIMKeyError.

    `validate=False` skips OpenSSL's RSA consistency check (~35 ms for 2048 bits): only for
    keys that were loaded with validation before, such as those in our own database.
    """
    if b"-----BEGIN" not in pem:
        raise DKIMKeyError("not a PEM private key (expected a -----BEGIN PRIVATE KEY----- block)")
    if b"ENCRYPTED" in pem:
        raise DKIMKeyError("the private key is encrypted; decrypt it first, e.g. "
                           "`openssl pkey -in key.pem -out plain.pem`")
    try:
        key = serialization.load_pem_private_key(pem, password=None,
                                                 unsafe_skip_rsa_key_validation=not validate)
    except TypeError:  # a password is required
        raise DKIMKeyError("the private key is encrypted; decrypt it first, e.g. "
                           "`openssl pkey -in key.pem -out plain.pem`") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise DKIMKeyError(f"not a usable PEM private key ({_first_line(exc)})") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise DKIMKeyError(f"RSA key of {key.key_size} bits is too weak: RFC 8301 §3.2 requires "
                               f"at least {MIN_RSA_BITS} bits and verifiers ignore smaller keys; "
                               "use a 2048-bit key")
        if key.key_size > MAX_RSA_BITS:
            raise DKIMKeyError(f"RSA key of {key.key_size} bits is too large: use at most {MAX_RSA_BITS}")
        return "rsa", key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519", key
    raise DKIMKeyError(f"unsupported key type {type(key).__name__.removesuffix('PrivateKey').lstrip('_')}: "
                       "DKIM signs with RSA (rsa-sha256) or Ed25519 (ed25519-sha256, RFC 8463)")


def normalize_private_key(pem: bytes) -> tuple[KeyKind, bytes]:
    """Validate an imported key and return its kind and its PKCS#8 PEM form, for storage."""
    kind, key = load_private_key(pem)
    return kind, _pkcs8(key)


def public_key_record(pem: bytes) -> str:
    """The DNS TXT value publishing the public half: `v=DKIM1; k=rsa; p=...`."""
    kind, key = load_private_key(pem, validate=False)
    public = key.public_key()
    if kind == "rsa":
        # SubjectPublicKeyInfo, as opendkim-genkey and dkimpy publish and every verifier reads
        # (RFC 6376 erratum 3017 on §3.6.1).
        data = public.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    else:
        # RFC 8463 §4.2: the raw 32-byte public key.
        data = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"v=DKIM1; k={kind}; p={base64.b64encode(data).decode()}"


def check_selector(selector: str) -> str:
    """Return `selector` if it is a valid DKIM selector (RFC 6376 §3.1: dot-separated labels)."""
    labels = selector.split(".")
    if not selector or len(selector) > 63 or not all(_LABEL.match(label) for label in labels):
        raise DKIMKeyError(f"invalid selector {selector[:80]!r}: use lower-case letters, digits "
                           "and hyphens, at most 63 characters (e.g. mr1)")
    return selector


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


# -- signing ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _LoadedKey:
    domain: bytes
    selector: bytes
    algorithm: Algorithm
    key: PrivateKey = field(repr=False)


class DKIMSigner:
    """Signs messages with one or more keys (e.g. RSA and Ed25519 for dual signing).

    Keys are parsed once here; `sign` costs one hash of the body and one signature per key.
    """

    def __init__(self, keys: Sequence[DKIMKey], *, headers: Sequence[bytes] | None = None) -> None:
        if not keys:
            raise DKIMKeyError("no DKIM keys to sign with")
        self._keys = tuple(_load(k) for k in keys)
        names = [h.lower() for h in (DEFAULT_HEADERS if headers is None else headers)]
        # RFC 6376 §5.4: From MUST be signed.
        if b"from" not in names:
            names.insert(0, b"from")
        self._headers = tuple(dict.fromkeys(names))

    def __repr__(self) -> str:
        ids = ", ".join(f"{k.selector.decode()}._domainkey.{k.domain.decode()} {k.algorithm}"
                        for k in self._keys)
        return f"DKIMSigner({ids})"

    def sign(self, message: bytes, *, timestamp: int | None = None) -> bytes:
        """DKIM-Signature header fields for `message`, one per key, each folded and CRLF-ended.

        c=relaxed/relaxed; h= names every listed header field as often as it occurs, and From
        once more (over-signing, RFC 6376 §8.15: a From added in transit breaks the
        signature); no l= (RFC 6376 §8.2: it lets anyone append content).
        """
        headers, body = _split(message)
        # Relaxed body canonicalization (RFC 6376 §3.4.4) and hash, shared by all keys: both
        # algorithms hash with SHA-256.
        body_hash = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest())
        include = self._include(headers)
        # dkimpy's select_headers picks instances bottom-up, the way verifiers do (§5.4.2);
        # an over-signed name selects nothing and contributes nothing to the hash.
        signed = Relaxed.canonicalize_headers(dkim.select_headers(headers, list(include)))
        header_data = b"".join(name + b":" + value for name, value in signed)
        t = int(time.time()) if timestamp is None else timestamp
        return b"".join(self._sign_one(k, header_data, include, body_hash, t) for k in self._keys)

    def _include(self, headers: list[list[bytes]]) -> tuple[bytes, ...]:
        counts: dict[bytes, int] = {}
        for name, _ in headers:
            low = name.lower()
            counts[low] = counts.get(low, 0) + 1
        include: list[bytes] = []
        for name in self._headers:
            include.extend([name] * (counts.get(name, 0) + (1 if name == b"from" else 0)))
        return tuple(include)

    @staticmethod
    def _sign_one(k: _LoadedKey, header_data: bytes, include: tuple[bytes, ...], body_hash: bytes,
                  timestamp: int) -> bytes:
        tags = [b"v=1", b"a=" + k.algorithm.encode(), b"c=relaxed/relaxed", b"d=" + k.domain,
                b"s=" + k.selector, b"t=%d" % timestamp, b"h=" + b":".join(include),
                b"bh=" + body_hash]
        unsigned = _fold_tags(tags)  # ends in "b="
        # RFC 6376 §3.7: the signature header itself is hashed last, relaxed, with an empty b=
        # and without its trailing CRLF.
        [(name, value)] = Relaxed.canonicalize_headers([(b"DKIM-Signature", b" " + unsigned)])
        data = header_data + name + b":" + value.rstrip(b"\r\n")
        if isinstance(k.key, rsa.RSAPrivateKey):
            signature = k.key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        else:
            # RFC 8463 §3: Ed25519 (pure) over the SHA-256 hash of the data.
            signature = k.key.sign(hashlib.sha256(data).digest())
        return b"DKIM-Signature: " + unsigned + _fold_base64(base64.b64encode(signature)) + b"\r\n"


def _load(k: DKIMKey) -> _LoadedKey:
    kind, key = load_private_key(k.private_key_pem, validate=False)
    if ALGORITHM_OF[kind] != k.algorithm:
        raise DKIMKeyError(f"key for {k.selector}._domainkey.{k.domain} is {kind}, "
                           f"but the algorithm is {k.algorithm}")
    try:
        domain = k.domain.encode("ascii")
    except UnicodeEncodeError:
        raise DKIMKeyError(f"domain {k.domain!r} must be in A-label (xn--) form") from None
    check_selector(k.selector)
    return _LoadedKey(domain.lower(), k.selector.encode(), k.algorithm, key)


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 §3.4.4 relaxed body canonicalization of a CRLF body: byte for byte what
    dkimpy's `Relaxed.canonicalize_body` returns (a test compares them), at a fraction of the
    cost: dkimpy's whitespace regex rewrites every single space into a space (about 150 µs for
    a 2 KB text body, against 6 µs here). A body without tabs, double spaces or spaces before a
    line end skips both rewrites, and the rewrites match only what they change."""
    if b"\t" in body or b" \r\n" in body:
        body = _TRAILING_WSP.sub(b"\r\n", body)
    if b"\t" in body or b"  " in body:
        body = _WSP_TO_COMPRESS.sub(b" ", body)
    result: bytes = correct_empty_body(strip_trailing_lines(body))
    return result


def _split(message: bytes) -> tuple[list[list[bytes]], bytes]:
    """(header fields as [name, value] with CRLF endings, body with CRLF line endings)."""
    if message.startswith((b"\r\n", b"\n")):
        head, body = b"", message[2 if message.startswith(b"\r\n") else 1:]
    else:
        m = _HEADER_END.search(message)
        head, body = (message, b"") if m is None else (message[:m.start() + 1], message[m.end():])
    # Only the header section goes through dkimpy's line parser; the body, which may be
    # megabytes, is normalized with one regex pass (as dkimpy's parser would: LF → CRLF).
    try:
        headers, _ = dkim.rfc822_parse(head)
    except (dkim.MessageFormatError, IndexError) as exc:  # IndexError: leading continuation line
        raise DKIMMessageError(f"cannot parse the message header: {_first_line(exc)}") from None
    if b"\n" in body:
        body = _BARE_LF.sub(b"\r\n", body)
    return headers, body


def _fold_tags(tags: list[bytes]) -> bytes:
    """`tag=value; ...; b=` folded at LINE_LENGTH with CRLF SP between tags (and between the
    names of a long h=, where RFC 6376 §3.5 allows FWS around the colons)."""
    lines: list[bytes] = []
    line = b"DKIM-Signature:"
    pieces = [t + b";" for t in tags]
    for piece in pieces:
        words = [piece]
        if len(piece) + 1 > LINE_LENGTH:  # only h= gets this long: break it after colons
            parts = piece.split(b":")
            words = [p + b":" for p in parts[:-1]] + [parts[-1]]
        for i, word in enumerate(words):
            sep = b" " if i == 0 else b""
            if len(line) + len(sep) + len(word) > LINE_LENGTH:
                lines.append(line)
                line = b""
                sep = b" "
            line += sep + word
    lines.append(line)
    # b= starts a line of its own, so the signature can follow it unbroken up to the margin.
    lines.append(b" b=")
    text = b"\r\n".join(lines)
    return text[len(b"DKIM-Signature: "):]


def _fold_base64(value: bytes) -> bytes:
    """The b= value folded at LINE_LENGTH (RFC 6376 §3.5: FWS is allowed inside base64)."""
    first = LINE_LENGTH - len(b" b=")
    chunks = [value[:first]]
    rest = value[first:]
    step = LINE_LENGTH - 1
    chunks.extend(rest[i:i + step] for i in range(0, len(rest), step))
    return b"\r\n ".join(c for c in chunks if c)
