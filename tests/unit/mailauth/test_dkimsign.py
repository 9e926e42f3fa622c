"""DKIM signing: what we sign verifies with dkimpy's verifier (RSA) or its pipeline with the
final Ed25519 check done by `cryptography` (dkimpy needs PyNaCl for that, not installed)."""

from __future__ import annotations

import base64
import random
import time
from typing import Any

import dkim
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from dkim.canonicalization import Relaxed

from mailrelay.mailauth.dkimsign import (
    DKIMKey,
    DKIMKeyError,
    DKIMMessageError,
    DKIMSigner,
    generate_private_key,
    load_private_key,
    public_key_record,
    relaxed_body,
)

# RFC 8463 Appendix A: the Ed25519 key, its record, and the example message with both of its
# signatures (the RSA one by a 1024-bit key, whose record is below).
RFC8463_ED_PEM = (b"-----BEGIN PRIVATE KEY-----\n"
                  b"MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n"
                  b"-----END PRIVATE KEY-----\n")
RFC8463_ED_RECORD = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
RFC8463_RSA_RECORD = (
    "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWR"
    "iGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutAC"
    "DfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3"
    "Ip3G+2kryOTIKT+l/K4w3QIDAQAB")
RFC8463_MESSAGE = (
    b"From: Joe SixPack <joe@football.example.com>\r\n"
    b"To: Suzie Q <suzie@shopping.example.net>\r\n"
    b"Subject: Is dinner ready?\r\n"
    b"Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    b"Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"
    b"\r\n"
    b"Hi.\r\n\r\nWe lost the game.  Are you hungry yet?\r\n\r\nJoe.\r\n\r\n")
RFC8463_SIGNATURES = (
    b"DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
    b" d=football.example.com; i=@football.example.com;\r\n"
    b" q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n"
    b" subject : date : message-id : from : subject : date;\r\n"
    b" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    b" b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus\r\n"
    b" Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==\r\n"
    b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\r\n"
    b" d=football.example.com; i=@football.example.com;\r\n"
    b" q=dns/txt; s=test; t=1528637909; h=from : to : subject :\r\n"
    b" date : message-id : from : subject : date;\r\n"
    b" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    b" b=F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3\r\n"
    b" DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz\r\n"
    b" dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=\r\n")

MESSAGE = (
    b"Received: from client.test by mx.test\r\n"
    b"from: Alice <alice@example.com>\r\n"
    b"TO: bob@example.net,\r\n  carol@example.net\r\n"
    b"Subject:   A   subject   with a very long line that goes on and on and on and on and on "
    b"and on and on and on and on and on\r\n"
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"Message-ID: <m1@example.com>\r\n"
    b"X-Mailer: test\r\n"
    b"\r\n"
    b"Hello  there \r\n\r\n" + b"line of body text\r\n" * 100 + b"\r\n\r\n")

RSA_PEM = generate_private_key("rsa")
ED_PEM = generate_private_key("ed25519")
RSA_KEY = DKIMKey("example.com", "mr1", "rsa-sha256", RSA_PEM)
ED_KEY = DKIMKey("example.com", "mr1-ed", "ed25519-sha256", ED_PEM)
RECORDS = {b"mr1._domainkey.example.com.": public_key_record(RSA_PEM).encode(),
           b"mr1-ed._domainkey.example.com.": public_key_record(ED_PEM).encode(),
           b"brisbane._domainkey.football.example.com.": RFC8463_ED_RECORD.encode(),
           b"test._domainkey.football.example.com.": RFC8463_RSA_RECORD.encode()}


def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
    return RECORDS[name]


def verify_rsa(message: bytes, idx: int = 0) -> bool:
    d = dkim.DKIM(message, minkey=1024)
    try:
        return bool(d.verify(idx=idx, dnsfunc=dnsfunc))
    except dkim.ValidationError:  # body hash mismatch
        return False


class _Ed25519Check:
    """Stands in for PyNaCl's VerifyKey at the last step of dkimpy's own verification."""

    def __init__(self, record: bytes) -> None:
        raw = base64.b64decode(dkim.util.parse_tag_value(record)[b"p"])
        self.key = ed25519.Ed25519PublicKey.from_public_bytes(raw)
        self.valid: bool | None = None

    def verify(self, digest: bytes, signature: bytes) -> None:
        try:
            self.key.verify(signature, digest)
            self.valid = True
        except InvalidSignature:
            self.valid = False


