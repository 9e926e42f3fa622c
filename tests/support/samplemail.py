"""Realistic mail of a given size for storage measurements: varied text, HTML, an attachment.

A message body (headers and content, as a client sends it in DATA) of exactly `size` bytes:
multipart/mixed holding a multipart/alternative (text/plain and the same text as styled
HTML with tracking links, as transactional and newsletter mail is) and, for `attachment` > 0,
a base64 part of random bytes (an image or a PDF: incompressible beyond base64's 6 bits per
character) taking that share of the message where it leaves 1,400 bytes to the text and HTML
(so none at 2 KB). The words come from a vocabulary of a few
thousand made-up words drawn with Zipf's law, so that text compresses about as English prose
does (zlib level 6 on 1 KB of it: 0.54 of its size; on 1 KB of English prose 0.50-0.56);
every message differs (its seed). A message of one repeated line would compress far better
than any real mail.
"""

from __future__ import annotations

import base64
import random
from itertools import accumulate

_SYLLABLE_TEXT = ("ba be bi bo bu ca ce co da de di do el en er es fa fe fi fo ga ge go ha he hi in ka la le li"
                  " lo lu ma me mi mo mu na ne ni no nu on or pa pe pi po ra re ri ro ru sa se si so ta te ti"
                  " to tu un va ve vi vo wa we wi za ze al an ar as at ed ing ly st th")
_SYLLABLES = tuple(_SYLLABLE_TEXT.split())


_MIN_ALTERNATIVE = 1_400


def _vocabulary(n: int = 4000) -> tuple[list[str], list[float]]:
    rng = random.Random(1)
    words = list(dict.fromkeys(
        "".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((1, 2, 2, 3, 3, 4)))) for _ in range(n * 2)))[:n]
    return words, list(accumulate(1 / (rank + 1) for rank in range(len(words))))


_WORDS, _CUM = _vocabulary()


def _sentences(rng: random.Random, size: int) -> str:
    out: list[str] = []
    length = 0
    while length < size:
        words = rng.choices(_WORDS, cum_weights=_CUM, k=rng.randint(6, 18))
        if rng.random() < 0.15:  # numbers, amounts, codes: order 48213, $1,204.50
            amount = f"${rng.randint(1, 9_999):,}.{rng.randint(0, 99):02d}"
            words.insert(rng.randrange(len(words)), rng.choice((str(rng.randint(1, 99_999)), amount)))
        sentence = " ".join(words).capitalize() + rng.choice((".", ".", ".", "?", "!"))
        out.append(sentence)
        length += len(sentence) + 1
    return " ".join(out)


def _wrap(text: str, width: int = 76) -> str:
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "\r\n".join(lines)


def _token(rng: random.Random, n: int) -> str:
    return base64.urlsafe_b64encode(rng.randbytes(n)).decode().rstrip("=")


def _html(rng: random.Random, paragraphs: list[str]) -> str:
    style = "font-family:Helvetica,Arial,sans-serif;font-size:15px;line-height:22px;color:#333333;margin:0 0 16px 0"
    rows = []
    for text in paragraphs:
        link = f"https://click.example.com/ls/click?upn={_token(rng, 30)}"
        rows.append(f'<tr>\r\n<td style="padding:0 24px;"><p style="{style}">{text} '
                    f'<a href="{link}" style="color:#1a73e8;text-decoration:underline;">{rng.choice(_WORDS)}</a>'
                    f"</p></td>\r\n</tr>")
    return ("<!DOCTYPE html>\r\n<html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-"
            "width\"></head>\r\n<body style=\"margin:0;padding:0;background:#f4f4f4;\">\r\n<table role=\"presentation\""
            " width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" style=\"max-width:600px;margin:0 auto;background:"
            "#ffffff;\">\r\n" + "\r\n".join(rows) + "\r\n</table>\r\n"
            f'<img src="https://open.example.com/o/{_token(rng, 24)}.gif" width="1" height="1" alt="">\r\n'
            "</body></html>")


