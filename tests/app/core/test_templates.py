import re

import pytest

from app.core.templates import RenderError, compile_template, render_message, sms_encoding, sms_segments

CONTEXT = {
    "contact": {"first_name": "Ada", "fields": {"plan": "pro"}},
    "sender": {"name": "Sam"},
    "unsubscribe_url": "https://x.test/u/abc",
}


def test_renders_every_part():
    rendered = render_message(
        "Hi {{ contact.first_name }}",
        "Plan: {{ contact.fields.plan }}",
        "<p>{{ contact.first_name }} & {{ sender.name }}</p>",
        CONTEXT,
    )
    assert (rendered.subject, rendered.text) == ("Hi Ada", "Plan: pro")
    assert rendered.html == "<p>Ada & Sam</p>"  # the template's own markup stays


def test_html_escapes_contact_data():
    rendered = render_message(
        None, "x", "<p>{{ contact.first_name }}</p>", {"contact": {"first_name": "<script>alert(1)</script>"}}
    )
    assert "<script>" not in rendered.html


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("Hi {{ contact.first_name }}!", "Hi !"),
        ("Hi {{ contact.first_name | default('there') }}!", "Hi there!"),
        ("Hi {{ contact.first_name | d('there') }}!", "Hi there!"),
        ("Hi {{ contact.nickname | default('there') }}!", "Hi there!"),  # absent, not only null
        ("Hi {{ contact.company | default('there', true) }}!", "Hi there!"),  # '' counts with boolean=true
        ("Hi {{ contact.company | default('there') }}!", "Hi !"),  # '' is a value without it, as in Jinja
        ("{{ contact.fields.plan | default('free') }}", "free"),
        ("{% set name = contact.first_name %}{{ name }}.", "."),
    ],
)
def test_a_missing_value_is_empty_or_its_default_never_none(body, expected):
    context = {"contact": {"first_name": None, "company": "", "fields": {"plan": None}}}
    rendered = render_message("{{ contact.first_name }}", body, "<p>{{ contact.first_name }}</p>", context)
    assert (rendered.subject, rendered.text, rendered.html) == ("", expected, "<p></p>")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("Hi {{ contact.last_name }}", "has no attribute 'last_name'"),
        ("{{ contact.__class__.__mro__ }}", "unsafe"),
        ("{% for x in range(3) %}", "endfor"),
        ("{{ range(10**9) | list }}", "at most 100000 range() items"),
        ("{{ 'x' * 100000000 }}", "at most 10000"),
        ("{{ 2 ** 100000 }}", "exponents above 64"),
        ("{{ 1 / 0 }}", "division by zero"),
    ],
)
def test_bad_templates_fail_with_a_reason(body, reason):
    with pytest.raises(RenderError) as caught:
        render_message(None, body, None, CONTEXT)
    assert str(caught.value).startswith("body: ")
    assert reason in str(caught.value)


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),
        ("€" * 81, 2),  # extension characters take two septets
        ("é" * 160, 1),  # é is in GSM-7
        ("ł" * 70, 1),
        ("ł" * 71, 2),
        ("ł" * 134, 2),
        ("ł" * 135, 3),  # UCS-2
        ("👋" * 35, 1),
        ("👋" * 36, 2),  # an emoji is two UTF-16 units
    ],
)
def test_sms_segments(text, segments):
    assert sms_segments(text) == segments


@pytest.mark.parametrize(
    "template",
    [
        "{% for tag in contact.tags %}{{ tag }}{% if not loop.last %}, {% endif %}{% endfor %}",
        "{% set greeting = contact.first_name | default('there') %}Hi {{ greeting }}",
        "{{ contact['email'] }} {{ contact.fields.plan }} {{ enrollment.metadata.deal.stage }}",
        "{{ sender.name }} at {{ workspace.name }}, {{ sequence.name }}: {{ unsubscribe_url }}",
        "{% for i in range(3) %}{{ i }}{% endfor %}{% set ns = namespace(n=0) %}{{ ns.n }}",
        "{% if contact.nickname is defined %}{{ contact.nickname }}{% endif %}",  # tested before it is used
        "{{ contact.get('nickname', 'there') }}{% for k, v in contact.items() %}{{ k }}{% endfor %}",
        "{% with n = contact.first_name %}{{ n }}{% endwith %}{% macro hi(x) %}{{ x }}{% endmacro %}{{ hi(1) }}",
    ],
)
def test_loops_sets_and_every_context_variable_are_accepted_at_save(template):
    compile_template(template)
    compile_template(template, html=True)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            "Hi {{ contact.frist_name }}",
            "unknown variable contact.frist_name (line 1): contact has company, email",
        ),
        ("Hi\n\n{{ contact['emial'] }}", "unknown variable contact.emial (line 3)"),
        ("{{ first_name }}", "unknown variable 'first_name' (line 1): a message template may use contact,"),
        ("{{ sender.phone }}", "unknown variable sender.phone (line 1): sender has address, id, name"),
        ("{% if x %}{% endif %}", "unknown variable 'x'"),
        ("{{ contact.first_name", "template does not compile: unexpected end of template"),
        ("{{ contact.first_name | shout }}", "template does not compile: No filter named 'shout'"),
    ],
)
def test_unknown_variables_and_broken_syntax_are_refused_at_save_with_the_line(template, message):
    with pytest.raises(RenderError, match=re.escape(message)):
        compile_template(template)


@pytest.mark.parametrize(
    ("text", "encoding"), [("Hi Ada, 20€ off", "GSM-7"), ("Hi Ada \u2019s", "UCS-2"), ("👋", "UCS-2")]
)
def test_sms_encoding(text, encoding):
    assert sms_encoding(text) == encoding


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            "{% for a in range(1000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}",
            "at most 100000 range() items",
        ),
        ("{{ ('x' * 9999) * 9999 }}", "may not grow past 1000000"),
        ("{% for a in range(20000) %}{{ 'y' * 100 }}{% endfor %}", "longer than 1000000 characters"),
    ],
)
def test_a_render_has_a_budget_of_loop_items_and_output(body, reason):
    compile_template(body)  # valid: only too costly to render
    with pytest.raises(RenderError, match=re.escape(reason)):
        render_message(None, body, None, CONTEXT)
    # The budget is per render: the next message is unaffected.
    assert render_message(None, "{% for i in range(90000) %}{% endfor %}ok", None, CONTEXT).text == "ok"