def verify_ed25519(message: bytes, idx: int = 0) -> bool:
    """dkimpy's verification (field checks, body hash, header selection and hashing); only the
    Ed25519 check is `cryptography`'s."""
    d = dkim.DKIM(message)
    sig, include_headers, sigheaders = d.verify_headerprep(idx)
    assert sig[b"a"] == b"ed25519-sha256"
    check = _Ed25519Check(dnsfunc(sig[b"s"] + b"._domainkey." + sig[b"d"] + b"."))
    d.pk, d.keysize, d.ktag, d.seqtlsrpt = check, 256, b"ed25519", False
    try:
        d.verify_sig_process(sig, include_headers, sigheaders[idx], dnsfunc)
    except dkim.ValidationError:  # body hash mismatch
        return False
    return bool(check.valid)


def verify_any(message: bytes, idx: int = 0) -> bool:
    sigs = [v for k, v in dkim.DKIM(message).headers if k.lower() == b"dkim-signature"]
    algorithm = dkim.util.parse_tag_value(sigs[idx])[b"a"]
    return verify_ed25519(message, idx) if algorithm == b"ed25519-sha256" else verify_rsa(message, idx)


def test_the_test_verifiers_accept_the_rfc_8463_example() -> None:
    signed = RFC8463_SIGNATURES + RFC8463_MESSAGE
    assert verify_ed25519(signed, 0)
    assert verify_rsa(signed, 1)
    assert not verify_ed25519(signed.replace(b"dinner", b"lunch"), 0)
    assert not verify_rsa(signed.replace(b"dinner", b"lunch"), 1)


@pytest.mark.parametrize("keys", [[RSA_KEY], [ED_KEY], [RSA_KEY, ED_KEY]], ids=["rsa", "ed25519", "both"])
def test_signatures_verify(keys: list[DKIMKey]) -> None:
    header = DKIMSigner(keys).sign(MESSAGE)
    assert header.count(b"DKIM-Signature: ") == len(keys)
    assert header.endswith(b"\r\n") and b"\n" not in header.replace(b"\r\n", b"")
    assert all(len(line) <= 78 for line in header.split(b"\r\n"))
    signed = header + MESSAGE
    for idx in range(len(keys)):
        assert verify_any(signed, idx)


@pytest.mark.parametrize("key", [RSA_KEY, ED_KEY], ids=["rsa", "ed25519"])
@pytest.mark.parametrize(("old", "new"), [
    (b"Hello  there", b"Hello there!"),  # body
    (b"line of body text\r\n\r\n", b"line of body text\r\nextra\r\n\r\n"),  # appended body
    (b"A   subject", b"A subject!"),  # signed header
    (b"carol@example.net", b"mallory@example.net"),  # signed, folded header
    (b"Date: Mon, 1 Jan", b"Date: Tue, 2 Jan"),
    (b"from: Alice", b"From: Mallory <m@evil.example>\r\nfrom: Alice"),  # added From (over-signed)
    (b"Message-ID:", b"Subject: injected\r\nMessage-ID:"),  # a second, lower Subject
])
def test_tampering_breaks_the_signature(key: DKIMKey, old: bytes, new: bytes) -> None:
    header = DKIMSigner([key]).sign(MESSAGE)
    assert verify_any(header + MESSAGE)
    assert old in MESSAGE
    assert not verify_any(header + MESSAGE.replace(old, new, 1))


@pytest.mark.parametrize("key", [RSA_KEY, ED_KEY], ids=["rsa", "ed25519"])
def test_relaxed_changes_and_unsigned_headers_keep_it_valid(key: DKIMKey) -> None:
    header = DKIMSigner([key]).sign(MESSAGE)
    for changed in [
        MESSAGE.replace(b"Subject:   A   subject", b"SUBJECT: A subject"),  # relaxed header
        MESSAGE.replace(b"Hello  there \r\n", b"Hello there\r\n"),  # relaxed body
        MESSAGE.replace(b"X-Mailer: test\r\n", b""),  # unsigned header
        MESSAGE.replace(b"Received:", b"X-Added: yes\r\nReceived:"),  # added unsigned header
        MESSAGE.replace(b"\r\n", b"\n"),  # line endings
    ]:
        assert verify_any(header + changed)


