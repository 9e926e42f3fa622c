"""SendGrid's dynamic templates: Handlebars text rendered with an account's data.

Compiled by pybars3 (pinned), with what SendGrid has and pybars lacks: `{{else}}` in `unless`,
and the comparison helpers `equals`, `notEquals`, `greaterThan`, `lessThan`, `and`, `or` and
`length`. `{{x}}` is HTML-escaped as Handlebars escapes it, `{{{x}}}` is not.

Security: pybars compiles a template to Python source and runs it, pasting each name of the
template into that source; a bracketed name (`{{a.[x') or ...]}}`) would run code of the
template's author. Every name and literal of the parsed template is checked before the code is
made (no quotes, backslashes or control characters; no names starting with "_", and no
partials), and pybars' attribute fallback cannot reach a Python method: the data's objects
answer a missing key with None and text is not indexable by name. Work is bounded: a
template's size (MAX_SOURCE), and iterations and output per render (MAX_ITERATIONS,
MAX_OUTPUT). Failures are TemplateError with a message for the caller.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import pybars  # type: ignore[import-untyped]
from pybars import _compiler

from mailrelay.submission.v3errors import MailSendError, field_error
from mailrelay.submission.v3mail import Personalization
from mailrelay.submission.v3mime import Rendered, Renderer
from mailrelay.submission.v3parts import Content

MAX_SOURCE = 100_000  # characters of one template text: pybars compiles about 20 KB a second
MAX_ITERATIONS = 100_000  # {{#each}} rounds in one render
MAX_OUTPUT = 2_000_000  # characters of one rendered text

_SAFE_NAME = re.compile(r"[^'\"\\\x00-\x1f\x7f]*")
_LOCK = threading.Lock()  # pybars' code builder is one object shared by all compilers


class TemplateError(Exception):
    """A template that does not compile or render; the message says why."""


class _Data(dict):  # type: ignore[type-arg]
    """A JSON object of the data: a missing key is None, never an attribute (pybars' fallback)."""

    def __missing__(self, key: object) -> None:
        return None


class _Text(str):
    """A JSON string of the data: `text[name]` is None, so a name never reaches str's methods."""

    __slots__ = ()

    def __getitem__(self, key: Any) -> Any:
        return None if isinstance(key, str) else str.__getitem__(self, key)


def wrap(value: Any) -> Any:
    """JSON data as the templates see it (see _Data, _Text)."""
    if isinstance(value, dict):
        return _Data((k, wrap(v)) for k, v in value.items())
    if isinstance(value, list):
        return [wrap(v) for v in value]
    if isinstance(value, str):
        return _Text(value)
    return value


def _check(node: Any) -> None:
    """Refuse a parsed template whose names or literals could leave pybars' generated strings."""
    if isinstance(node, str):
        if not _SAFE_NAME.fullmatch(node):
            raise TemplateError("names and strings in a template cannot contain quotes other than "
                                "around a string, backslashes or control characters")
        return
    if isinstance(node, (list, tuple)):
        if node and node[0] == "partial":
            raise TemplateError("partials ({{> name}}) are not supported")
        if node and node[0] == "path":
            for segment in node[1]:
                if isinstance(segment, str) and segment.startswith("_"):
                    raise TemplateError(f"a name cannot start with '_': {segment!r}")
        if node and node[0] == "literalparam" and isinstance(node[1], str):
            inner = node[1][1:-1]
            if not _SAFE_NAME.fullmatch(inner.replace("\\\"", "").replace("\\'", "")):
                raise TemplateError("a string in a template cannot contain backslashes or control characters")
            return
        if node and node[0] in ("literal", "newline", "whitespace"):
            return  # text: written with repr()
        if node and node[0] == "rawblock":
            _check(node[1])
            _check(node[2])
            return
        for child in node:
            _check(child)


class _SafeCompiler(pybars.Compiler):  # type: ignore[misc]
    """pybars' own compile step (0.9.7's _generate_code), with the check between parse and code."""

    def _generate_code(self, source: str) -> Any:
        source = self.whitespace_control(source)
        parser = self._handlebars(source)
        tree, _ = parser.apply("template")
        position = parser.input.position  # where parsing stopped (pybars' own check misses an unclosed block)
        if position < len(source):
            raise TemplateError(f"the template is not valid Handlebars near character {position}: "
                                f"{self._extract_word(source, position)!r}")
        _check(tree)
        self._compiler.globals["builder"]._reset()
        return self._compiler(tree).apply("compile")[0]


@lru_cache(maxsize=256)
def compile_template(source: str) -> Callable[..., Any]:
    """The compiled template (cached by its text); TemplateError if it is not Handlebars we run."""
    if len(source) > MAX_SOURCE:
        raise TemplateError(f"a template text is limited to {MAX_SOURCE} characters")
    with _LOCK:
        try:
            fn: Callable[..., Any] = _SafeCompiler().compile(source)
        except TemplateError:
            raise
        except RecursionError:
            raise TemplateError("the template is nested too deeply") from None
        except Exception as exc:  # pybars' parse errors, and anything its grammar raises
            raise TemplateError(f"the template is not valid Handlebars: {exc}") from None
    # pybars registers every compiled template as a module: forget it, the function is enough.
    sys.modules.pop(getattr(fn, "__module__", ""), None)
    return fn


class _Budget:
    def __init__(self) -> None:
        self.iterations = 0

    def each(self, this: Any, options: dict[str, Any], context: Any) -> Any:
        if isinstance(context, (list, dict)):
            self.iterations += len(context)
            if self.iterations > MAX_ITERATIONS:
                raise TemplateError(f"the template loops more than {MAX_ITERATIONS} times")
        result = _compiler._each(this, options, context)
        if result is not None and sum(len(s) for s in result) > MAX_OUTPUT:
            raise TemplateError(f"the rendered text is longer than {MAX_OUTPUT} characters")
        return result

    def block_missing(self, this: Any, options: dict[str, Any], context: Any) -> Any:
        if isinstance(context, list) and context:
            return self.each(this, options, context)
        return _compiler._blockHelperMissing(this, options, context)


def _loose_equal(a: Any, b: Any) -> bool:
    if a == b:
        return True
    numbers = (int, float)
    if isinstance(a, numbers) != isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return str(a) == str(b)  # "5" equals 5, as SendGrid's loose comparison
    return False


def _number(value: Any) -> Any:
    """A number given as text ("5") compares as the number, as in JavaScript."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _compare(test: Callable[[Any, Any], bool]) -> Callable[..., Any]:
    def helper(this: Any, options: dict[str, Any], a: Any = None, b: Any = None) -> Any:
        try:
            passed = test(a, b)
        except TypeError:
            passed = False
        return options["fn"](this) if passed else options["inverse"](this)
    return helper


def _logic(test: Callable[..., bool]) -> Callable[..., Any]:
    def helper(this: Any, options: dict[str, Any], *args: Any) -> Any:
        return options["fn"](this) if test(bool(a) for a in args) else options["inverse"](this)
    return helper


def _unless(this: Any, options: dict[str, Any], context: Any) -> Any:
    return options["inverse"](this) if context else options["fn"](this)


def _length(this: Any, value: Any = None) -> int:
    return len(value) if isinstance(value, (list, dict, str)) else 0


def _helpers(budget: _Budget) -> dict[str, Any]:
    return {
        **_compiler._pybars_["helpers"],
        "each": budget.each, "blockHelperMissing": budget.block_missing, "unless": _unless,
        "log": lambda this, *args: None,
        "equals": _compare(_loose_equal), "notEquals": _compare(lambda a, b: not _loose_equal(a, b)),
        "greaterThan": _compare(lambda a, b: _number(a) > _number(b)),
        "lessThan": _compare(lambda a, b: _number(a) < _number(b)),
        "and": _logic(all), "or": _logic(any), "length": _length,
    }


def render(source: str, data: Mapping[str, Any] | None) -> str:
    """`source` rendered with `data` (a personalization's dynamic_template_data)."""
    if not source:
        return ""
    template = compile_template(source)
    budget = _Budget()
    try:
        out = str(template(wrap(dict(data or {})), helpers=_helpers(budget), partials={}))
    except TemplateError:
        raise
    except RecursionError:
        raise TemplateError("the template is nested too deeply for its data") from None
    except Exception as exc:
        raise TemplateError(f"the template could not be rendered: {exc}") from None
    if len(out) > MAX_OUTPUT:
        raise TemplateError(f"the rendered text is longer than {MAX_OUTPUT} characters")
    return out


def renderer(template_id: str, subject: str, html_content: str, plain_content: str) -> Renderer:
    """The v3mime renderer of a template version: each personalization's subject and content
    from its dynamic_template_data (text/plain before text/html, as SendGrid orders them). A
    template that fails is MailSendError on `template_id`, with the reason."""
    def render_one(i: int, p: Personalization) -> Rendered:
        try:
            subject_out = render(subject, p.dynamic_template_data)
            content = [Content(kind, render(text, p.dynamic_template_data))
                       for kind, text in (("text/plain", plain_content), ("text/html", html_content)) if text]
        except TemplateError as exc:
            raise MailSendError([field_error(f"The template {template_id} could not be rendered for "
                                             f"personalizations.{i}: {exc}", "template_id",
                                             "message.template_id")]) from None
        return Rendered(subject_out or None, tuple(c for c in content if c.value))
    return render_one
