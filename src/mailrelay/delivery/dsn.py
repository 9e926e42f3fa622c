"""Delivery status notifications (RFC 3464): the bounce and delay messages sent to senders.

`build_dsn` returns a complete message, `multipart/report; report-type=delivery-status`
(RFC 6522) with three parts: a human-readable explanation, the machine-readable
`message/delivery-status`, and the original message's headers (`text/rfc822-headers`; the
body is never returned, so a bounce cannot be used to reflect content at a third party).
The message is CRLF-terminated, has no bare CR or LF, and no line longer than 998 octets
(RFC 5322 §2.1.1), whatever the inputs hold.

A DSN must be sent with the null reverse-path `MAIL FROM:<>` (RFC 5321 §4.5.5, RFC 3464 §2),
and none is ever sent for a message from the null sender (`should_send_dsn`): that is what
stops bounce loops, so no other sender needs to be refused.

Non-ASCII: the delivery-status part stays 7-bit. A non-ASCII recipient is written as
`Final-Recipient: utf-8; ...` in RFC 6533's `utf-8-addr-xtext` form (`\\x{HHHH}` escapes),
non-ASCII in diagnostics and host names gets the same escapes. The explanation part is UTF-8
when it needs to be, and an SMTPUTF8 sender's address goes into `To:` as is (RFC 6532), so
such a DSN needs an SMTPUTF8 relay, as the sender's address itself does.

Security: every field comes from the network (addresses, remote replies, original headers).
Control characters in addresses or host names are refused (ValueError: a caller bug, they were
validated on the way in); remote text is flattened to one line and folded; original header
lines are re-terminated, cut at 998 octets, and capped in total.
"""

from __future__ import annotations

import re
import secrets
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mailrelay.core.dates import rfc5322_date
from mailrelay.core.headers import header_section as header_block  # noqa: F401 - part of this API
from mailrelay.core.text import has_control_chars, one_line
from mailrelay.delivery.classify import is_remote_reply

Action = Literal["failed", "delayed"]

SUBJECT_FAILED = "Undelivered Mail Returned to Sender"
SUBJECT_DELAYED = "Delayed Mail (still being retried)"
DIAGNOSTIC_TYPE_OURS = "X-mailrelay"  # RFC 3464 §2.3.6: our own text, not an SMTP reply

MAX_LINE = 998  # octets, without CRLF (RFC 5322 §2.1.1)
FOLD_AT = 78  # RFC 5322 §2.1.1: lines SHOULD be at most 78 characters
MAX_ORIGINAL_HEADERS = 64 * 1024  # octets of the original header section we return

_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}\Z")
_QUEUE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")
_HOST = re.compile(r"[^\s\x00-\x1f\x7f]{1,255}\Z")
_LINE_END = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class FailedRecipient:
    """One recipient to report: `failed` (given up) or `delayed` (still being retried)."""

    address: str
    status: str  # RFC 3463 "x.y.z"; failed usually 5.x.x, but 4.4.7 for expired mail
    action: Action
    diagnostic: str | None  # the remote reply "550 5.1.1 ..." or our own text
    remote_mta: str | None  # host that gave `diagnostic`, if a remote one did
    last_attempt: float | None


def should_send_dsn(original_sender: str) -> bool:
    """False for the null sender (`""` or `"<>"`): never a DSN for a DSN (RFC 3464 §2).

    MAILER-DAEMON@... and similar senders with a real reverse-path do get DSNs: ours go out
    from the null sender, so a failure of those cannot loop, and refusing them would hide
    failures from real mailboxes with such names.
    """
    return original_sender.strip() not in ("", "<>")


def notify_wants(notify: str | None, action: Action) -> bool:
    """Whether a recipient's RCPT NOTIFY parameter (RFC 3461 §4.1) asks for this DSN.

    Without NOTIFY, failures and delays are reported, as RFC 3461 §4.1 suggests; whether to
    send delay warnings at all is the caller's policy.
    """
    if notify is None:
        return True
    words = {w.strip().upper() for w in notify.split(",")}
    if "NEVER" in words:
        return False
    return ("FAILURE" if action == "failed" else "DELAY") in words