def test_h_tag_lists_present_headers_and_over_signs_from() -> None:
    header = DKIMSigner([RSA_KEY]).sign(MESSAGE)
    tags = dkim.util.parse_tag_value(header.split(b"DKIM-Signature: ", 1)[1])
    names = [n.strip() for n in b"".join(tags[b"h"].split()).split(b":")]
    assert names == [b"from", b"from", b"subject", b"date", b"to", b"message-id"]
    assert tags[b"c"] == b"relaxed/relaxed" and b"l" not in tags
    assert (tags[b"d"], tags[b"s"]) == (b"example.com", b"mr1")
    custom = DKIMSigner([RSA_KEY], headers=[b"Subject", b"X-Mailer"]).sign(MESSAGE)
    tags = dkim.util.parse_tag_value(custom.split(b"DKIM-Signature: ", 1)[1])
    assert b"".join(tags[b"h"].split()) == b"from:from:subject:x-mailer"
    assert verify_rsa(custom + MESSAGE)


def test_every_instance_of_a_repeated_header_is_signed() -> None:
    message = b"From: a@example.com\r\nTo: x@example.net\r\nTo: y@example.net\r\n\r\nbody\r\n"
    header = DKIMSigner([RSA_KEY]).sign(message)
    assert b"h=from:from:to:to;" in header
    assert verify_rsa(header + message)
    assert not verify_rsa(header + message.replace(b"y@", b"z@"))


def test_odd_messages() -> None:
    signer = DKIMSigner([RSA_KEY, ED_KEY])
    long_h = [b"list-id", b"list-unsubscribe", b"list-unsubscribe-post", b"content-type",
              b"content-transfer-encoding", b"mime-version", b"reply-to", b"in-reply-to",
              b"references", b"cc", b"sender"]
    many = b"".join(name.title() + b": v\r\n" for name in long_h)
    for message in [
        b"From: a@example.com\r\n\r\n",  # empty body
        b"From: a@example.com\r\n",  # no body at all
        b"From: a@example.com\n\nbare LF body\n",
        b"Subject: no From\r\n\r\nbody\r\n",
        b"From: a@example.com\r\n" + many + b"\r\nbody\r\n",  # h= folded over lines
        b"From: a@example.com\r\nX-Long: " + b"x" * 2000 + b"\r\n\r\nbody\r\n",
    ]:
        header = signer.sign(message)
        assert all(len(line) <= 78 for line in header.split(b"\r\n"))
        assert verify_rsa(header + message, 0), message
        assert verify_ed25519(header + message, 1), message


def test_unparsable_header_is_refused() -> None:
    with pytest.raises(DKIMMessageError, match="cannot parse"):
        DKIMSigner([RSA_KEY]).sign(b"From: a@example.com\r\nnot a header line\r\n\r\nbody\r\n")
    with pytest.raises(DKIMMessageError):
        DKIMSigner([RSA_KEY]).sign(b" leading continuation\r\n\r\nbody\r\n")


def test_golden_rfc_8463_body_hash_and_signature() -> None:
    """Fixed key and time: the bh= of RFC 8463's body, and Ed25519 being deterministic, the
    whole field; a change here changes what receivers see."""
    key = DKIMKey("football.example.com", "brisbane", "ed25519-sha256", RFC8463_ED_PEM)
    header = DKIMSigner([key]).sign(RFC8463_MESSAGE, timestamp=1528637909)
    assert b"bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;" in header
    assert header == GOLDEN_ED25519
    assert verify_ed25519(header + RFC8463_MESSAGE)
    assert public_key_record(RFC8463_ED_PEM) == RFC8463_ED_RECORD


GOLDEN_ED25519 = (
    b"DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
    b" d=football.example.com; s=brisbane; t=1528637909;\r\n"
    b" h=from:from:subject:date:to:message-id;\r\n"
    b" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    b" b=tiwZbCb21wONzUcNgmcUYdQXJZKM3dny6QP59LTFV5L3xImYIoMYVl+ce289oUwy49CWtSZqjSn\r\n"
    b" XOQ+094oDAA==\r\n")


