"""The errors of SendGrid's v3 Mail Send, as its answers give them: `{"message", "field", "help"}`.

The texts are SendGrid's where its error reference or its answers have one (marked "ours"
where they do not), so that code written against SendGrid's answers reads ours the same way;
`help` points at SendGrid's error reference, as its answers do. Collection is bounded: after
MAX_ERRORS errors the reader stops looking (a million bad recipients must not make a million
lines of answer).
"""

from __future__ import annotations

from typing import NamedTuple

MAX_ERRORS = 100  # ours: errors kept for one answer

_HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#"
_EXAMPLE = '{"email": "example@example.com"} or {"email": "example@example.com", "name": "Example Recipient"}'

NOT_AN_OBJECT = "The request body must be a JSON object."  # ours
BAD_UTF8 = "Invalid UTF8 in request."
NO_PERSONALIZATIONS = "The personalizations field is required and must have at least one personalization."
TOO_MANY_PERSONALIZATIONS = ("The personalization block is limited to 1000 personalizations per API request. You "
                             "have provided {n} personalizations. Please consider splitting this into multiple "
                             "requests and resending your request.")
TOO_MANY_RECIPIENTS = "There is a limit of 1000 total recipients (to + cc + bcc) per request."
TO_REQUIRED = ("The to array is required for all personalization objects, and must have at least one email "
               "object with a valid email address.")
LIST_SHAPE = ("The {kind} array, when used, must at least have an email parameter with a valid email address and it"
              " may also contain a name parameter. e.g. " + _EXAMPLE)
RECIPIENT_SHAPE = ("Each recipient object must at least have an email address and may also contain a name. e.g. "
                   + _EXAMPLE)
INVALID_ADDRESS = "Does not contain a valid address."
DUPLICATE = ("Each email address in the personalization block should be unique between to, cc, and bcc. We found "
             "the first duplicate instance of [{email}] in the {field} field.")
FROM_REQUIRED = ('The from object must be provided for every email send. It is an object that requires the email '
                 'parameter, but may also contain a name parameter.  e.g. {"email" : "example@example.com"}  or '
                 '{"email" : "example@example.com", "name" : "Example Recipient"}.')
FROM_INVALID = "The from email does not contain a valid address."
REPLY_TO_SHAPE = ("The reply_to object, when used, must at least have an email parameter with a valid email address "
                  "and it may also contain a name parameter. e.g. " + _EXAMPLE)
REPLY_TO_BOTH = "You can use either the reply_to property or reply_to_list property but not both."  # ours
REPLY_TO_UNIQUE = "The reply_to_list must be a unique list, and you have included {email} more than once."  # ours
NAME_TEXT = "The name must be a string without CRLF or other control characters."  # ours
SUBJECT_TEXT = "The subject of your email must be a string at least one character in length."
SUBJECT_REQUIRED = ("The subject is required. You can get around this requirement if you use a template with a "
                    "subject defined or if every personalization has a subject defined.")
SUBSTITUTED_SUBJECT = "A substitution would put CRLF or other control characters in the subject."  # ours
NO_CONTROLS = "Cannot contain CRLF or other control characters."  # ours
TOO_LONG = "Must be at most {n} characters."  # ours
CONTENT_REQUIRED = ("Unless a valid template_id is provided, the content parameter is required. There must be at "
                    "least one defined content block. We typically suggest both text/plain and text/html blocks "
                    "are included, but only one block is required.")
CONTENT_TYPE_REQUIRED = "A content type is required, this tells email clients how to display the email."
CONTENT_TYPE_TEXT = "Your content type must be a string with length of at least one character."
CONTENT_TYPE_CHARS = "Cannot contain ';', or CRLF characters."
MIME_TYPE = "Must be a MIME type such as text/plain."  # ours
CONTENT_VALUE_REQUIRED = "A content value is required, this is the content of the email you are sending."
CONTENT_VALUE_TEXT = "The content value must be a string at least one character in length."
CONTENT_ORDER = ("Following RFC 1341, section 7.2, if either text/html or text/plain are to be sent in your email: "
                 "text/plain needs to be first, followed by text/html, followed by any other content.")