def build_dsn(*, reporting_mta: str, original_sender: str, original_queue_id: str, arrival: float,
              recipients: Sequence[FailedRecipient], original_headers: bytes, now: float,
              message_id_domain: str, token: str | None = None) -> bytes:
    """A complete RFC 3464 DSN about `recipients` of one message, as bytes ready to spool.

    `token` is the random part of the MIME boundary and Message-ID; tests fix it to get the
    same bytes every time.
    """
    if not recipients:
        raise ValueError("a DSN needs at least one recipient")
    for host in (reporting_mta, message_id_domain):
        _check_host(host)
    _check_address(original_sender)
    for r in recipients:
        _check_address(r.address)
        if not _STATUS.match(r.status):
            raise ValueError(f"not an RFC 3463 status code: {r.status[:20]!r}")
        if r.remote_mta is not None:
            _check_host(r.remote_mta)
    if not _QUEUE_ID.match(original_queue_id):
        raise ValueError(f"not a queue id: {original_queue_id[:80]!r}")
    token = token or secrets.token_hex(12)
    if not _QUEUE_ID.match(token):
        raise ValueError(f"token must be letters, digits, '.', '_' or '-': {token[:80]!r}")
    boundary = f"=_dsn_{token}"[:70]  # RFC 2046 §5.1.1: at most 70 characters
    any_failed = any(r.action == "failed" for r in recipients)

    explanation = _explanation(reporting_mta, recipients).encode()
    report = _report(reporting_mta, original_queue_id, arrival, recipients)
    headers = _original_headers(original_headers)
    if any(boundary.encode() in part for part in (explanation, report, headers)):
        raise ValueError("MIME boundary occurs in the content; use another token")

    eight_bit = not explanation.isascii() or not headers.isascii()
    cte = "8bit" if eight_bit else "7bit"
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{_strip_brackets(original_sender)}>",
        f"Subject: {SUBJECT_FAILED if any_failed else SUBJECT_DELAYED}",
        f"Date: {rfc5322_date(now)}",
        f"Message-ID: <dsn.{token}.{original_queue_id}@{message_id_domain}>",
        "Auto-Submitted: auto-replied",  # RFC 3834 §5: no automatic replies to this
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f' boundary="{boundary}"',
        f"Content-Transfer-Encoding: {cte}",
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Description: Notification",
        f"Content-Type: text/plain; charset={'us-ascii' if explanation.isascii() else 'utf-8'}",
        f"Content-Transfer-Encoding: {'7bit' if explanation.isascii() else '8bit'}",
        "",
    ]
    out = "\r\n".join(lines).encode() + b"\r\n" + explanation
    out += "\r\n".join([
        f"--{boundary}",
        "Content-Description: Delivery report",
        "Content-Type: message/delivery-status",
        "",
        "",
    ]).encode() + report
    out += "\r\n".join([
        f"--{boundary}",
        "Content-Description: Undelivered Message Headers",
        "Content-Type: text/rfc822-headers",
        f"Content-Transfer-Encoding: {'7bit' if headers.isascii() else '8bit'}",
        "",
        "",
    ]).encode() + headers
    out += f"\r\n--{boundary}--\r\n".encode()
    return out


# -- parts -------------------------------------------------------------------------------------

def _explanation(reporting_mta: str, recipients: Sequence[FailedRecipient]) -> str:
    """Part 1: what happened, for people; CRLF lines, wrapped."""
    failed = [r for r in recipients if r.action == "failed"]
    delayed = [r for r in recipients if r.action == "delayed"]
    paragraphs = [f"This is the mail delivery system at {one_line(reporting_mta)}."]
    if failed:
        paragraphs.append(
            "Your message could not be delivered to the recipients below. The mail system "
            "has given up on them and will not try again.")
        paragraphs.extend(_reason(r) for r in failed)
    if delayed:
        paragraphs.append(
            "Your message has not yet been delivered to the recipients below. The mail system "
            "will keep trying; you do not need to send it again, and will be told if it "
            "finally cannot be delivered.")
        paragraphs.extend(_reason(r) for r in delayed)
    paragraphs.append("The headers of your message are attached.")
    # Recipient lines start with "<" and continue indented; break_long_words keeps every
    # line short whatever a remote server put in its reply.
    wrapped = [textwrap.fill(p, width=FOLD_AT - 2, subsequent_indent="    " if p[0] == "<" else "",
                             break_long_words=True, break_on_hyphens=False) for p in paragraphs]
    return "\r\n\r\n".join(w.replace("\n", "\r\n") for w in wrapped) + "\r\n"