def test_keys() -> None:
    assert public_key_record(RSA_PEM).startswith("v=DKIM1; k=rsa; p=MIIBIjAN")
    assert load_private_key(RSA_PEM)[0] == "rsa" and load_private_key(ED_PEM)[0] == "ed25519"
    assert "PRIVATE" not in repr(RSA_KEY) and "PRIVATE" not in repr(DKIMSigner([RSA_KEY]))
    with pytest.raises(DKIMKeyError, match=r"too weak.*1024"):
        load_private_key(_rsa_512())
    with pytest.raises(DKIMKeyError, match="not a PEM"):
        load_private_key(b"hello")
    with pytest.raises(DKIMKeyError, match="not a usable"):
        load_private_key(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(DKIMKeyError, match="unsupported key type EC:"):
        load_private_key(_ec())
    with pytest.raises(DKIMKeyError, match="encrypted"):
        load_private_key(_encrypted())
    with pytest.raises(DKIMKeyError, match="is rsa, but the algorithm is ed25519"):
        DKIMSigner([DKIMKey("example.com", "s", "ed25519-sha256", RSA_PEM)])
    with pytest.raises(DKIMKeyError, match="invalid selector"):
        DKIMSigner([DKIMKey("example.com", "bad selector", "rsa-sha256", RSA_PEM)])


def _rsa_512() -> bytes:
    # cryptography refuses to generate one; made with `openssl genpkey ... rsa_keygen_bits:512`.
    return (b"-----BEGIN PRIVATE KEY-----\n"
            b"MIIBVAIBADANBgkqhkiG9w0BAQEFAASCAT4wggE6AgEAAkEAq6x28umVRHTsd4Zz\n"
            b"4r4sPwVT9+MJOp+WJR+UepnYxJSattzQ4wxK3ggc6VCnnf/UDRUMwyYxL1Eb9uz+\n"
            b"B+Qy9QIDAQABAkAoUGHGfW/eGY8GKn7AOmRtkDS9u4UJTTyXDylw+PvcfZ6YUmfZ\n"
            b"fzOk8V9C674WJKoEnLTfdzY3GdNUvFIpB0NBAiEA3K+zY5weB4XO/GM/D2G5dgvG\n"
            b"i4Nh9YZzzULKsUIKPAkCIQDHJPylEdmmpfRTHrhztWz9NMtFEFMPNTkWcAGVCuSS\n"
            b"jQIgSReAaLtqTr+IwJr2ZdfOH0TjK44GQdWYQSGgFHl0/lECIHauS0bQ0YZoZqhW\n"
            b"qZSDrfVkzjNVnDp2/JOrorXBLSFNAiEAwgKeA7+Safa4cjySXLxXdj/JRcglAmJ4\n"
            b"mUSidbXaFdE=\n"
            b"-----END PRIVATE KEY-----\n")


def _ec() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _encrypted() -> bytes:
    from cryptography.hazmat.primitives import serialization

    key = load_private_key(ED_PEM)[1]
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.BestAvailableEncryption(b"secret"))


@pytest.mark.parametrize("body", [
    b"", b"\r\n", b"\r\n\r\n", b"a", b"a\r\n", b"a \r\n", b"a\t\r\n\r\n\r\n", b" \t a  b\t\tc \r\n",
    b"a  b\r\n \r\n\t\r\n", b"trailing space at the end ", b"x\r\n\r\n ", b"one space only\r\n",
])
def test_relaxed_body_is_dkimpys(body: bytes) -> None:
    assert relaxed_body(body) == Relaxed.canonicalize_body(body)


def test_relaxed_body_is_dkimpys_on_random_bodies() -> None:
    rng = random.Random(6376)
    alphabet = [b"a", b"b", b" ", b" ", b"\t", b"\r\n", b"\r\n", b"."]
    for _ in range(3000):
        body = b"".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
        assert relaxed_body(body) == Relaxed.canonicalize_body(body), body


def test_signing_cost(capsys: Any) -> None:
    """Prints µs per signature of a 2 KB message; the bound is a sanity check, not a benchmark
    (dkimpy's own pure-Python RSA takes ~12 ms)."""
    message = MESSAGE[:2048]
    results = {}
    for name, key in [("rsa-2048", RSA_KEY), ("ed25519", ED_KEY)]:
        signer = DKIMSigner([key])
        signer.sign(message)
        n = 200
        start = time.process_time()
        for _ in range(n):
            signer.sign(message)
        results[name] = (time.process_time() - start) / n * 1e6
    with capsys.disabled():
        print("\nDKIM sign, 2 KB message: " + ", ".join(f"{k} {v:.0f} µs" for k, v in results.items()))
    assert all(v < 5000 for v in results.values())
