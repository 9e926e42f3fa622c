"""parse_mail_send: SendGrid's v3 mail send document checked whole, every error with SendGrid's field."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest

from mailrelay.submission import v3errors as E
from mailrelay.submission.v3errors import MAX_ERRORS, FieldError, MailSendError
from mailrelay.submission.v3mail import Address, parse_mail_send
from mailrelay.submission.v3parts import RESERVED_HEADERS, header_safe, substitute

NOW = 1_700_000_000.0
HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#"


def doc(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "personalizations": [{"to": [{"email": "bob@dest.test", "name": "Bob"}]}],
        "from": {"email": "alice@sender.test", "name": "Alice"},
        "subject": "Hello",
        "content": [{"type": "text/plain", "value": "Hi"}],
    }
    return base | changes


def errors(data: object) -> list[FieldError]:
    with pytest.raises(MailSendError) as info:
        parse_mail_send(data, now=NOW)
    return info.value.errors


def fields(data: object) -> dict[str | None, str]:
    return {e.field: e.message for e in errors(data)}


def test_the_whole_documented_shape_is_read_and_unknown_fields_ignored() -> None:
    data = doc(
        personalizations=[
            {"to": [{"email": "bob@dest.test", "name": "Bob"}], "cc": [{"email": "carol@dest.test"}],
             "bcc": [{"email": "dan@dest.test"}], "subject": "Hi -name-", "headers": {"X-Pers": "1"},
             "substitutions": {"-name-": "Bob"}, "dynamic_template_data": {"items": [1, {"a": None}]},
             "custom_args": {"uid": "7"}, "send_at": int(NOW) + 3600, "from": {"email": "ops@sender.test"},
             "sections": {"ignored": "yes"}},
            {"to": [{"email": "eve@dest.test"}]},
        ],
        reply_to_list=[{"email": "help@sender.test", "name": "Help"}, {"email": "ops@sender.test"}],
        content=[{"type": "text/plain", "value": "t"}, {"type": "text/html", "value": "<p>h</p>"},
                 {"type": "text/calendar", "value": "BEGIN:VCALENDAR"}],
        attachments=[{"content": base64.b64encode(b"\x00\xffdata").decode(), "filename": "a.pdf"},
                     {"content": "UE5H", "type": "image/png", "filename": "logo.png", "disposition": "inline",
                      "content_id": "logo"}],
        headers={"List-Unsubscribe": "<mailto:u@sender.test>"}, categories=["welcome", "eu"],
        custom_args={"campaign": "spring"}, send_at=int(NOW) - 60, batch_id="HkJ5yLYULb7Rj8GKSx7u025ouWVlMgAi",
        asm={"group_id": 12, "groups_to_display": [12, 13]}, ip_pool_name="transactional",
        mail_settings={"sandbox_mode": {"enable": False}, "bypass_list_management": {"enable": True},
                       "footer": {"enable": True, "text": "-- ft", "html": "<p>ft</p>"}, "unknown": 1},
        tracking_settings={"click_tracking": {"enable": True, "enable_text": False}, "future": {"x": 1}},
        future_field={"anything": True},
    )
    mail = parse_mail_send(data, now=NOW)
    first, second = mail.personalizations
    assert first.to == (Address("bob@dest.test", "Bob"),) and first.recipients == [
        "bob@dest.test", "carol@dest.test", "dan@dest.test"]
    assert (first.subject, first.headers, first.substitutions) == ("Hi -name-", {"X-Pers": "1"}, {"-name-": "Bob"})
    assert first.dynamic_template_data == {"items": [1, {"a": None}]} and first.custom_args == {"uid": "7"}
    assert first.send_at == int(NOW) + 3600 and first.from_ == Address("ops@sender.test")
    assert second.to == (Address("eve@dest.test"),) and second.subject is None and mail.recipient_count == 4
    assert mail.from_ == Address("alice@sender.test", "Alice") and mail.subject == "Hello"
    assert [a.email for a in mail.reply_to] == ["help@sender.test", "ops@sender.test"]
    assert [c.type for c in mail.content] == ["text/plain", "text/html", "text/calendar"]
    pdf, logo = mail.attachments
    assert (pdf.content, pdf.type, pdf.disposition, pdf.content_id) == (b"\x00\xffdata", "application/pdf",
                                                                         "attachment", None)
    assert (logo.content, logo.disposition, logo.content_id) == (b"PNG", "inline", "logo")
    assert mail.headers == {"List-Unsubscribe": "<mailto:u@sender.test>"} and mail.categories == ("welcome", "eu")
    assert mail.send_at == int(NOW) - 60, "a time in the past is accepted: SendGrid sends such mail at once"
    assert (mail.batch_id, mail.asm and mail.asm.groups_to_display, mail.ip_pool_name) == (
        "HkJ5yLYULb7Rj8GKSx7u025ouWVlMgAi", (12, 13), "transactional")
    s = mail.mail_settings
    assert not mail.sandbox_mode and s.bypass_list_management and not s.bypass_spam_management
    assert (s.footer_text, s.footer_html) == ("-- ft", "<p>ft</p>")
    assert mail.tracking_settings == data["tracking_settings"], "kept as given"
    assert mail.template_id is None


def test_every_error_at_once_with_sendgrids_texts_fields_and_help() -> None:
    got = errors({"content": [], "unknown": 1})
    assert got == [
        FieldError(E.NO_PERSONALIZATIONS, "personalizations", HELP + "-Personalizations-Errors"),
        FieldError(E.FROM_REQUIRED, "from.email", HELP + "message.from"),
        FieldError(E.SUBJECT_REQUIRED, "subject", HELP + "message.subject"),
        FieldError(E.CONTENT_REQUIRED, "content", HELP + "message.content"),
    ]
    assert E.FROM_REQUIRED.startswith("The from object must be provided for every email send.")
    assert errors([]) == [FieldError(E.NOT_AN_OBJECT, None, None)]
    assert errors(doc(subject="\ud800")) == [FieldError(E.BAD_UTF8, None, None)], "a lone surrogate has no UTF-8"


def test_recipients_are_named_by_their_path() -> None:
    data = doc(personalizations=[
        {"to": [{"email": "bob@dest.test"}, {"email": "not-an-address"}], "cc": [{"name": "no email"}],
         "bcc": [{"email": "x@dest.test", "name": "Evil\r\nBcc: victim@x.test"}]},
        {"to": []},
        {"cc": [{"email": "carol@dest.test"}]},
        "not an object",
    ], **{"from": {"email": "alice@"}})
    assert fields(data) == {
        "personalizations.0.to.1.email": E.INVALID_ADDRESS,
        "personalizations.0.cc.0.email": E.RECIPIENT_SHAPE,
        "personalizations.0.bcc.0.name": E.NAME_TEXT,
        "personalizations.1.to": E.TO_REQUIRED,
        "personalizations.2.to": E.TO_REQUIRED,
        "personalizations.3.to": E.TO_REQUIRED,
        "from.email": E.FROM_INVALID,
    }
    assert errors(doc(reply_to={"email": "bad"}))[0][1:] == ("reply_to.email", HELP + "message.reply_to")


@pytest.mark.parametrize("email", ["bob", "bob@", "@dest.test", "a b@dest.test", "bob@dest.test.",
                                   "bób@dest.test", "bob@dest.test\r\n", "<bob@dest.test>", "a@b@c.test"])
def test_addresses_must_be_ascii_mailboxes(email: str) -> None:
    assert fields(doc(personalizations=[{"to": [{"email": email}]}])) == {
        "personalizations.0.to.0.email": E.INVALID_ADDRESS}


def test_a_duplicate_across_to_cc_and_bcc_is_refused_as_sendgrid_does() -> None:
    got = errors(doc(personalizations=[{"to": [{"email": "bob@dest.test"}], "cc": [{"email": "carol@dest.test"}],
                                        "bcc": [{"email": "Bob@Dest.test"}]}]))
    assert got == [FieldError(E.DUPLICATE.format(email="Bob@Dest.test", field="personalizations.0.bcc"),
                              "personalizations.0", HELP + "message.recipient-errors")]
    assert "We found the first duplicate instance of [Bob@Dest.test] in the personalizations.0.bcc field." \
        in got[0].message
    # the same address in two personalizations is two messages, each to one recipient
    parse_mail_send(doc(personalizations=[{"to": [{"email": "bob@dest.test"}]}] * 2), now=NOW)


def test_limits_of_personalizations_and_recipients() -> None:
    one = {"to": [{"email": "bob@dest.test"}]}
    got = errors(doc(personalizations=[one] * 1001))
    assert got[0].message == E.TOO_MANY_PERSONALIZATIONS.format(n=1001) and "You have provided 1001" in got[0].message
    parse_mail_send(doc(personalizations=[{"to": [{"email": f"r{i}@dest.test"}]} for i in range(1000)]), now=NOW)
    # 1001 recipients over two personalizations; the lists past the limit are not read
    many = [{"to": [{"email": f"r{i}@dest.test"} for i in range(600)]},
            {"to": [{"email": "not-an-address"}] * 401}]
    assert fields(doc(personalizations=many)) == {"personalizations": E.TOO_MANY_RECIPIENTS}


def test_subject_rules() -> None:
    personal = [{"to": [{"email": "bob@dest.test"}], "subject": "own"}]
    assert parse_mail_send(doc(subject=None, personalizations=personal), now=NOW).subject is None
    assert parse_mail_send(doc(subject=None, content=None, template_id="d-123"), now=NOW).template_id == "d-123"
    assert fields(doc(subject="")) == {"subject": E.SUBJECT_TEXT}
    assert fields(doc(subject=5)) == {"subject": E.SUBJECT_TEXT}
    assert fields(doc(personalizations=[{"to": [{"email": "b@d.test"}], "subject": ""}])) == {
        "personalizations.0.subject": E.SUBJECT_TEXT}


@pytest.mark.parametrize("evil", ["Hi\r\nBcc: victim@x.test", "Hi\nX: y", "Hi\x00", "Hi\u2028there", "a\x85b",
                                  "tab\there"])
def test_no_header_injection_through_any_header_text(evil: str) -> None:
    assert not header_safe(evil)
    p = [{"to": [{"email": "b@d.test", "name": evil}], "subject": evil, "headers": {"X-P": evil}}]
    data = doc(subject=evil, personalizations=p, headers={"X-Evil": evil}, reply_to={"email": "r@s.test", "name": evil},
               content=[{"type": f"text/plain{evil}", "value": "x"}],
               attachments=[{"content": "UE5H", "filename": evil, "content_id": evil, "type": f"image/png{evil}"}],
               **{"from": {"email": "a@s.test", "name": evil}})
    assert set(fields(data)) == {
        "subject", "personalizations.0.subject", "personalizations.0.to.0.name", "personalizations.0.headers.X-P",
        "headers.X-Evil", "reply_to.name", "from.name", "content.0.type", "attachments.0.filename",
        "attachments.0.content_id", "attachments.0.type"}


def test_a_substitution_cannot_put_a_line_break_into_the_subject() -> None:
    p = [{"to": [{"email": "b@d.test"}], "substitutions": {"-n-": "x\r\nBcc: victim@x.test"}}]
    assert fields(doc(subject="Hi -n-", personalizations=p)) == {
        "personalizations.0.substitutions": E.SUBSTITUTED_SUBJECT}
    # the same value in content only is fine: text bodies have line breaks
    assert parse_mail_send(doc(subject="Hi", personalizations=p), now=NOW).personalizations[0].substitutions
    assert fields(doc(personalizations=[{"to": [{"email": "b@d.test"}], "substitutions": {"-n-": 5}}])) == {
        "personalizations.0.substitutions": E.SUBSTITUTIONS}
    big = {f"-k{i}-": "v" * 100 for i in range(100)}
    assert fields(doc(personalizations=[{"to": [{"email": "b@d.test"}], "substitutions": big}])) == {
        "personalizations.0.substitutions": E.SUBSTITUTIONS_SIZE}


def test_substitute_is_one_pass_longest_key_first() -> None:
    assert substitute("-a- -ab- -b-", {"-a-": "-b-", "-b-": "B", "-ab-": "AB"}) == "-b- AB B"
    assert substitute("no tags", {}) == "no tags"


def test_content_rules_and_sendgrids_order() -> None:
    plain, html = {"type": "text/plain", "value": "t"}, {"type": "text/html", "value": "h"}
    assert fields(doc(content=[html, plain])) == {"content": E.CONTENT_ORDER}
    assert fields(doc(content=[{"type": "text/calendar", "value": "c"}, html])) == {"content": E.CONTENT_ORDER}
    parse_mail_send(doc(content=[html]), now=NOW)
    assert fields(doc(content=[{"value": "x"}, {"type": "", "value": "x"}, {"type": "text/plain; charset=x",
                                                                              "value": "x"},
                               {"type": "text/plain"}, {"type": "text/html", "value": ""},
                               {"type": "multipart/mixed", "value": "x"}, {"type": "nonsense", "value": "x"}])) == {
        "content.0.type": E.CONTENT_TYPE_REQUIRED, "content.1.type": E.CONTENT_TYPE_TEXT,
        "content.2.type": E.CONTENT_TYPE_CHARS, "content.3.value": E.CONTENT_VALUE_REQUIRED,
        "content.4.value": E.CONTENT_VALUE_TEXT, "content.5.type": E.MIME_TYPE, "content.6.type": E.MIME_TYPE}
    assert errors(doc(content=[{"type": "text/plain", "value": ""}]))[0] == FieldError(
        E.CONTENT_VALUE_TEXT, "content.0.value", HELP + "message.content.value")


def test_attachments() -> None:
    wrapped = base64.encodebytes(bytes(range(256)) * 4).decode()  # 76-character lines
    mail = parse_mail_send(doc(attachments=[{"content": wrapped, "filename": "x.bin"},
                                            {"content": "UE5H", "filename": "noext"}]), now=NOW)
    assert mail.attachments[0].content == bytes(range(256)) * 4
    assert mail.attachments[1].type == "application/octet-stream"
    bad = [{"content": "UE5H", "filename": "ok.png"}, {"content": "NOT BASE64!", "filename": "a"},
           {"content": "-_-_", "filename": "b"}, {"content": "UE5", "filename": "c"}, {"filename": "d"},
           {"content": "UE5H"}, {"content": "UE5H", "filename": 3}, {"content": "UE5H", "filename": "e",
                                                                      "disposition": "embedded"},
           {"content": "UE5H", "filename": "f", "disposition": "inline"},
           {"content": "UE5H", "filename": "g", "content_id": 7}, {"content": "UE5H", "filename": "h", "type": ""}]
    assert fields(doc(attachments=bad)) == {
        "attachments.1.content": E.ATTACHMENT_BASE64, "attachments.2.content": E.ATTACHMENT_BASE64,
        "attachments.3.content": E.ATTACHMENT_BASE64, "attachments.4.content": E.ATTACHMENT_TEXT,
        "attachments.5.filename": E.FILENAME_REQUIRED, "attachments.6.filename": E.FILENAME_TEXT,
        "attachments.7.disposition": E.DISPOSITION.format(value='"embedded"'),
        "attachments.8.content_id": E.CONTENT_ID_REQUIRED, "attachments.9.content_id": E.CONTENT_ID_TEXT.format(
            value="7"), "attachments.10.type": E.ATTACHMENT_TYPE_TEXT}
    assert errors(doc(attachments=bad))[0] == FieldError(E.ATTACHMENT_BASE64, "attachments.1.content",
                                                         HELP + "message.attachments.content")


def test_headers() -> None:
    for name in [*sorted(RESERVED_HEADERS), "X-SG-ID", "Dkim-Signature", "cc", "Reply-to"]:
        assert fields(doc(headers={name: "v"})) == {"headers": E.HEADER_RESERVED[0]}, name
    assert {"x-sg-id", "x-sg-eid", "received", "dkim-signature", "content-type", "content-transfer-encoding", "to",
            "from", "subject", "reply-to", "cc", "bcc"} == RESERVED_HEADERS
    assert fields(doc(headers={"X-A": 1})) == {"headers": E.HEADER_VALUES[0]}
    assert fields(doc(headers={"X A": "v"})) == {"headers": E.HEADER_KEYS[0]}
    assert fields(doc(headers={"X-Grüß": "v"})) == {"headers": E.HEADER_KEYS[0]}
    assert fields(doc(headers={"X-A:": "v"})) == {"headers": E.HEADER_KEYS[0]}
    assert fields(doc(headers={"X-A": "1", "x-a": "2"})) == {"headers": E.HEADER_DUPLICATE}
    assert fields(doc(headers=["X-A: 1"])) == {"headers": E.HEADERS_OBJECT}
    personal = [{"to": [{"email": "b@d.test"}], "headers": {"Subject": "x", "X-B": True}}]
    assert errors(doc(personalizations=personal)) == [
        FieldError(E.HEADER_RESERVED[1], "personalizations.0.headers", HELP + "message.personalizations.headers"),
        FieldError(E.HEADER_VALUES[1], "personalizations.0.headers", HELP + "message.personalizations.headers")]
    mail = parse_mail_send(doc(headers={"X-Unicode-Value": "grüße", "Message-ID": "<own@s.test>"}), now=NOW)
    assert mail.headers["X-Unicode-Value"] == "grüße"


def test_categories() -> None:
    assert fields(doc(categories=[str(i) for i in range(11)])) == {
        "categories": E.CATEGORIES_MANY.format(n=11)}
    assert fields(doc(categories="one")) == {"categories": E.CATEGORIES_TEXT}
    got = fields(doc(categories=["ok", 5, "x" * 256, "grün", "a\nb", "ok"]))
    assert got == {"categories.1": E.CATEGORIES_TEXT, "categories.2": E.CATEGORY_LONG.format(value="x" * 40 + "..."),
                   "categories.3": E.CATEGORY_ASCII, "categories.4": E.NO_CONTROLS,
                   "categories.5": E.CATEGORY_TWICE.format(value="ok")}
    assert parse_mail_send(doc(categories=["x" * 255]), now=NOW).categories == ("x" * 255,)


def test_custom_args_are_strings_within_10000_bytes_merged() -> None:
    assert fields(doc(custom_args={"n": 7})) == {"custom_args": E.CUSTOM_ARGS}
    assert fields(doc(personalizations=[{"to": [{"email": "b@d.test"}], "custom_args": {"n": None}}])) == {
        "personalizations.0.custom_args": E.CUSTOM_ARGS}
    half = {"a": "x" * 5000}
    p = [{"to": [{"email": "b@d.test"}], "custom_args": {"b": "y" * 5000}}]
    assert fields(doc(custom_args=half, personalizations=p)) == {"personalizations.0.custom_args": E.CUSTOM_ARGS_SIZE}
    p[0]["custom_args"] = {"a": "y" * 5000}  # overrides the message's: the merged size fits
    parse_mail_send(doc(custom_args=half, personalizations=p), now=NOW)
    assert fields(doc(custom_args={"a": "x" * 10_001})) == {"custom_args": E.CUSTOM_ARGS_SIZE}


def test_send_at() -> None:
    assert parse_mail_send(doc(send_at=int(NOW) + 72 * 3600), now=NOW).send_at == int(NOW) + 72 * 3600
    assert fields(doc(send_at=int(NOW) + 72 * 3600 + 1)) == {"send_at": E.SEND_AT_FAR}
    for bad in (1.5, "1700000000", True, -1):
        assert fields(doc(send_at=bad)) == {"send_at": E.SEND_AT}, bad
    p = [{"to": [{"email": "b@d.test"}], "send_at": int(NOW) + 80 * 3600}]
    assert errors(doc(personalizations=p)) == [
        FieldError(E.SEND_AT_FAR, "personalizations.0.send_at", HELP + "message.personalizations.send_at")]


def test_reply_to_and_reply_to_list() -> None:
    assert parse_mail_send(doc(reply_to={"email": "r@s.test", "name": "R"}), now=NOW).reply_to == (
        Address("r@s.test", "R"),)
    assert fields(doc(reply_to={"email": "r@s.test"}, reply_to_list=[{"email": "q@s.test"}])) == {
        "reply_to_list": E.REPLY_TO_BOTH}
    assert fields(doc(reply_to_list=[{"email": "q@s.test"}, {"email": "Q@s.test"}, {"name": "x"}])) == {
        "reply_to_list.1.email": E.REPLY_TO_UNIQUE.format(email="Q@s.test"),
        "reply_to_list.2.email": E.REPLY_TO_SHAPE}


def test_settings_types_are_checked() -> None:
    got = errors(doc(mail_settings={"sandbox_mode": {"enable": "yes"}, "bypass_spam_management": True,
                                    "footer": {"enable": True, "text": 5}},
                     tracking_settings={"click_tracking": {"enable": 1}, "ganalytics": {"utm_source": 2}}))
    assert [(e.field, e.message) for e in got] == [
        ("mail_settings.bypass_spam_management",
         "The bypass spam management enable param should be a boolean value."),
        ("mail_settings.footer.text", "The text/plain version of your footer should be a string."),
        ("mail_settings.sandbox_mode.enable", "The sandbox mode enable param should be a boolean value."),
        ("tracking_settings.click_tracking.enable", "The click tracking enable param should be a boolean value."),
        ("tracking_settings.ganalytics.utm_source", "The Google Analytics utm_source must be a string value.")]
    assert got[2].help == HELP + "message.mail_settings.sandbox_mode.enable"
    assert fields(doc(mail_settings=[])) == {"mail_settings": E.SETTINGS_OBJECT.format(name="mail_settings")}
    mail = parse_mail_send(doc(mail_settings={"sandbox_mode": {"enable": True},
                                              "footer": {"enable": False, "text": "x"}}), now=NOW)
    assert mail.sandbox_mode and mail.mail_settings.footer_text is None


def test_scalars() -> None:
    assert fields(doc(template_id=12, content=None)) == {"template_id": E.TEMPLATE_ID.format(value="12")}
    assert fields(doc(batch_id=5)) == {"batch_id": E.BATCH_ID}
    assert fields(doc(batch_id="a\nb")) == {"batch_id": E.BATCH_ID_CHARS}
    assert fields(doc(asm={"group_id": "12"})) == {"asm.group_id": E.ASM_GROUP}
    assert fields(doc(asm={"group_id": 1, "groups_to_display": ["2"]})) == {"asm.groups_to_display": E.ASM_DISPLAY}
    assert fields(doc(asm={"group_id": 1, "groups_to_display": list(range(26))})) == {
        "asm.groups_to_display": E.ASM_DISPLAY_MANY}
    assert fields(doc(ip_pool_name=3)) == {"ip_pool_name": E.IP_POOL}
    assert fields(doc(ip_pool_name="x")) == {"ip_pool_name": E.IP_POOL_LENGTH}
    assert fields(doc(personalizations=[{"to": [{"email": "b@d.test"}], "dynamic_template_data": [1]}])) == {
        "personalizations.0.dynamic_template_data": E.TEMPLATE_DATA}


def test_the_error_list_is_bounded() -> None:
    got = errors(doc(attachments=[{}] * 100_000))
    assert len(got) == MAX_ERRORS
    assert got[0] == FieldError(E.ATTACHMENT_TEXT, "attachments.0.content", HELP + "message.attachments.content")


def test_the_document_is_not_changed() -> None:
    data = doc(personalizations=[{"to": [{"email": "b@d.test"}], "custom_args": {"a": "1"}}], custom_args={"b": "2"},
               headers={"X-A": "1"})
    before = copy.deepcopy(data)
    parse_mail_send(data, now=NOW)
    assert data == before
