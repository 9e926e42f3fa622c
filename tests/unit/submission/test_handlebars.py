"""Handlebars for dynamic templates: SendGrid's helpers, escaping, and a template that cannot run
code or reach Python objects, or loop without end."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailrelay.submission.handlebars import MAX_SOURCE, TemplateError, render, renderer
from mailrelay.submission.v3errors import MailSendError
from mailrelay.submission.v3mail import Address, Personalization


@pytest.mark.parametrize(("source", "data", "expected"), [
    ("{{x}} {{{x}}} {{&x}}", {"x": "<a href='q'>&\"`"},
     "&lt;a href=&#x27;q&#x27;&gt;&amp;&quot;&#x60; <a href='q'>&\"` <a href='q'>&\"`"),
    ("{{#if a}}y{{else}}n{{/if}}{{#unless a}}u{{else}}v{{/unless}}", {"a": 0}, "nu"),
    ("{{#unless a}}u{{else}}v{{/unless}}", {"a": [1]}, "v"),
    ("{{#each xs}}{{@index}}:{{this}}{{#unless @last}},{{/unless}}{{else}}none{{/each}}", {"xs": ["a", "b"]},
     "0:a,1:b"),
    ("{{#each xs}}x{{else}}none{{/each}}", {"xs": []}, "none"),
    ("{{#each o}}{{@key}}={{this}};{{/each}}", {"o": {"k": 1}}, "k=1;"),
    ('{{#equals a "x"}}eq{{else}}ne{{/equals}} {{#equals n 5}}five{{/equals}}', {"a": "x", "n": "5"}, "eq five"),
    ("{{#notEquals a b}}diff{{/notEquals}}", {"a": 1, "b": 2}, "diff"),
    ("{{#greaterThan n 3}}big{{else}}small{{/greaterThan}} {{#lessThan n 3}}lt{{/lessThan}}", {"n": "10"}, "big "),
    ("{{#and a b}}both{{else}}not{{/and}} {{#or a b}}one{{/or}}", {"a": 1, "b": 0}, "not one"),
    ("{{length xs}} {{xs.length}} {{user.name}} {{user.missing}}|", {"xs": [1, 2, 3], "user": {"name": "N"}},
     "3 3 N |"),
    ("{{#with user}}{{name}}{{/with}} {{lookup user 'name'}}", {"user": {"name": "W"}}, "W W"),
    ("{{title}} {{s.format}} {{s.upper}} {{user.keys}}|", {"title": "T", "s": "{0.__class__}", "user": {}}, "T   |"),
])
def test_sendgrid_handlebars(source: str, data: dict[str, object], expected: str) -> None:
    assert render(source, data) == expected


@pytest.mark.parametrize("source", [
    "{{#if a}}never closed",
    "x {{/if}} y",
    "{{a",
    "{{> partial}}",
    "{{x.__class__}}",
    "{{x.[a'), print('ran'), ('b]}}",
    '{{#equals a "x\\"}}{{/equals}}',
    "{{#if a}}" * 400 + "{{/if}}" * 400,
    "x" * (MAX_SOURCE + 1),
])
def test_templates_that_are_refused(source: str) -> None:
    with pytest.raises(TemplateError):
        render(source, {"a": 1, "x": {}})


def test_a_bracketed_name_cannot_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(TemplateError):
        render("{{x.[a'), open(" + repr(str(marker)) + ", 'w'), ('b]}}", {"x": {}})
    assert not marker.exists()


def test_loops_and_output_are_bounded() -> None:
    with pytest.raises(TemplateError, match="loops"):
        render("{{#each a}}{{#each ../a}}{{#each ../../a}}x{{/each}}{{/each}}{{/each}}", {"a": list(range(100))})
    with pytest.raises(TemplateError, match="longer"):
        render("{{#each a}}{{{../big}}}{{/each}}", {"a": list(range(100)), "big": "x" * 100_000})


def test_the_renderer_makes_plain_before_html_and_names_template_id_on_failure() -> None:
    render_one = renderer("d-1", "Hi {{{name}}}", "<p>{{name}}</p>", "{{name}}")
    p = Personalization(to=(Address("a@example.com"),), dynamic_template_data={"name": "A&B"})
    out = render_one(0, p)
    assert out.subject == "Hi A&B"
    assert [(c.type, c.value) for c in out.content] == [("text/plain", "A&amp;B"), ("text/html", "<p>A&amp;B</p>")]
    failing = renderer("d-2", "", "{{xs.first}}", "")
    with pytest.raises(MailSendError) as caught:
        failing(3, Personalization(to=(Address("a@example.com"),), dynamic_template_data={"xs": [1]}))
    [error] = caught.value.errors
    assert error.field == "template_id" and "personalizations.3" in error.message
