"""Text from outside put to use: control characters found or taken out.

One definition of what a control character is (C0 and DEL) for every check of user or peer
text that goes into a command, a header, a log line or a table cell.
"""

from __future__ import annotations

import re

CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def has_control_chars(text: str) -> bool:
    return CONTROL.search(text) is not None


def one_line(text: str) -> str:
    """`text` with controls (line breaks too) as spaces and runs of white space as one."""
    return " ".join(CONTROL.sub(" ", text).split())