def _reason(r: FailedRecipient) -> str:
    diagnostic = one_line(r.diagnostic or "")
    if diagnostic and r.remote_mta and is_remote_reply(diagnostic):
        why = f"host {one_line(r.remote_mta)} said: {diagnostic}"
    elif diagnostic:
        why = diagnostic
    else:
        why = f"status {r.status}"
    return f"<{_strip_brackets(r.address)}>: {why}"


def _report(reporting_mta: str, queue_id: str, arrival: float,
            recipients: Sequence[FailedRecipient]) -> bytes:
    """Part 2: RFC 3464 §2.2 per-message fields, then §2.3 per-recipient blocks; 7-bit."""
    blocks = [[
        _field("Reporting-MTA", f"dns; {_ascii(reporting_mta)}"),
        _field("X-Mailrelay-Queue-ID", queue_id),
        _field("Arrival-Date", rfc5322_date(arrival)),
    ]]
    for r in recipients:
        block = [
            _field("Final-Recipient", _address_type(_strip_brackets(r.address))),
            _field("Action", r.action),
            _field("Status", r.status),
        ]
        if r.remote_mta:
            block.append(_field("Remote-MTA", f"dns; {_ascii(r.remote_mta)}"))
        if r.diagnostic and one_line(r.diagnostic):
            text = one_line(r.diagnostic)
            kind = "smtp" if is_remote_reply(text) else DIAGNOSTIC_TYPE_OURS
            block.append(_field("Diagnostic-Code", f"{kind}; {_ascii(text)}"))
        if r.last_attempt is not None:
            block.append(_field("Last-Attempt-Date", rfc5322_date(r.last_attempt)))
        blocks.append(block)
    return "\r\n".join("".join(block) for block in blocks).encode("ascii")


def _original_headers(raw: bytes) -> bytes:
    """Part 3: the original header lines, CRLF-terminated, each at most 998 octets."""
    lines = _LINE_END.split(raw)
    while lines and lines[-1] == b"":
        lines.pop()
    out = bytearray()
    for line in lines:
        if line == b"":
            break  # the header section ends at the first empty line
        line = line.replace(b"\0", b"")[:MAX_LINE]  # RFC 5322 §2.2: no NUL in headers
        if len(out) + len(line) + 2 > MAX_ORIGINAL_HEADERS:
            break  # a whole line or nothing: a cut header would be misread
        out += line + b"\r\n"
    return bytes(out)


# -- fields ------------------------------------------------------------------------------------

def _field(name: str, value: str) -> str:
    """`Name: value` CRLF, folded at spaces near 78 characters, never over 998 (RFC 5322 §2.2.3)."""
    words: list[str] = []
    for word in value.split(" "):
        # A space-less run longer than a line is cut; unfolding then adds a space there.
        words.extend(word[i:i + 900] for i in range(0, len(word), 900))
    lines = [f"{name}:"]
    has_word = False
    for word in words:
        if has_word and len(lines[-1]) + 1 + len(word) > FOLD_AT:
            lines.append("")  # the continuation line starts with the space added below
        lines[-1] += " " + word
        has_word = True
    return "\r\n".join(lines) + "\r\n"


def _address_type(address: str) -> str:
    """`rfc822; addr`, or RFC 6533 §3 `utf-8; ` with the utf-8-addr-xtext form of addr."""
    if address.isascii():
        return f"rfc822; {address}"
    # RFC 6533 §3: QCHAR is printable ASCII except SP, "\", "+" and "="; anything else is
    # written \x{HEXPOINT}, uppercase hex without leading zeros, at least two digits.
    return "utf-8; " + "".join(
        c if "!" <= c <= "~" and c not in "\\+=" else f"\\x{{{ord(c):02X}}}" for c in address)


def _ascii(text: str) -> str:
    """Non-ASCII as RFC 6533 \\x{HHHH} escapes, for the 7-bit delivery-status part."""
    return "".join(c if c.isascii() else f"\\x{{{ord(c):02X}}}" for c in text)


def _strip_brackets(address: str) -> str:
    address = address.strip()
    return address[1:-1] if address.startswith("<") and address.endswith(">") else address


def _check_address(address: str) -> None:
    if has_control_chars(address) or len(address.encode("utf-8", "surrogatepass")) > 998 - 40:
        raise ValueError(f"not usable as an address in a DSN: {address[:80]!r}")


def _check_host(host: str) -> None:
    if not _HOST.match(host):
        raise ValueError(f"not a host name: {host[:80]!r}")