ATTACHMENT_TEXT = "The attachment content must be a string at least one character in length."
ATTACHMENT_BASE64 = "The attachment content must be base64 encoded."
FILENAME_REQUIRED = "filename is required."
FILENAME_TEXT = "The filename of your attachment must be a string."
FILENAME_CHARS = "The filename of your attachment cannot contain CRLF characters."
ATTACHMENT_TYPE_TEXT = "The attachment type must be a string and at least one character in length."
ATTACHMENT_TYPE_CHARS = "The type cannot contain ';', or CRLF characters."
DISPOSITION = 'The disposition of your attachment can be either "inline" or "attachment". You provided {value}.'
CONTENT_ID_TEXT = "The content ID of your attachment must be a string. You provided {value}."
CONTENT_ID_CHARS = "The content ID of your attachment cannot contain CRLF characters."
CONTENT_ID_REQUIRED = "The content_id is required when the disposition is inline."  # ours
HEADERS_OBJECT = "The headers must be an object of header names and string values."  # ours
# (message level, personalization level): SendGrid words the two a little differently
HEADER_VALUES = ("The header values must be strings.", "All values of the headers object must be strings.")
HEADER_KEYS = ("Header keys cannot contain non-ASCII characters and empty spaces.",
               "Header keys cannot contain non-ASCII characters or empty spaces.")
HEADER_RESERVED = ("Header can not be one of the reserved keys.", "Header cannot be one of the reserved keys.")
HEADER_DUPLICATE = "The headers cannot contain duplicate keys."
SUBSTITUTIONS = "The substitution values must be an object of key/value pairs, where the values are all strings."
SUBSTITUTIONS_MANY = "You are limited to 10,000 substitutions."
SUBSTITUTIONS_SIZE = "The substitutions may not exceed 10,000 bytes per personalization."  # ours
TEMPLATE_DATA = "The dynamic_template_data must be an object."  # ours
CUSTOM_ARGS = "All values of custom arguments object must be strings"
CUSTOM_ARGS_SIZE = ("The combined size of both global and personalization custom arguments may not exceed 10,000 "
                    "bytes per personalization.")
CATEGORIES_TEXT = "Categories must be an array of strings."
CATEGORIES_MANY = "There is a limit of 10 categories for each email that is sent. You provided {n} categories."
CATEGORY_LONG = "Each category must not be longer than 255 characters. {value} exceeds this limit"
CATEGORY_TWICE = "The categories must be a unique list, and you have included {value} more than once."
CATEGORY_ASCII = "Categories can not contain non-ASCII characters."
SEND_AT = ("The send_at parameter is expecting a Unix timestamp as an integer. We will send immediately if you "
           "include a send_at timestamp that is in the past.")
SEND_AT_FAR = "Scheduling more than 72 hours in advance is forbidden."
TEMPLATE_ID = "The template ID must be a string, you provided {value}."
BATCH_ID = "The batch_id must be a string."
BATCH_ID_CHARS = "The batch_id must be printable ASCII of at most 128 characters."  # ours
ASM_GROUP = "The ASM group ID must be an integer."
ASM_DISPLAY = "The ASM Group IDs to display must be an array of integers."
ASM_DISPLAY_MANY = "There is a limit of 25 unsubscribe groups that can be displayed to a user at a time."
IP_POOL = "The name of your IP pool must be a string."
IP_POOL_LENGTH = "The name of your IP pool must be 2 to 64 characters long."  # ours
SETTINGS_OBJECT = "The {name} must be an object."  # ours
TEMPLATE_INVALID = "Must be a valid template."
TEMPLATE_UNKNOWN = "The Template ID must be a valid template id for your account. You provided {value}."
RENDERED_SUBJECT = "The rendered subject cannot contain CRLF or other control characters."  # ours


class FieldError(NamedTuple):
    """One entry of SendGrid's `{"errors": [{"message", "field", "help"}]}`."""

    message: str
    field: str | None
    help: str | None


def field_error(message: str, field: str | None, anchor: str | None = None) -> FieldError:
    """An error; `anchor` is its section of SendGrid's error reference ("message.from")."""
    return FieldError(message, field, _HELP + anchor if anchor else None)


class MailSendError(Exception):
    """The request is refused (400): every error found (at most MAX_ERRORS), in document order."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors[:3]))
        self.errors = errors


class Full(Exception):
    """MAX_ERRORS errors found: stop looking."""


class Errors:
    """The errors found so far; `add` raises Full at MAX_ERRORS."""

    def __init__(self) -> None:
        self.found: list[FieldError] = []

    def __len__(self) -> int:
        return len(self.found)

    def add(self, message: str, field: str | None, anchor: str | None = None) -> None:
        self.found.append(field_error(message, field, anchor))
        if len(self.found) >= MAX_ERRORS:
            raise Full