def _qp(html: str) -> str:
    """Quoted-printable as mail clients write it: soft line breaks at 76, `=` as =3D."""
    out = []
    for line in html.replace("=", "=3D").split("\r\n"):
        while len(line) > 75:
            cut = 75 if line[74] != "=" and line[73] != "=" else 72
            out.append(line[:cut] + "=")
            line = line[cut:]
        out.append(line)
    return "\r\n".join(out)


def sample_message(size: int, seed: int, *, attachment: float = 0.25) -> bytes:
    """A message of exactly `size` bytes (at least ~1,700: headers, MIME frame, HTML markup), the
    share `attachment` of it a base64 attachment."""
    rng = random.Random(seed)
    boundary, inner = f"=_{_token(rng, 12)}", f"=_{_token(rng, 12)}"
    head = (f"From: {rng.choice(_WORDS).title()} Store <orders@shop.example.com>\r\n"
            f"To: {rng.choice(_WORDS)}.{rng.choice(_WORDS)}@example.net\r\n"
            f"Subject: {_sentences(rng, 30)[:60]}\r\n"
            f"Date: Thu, 03 Dec 2026 {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00 +0000\r\n"
            f"Message-ID: <{_token(rng, 18)}@shop.example.com>\r\n"
            f"List-Unsubscribe: <https://shop.example.com/u/{_token(rng, 33)}>, <mailto:u-{_token(rng, 15)}"
            "@shop.example.com>\r\n"
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
            "MIME-Version: 1.0\r\n"
            f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n')
    frame_text = (f"--{boundary}\r\nContent-Type: multipart/alternative; boundary=\"{inner}\"\r\n\r\n"
                  f"--{inner}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
    frame_html = (f"\r\n--{inner}\r\nContent-Type: text/html; charset=utf-8\r\n"
                  "Content-Transfer-Encoding: quoted-printable\r\n\r\n")
    tail = f"\r\n--{inner}--\r\n"
    end = f"--{boundary}--\r\n"
    frame = len(head) + len(frame_text) + len(frame_html) + len(tail) + len(end)
    # The attachment leaves at least _MIN_ALTERNATIVE bytes to the text and HTML (none at 2 KB).
    attach_size = min(int(size * attachment), size - frame - _MIN_ALTERNATIVE)
    att = ""
    if attach_size > 400:
        raw = rng.randbytes(attach_size * 3 // 4)
        b64 = base64.b64encode(raw).decode()
        att = (f"--{boundary}\r\nContent-Type: application/pdf; name=\"invoice-{rng.randint(1, 99999)}.pdf\"\r\n"
               "Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment\r\n\r\n"
               + "\r\n".join(b64[i:i + 76] for i in range(0, len(b64), 76)) + "\r\n")
    room = size - frame - len(att)
    # The HTML of a paragraph is about 2.3x its text (markup and a link): split the room so.
    paragraphs = [_sentences(rng, rng.randint(150, 400)) for _ in range(max(1, room // 1300 + 1))]
    text, html = "", ""
    while paragraphs:
        text = "\r\n\r\n".join(_wrap(p) for p in paragraphs) + "\r\n"
        html = _qp(_html(rng, paragraphs))
        if len(text) + len(html) <= room:
            break
        if len(paragraphs) > 1:
            paragraphs.pop()
        elif len(paragraphs[0]) > 20:  # one paragraph too long: shorter, at a word
            paragraphs[0] = paragraphs[0][:len(paragraphs[0]) * 4 // 5].rsplit(" ", 1)[0] + "."
        else:
            break
    pad = room - len(text) - len(html)
    if pad >= 2:  # a closing line of text, cut to reach the size exactly
        line = _wrap(_sentences(rng, pad))[:pad - 2]
        text += (line[:-1] + "." if line.endswith("\r") else line) + "\r\n"
    elif pad == 1:
        text += " "
    else:  # the smallest frame is bigger than asked: cut the text
        text = text[:max(0, len(text) + pad)]
    return (head + frame_text + text + frame_html + html + tail + att + end).encode()
