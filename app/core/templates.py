"""Message templates, compiled and rendered: user input, so Jinja2's sandbox, and strict — a missing
variable fails that one delivery with a clear reason instead of sending a half-filled message. The API
compiles them when a sequence is saved (compile_template) and the worker renders them at send
(render_message), in the same sandbox and through the same cache."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

# GSM 03.38: the basic set (one septet each) and the extension set (escape + septet: two each).
GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = set("^{}\\[~]|€\f")

PREVIEW_UNSUBSCRIBE_URL = "https://example.invalid/unsubscribe"  # a preview has no delivery to sign one for
MAX_REPEAT = 10_000  # "x" * n and n ** m beyond this are refused: a template must not eat the worker's memory


class LimitedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox (no attribute tricks, no mutation, bounded range) plus bounds on * and **."""

    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context, operator, left, right):
        if operator == "*" and any(isinstance(v, str | list | tuple) for v in (left, right)):
            sequence, count = (left, right) if isinstance(left, str | list | tuple) else (right, left)
            if isinstance(count, int) and count > MAX_REPEAT:
                raise RenderError(f"repeating a value {count} times is not allowed (at most {MAX_REPEAT})")
            if isinstance(count, int) and len(sequence) * count > MAX_OUTPUT_CHARS:  # ('x' * 9999) * 9999
                raise RenderError(f"a repeated value may not grow past {MAX_OUTPUT_CHARS} items")
        if operator == "**" and isinstance(right, int) and right > 64:
            raise RenderError("exponents above 64 are not allowed")
        return super().call_binop(context, operator, left, right)


def _blank_for_none(value: Any) -> Any:
    """A contact field that is known but empty (first_name null) prints as nothing, never as "None"."""
    return "" if value is None else value


def _default(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    """Jinja's `default`, except that null counts as missing: `{{ contact.first_name | default("there") }}`
    greets "there" when the first name is null, which is what a user writing it means."""
    if value is None or isinstance(value, Undefined) or (boolean and not value):
        return default_value
    return value


# What one render may cost: range() items over all its loops (nested ones multiply: each inner range is
# charged again), and characters of output. Past either, that message fails with the reason.
MAX_RANGE_ITEMS = 100_000
MAX_OUTPUT_CHARS = 1_000_000
_range_left: ContextVar[int] = ContextVar("drumbeat_template_range_left", default=MAX_RANGE_ITEMS)


def _charged_range(*args: int) -> range:
    """Jinja's range(), charged to the render's budget."""
    items = range(*args)
    left = _range_left.get() - len(items)
    if left < 0:
        raise RenderError(f"loops may take at most {MAX_RANGE_ITEMS} range() items in one message")
    _range_left.set(left)
    return items


def _environment_for(*, autoescape: bool) -> LimitedSandbox:
    environment = LimitedSandbox(undefined=StrictUndefined, autoescape=autoescape, finalize=_blank_for_none)
    environment.filters["default"] = environment.filters["d"] = _default
    environment.globals["range"] = _charged_range
    return environment


_environment = _environment_for(autoescape=False)
_html_environment = _environment_for(autoescape=True)


# What a message template may name: the dispatcher's context (claim_messages, sql/functions/dispatch.sql)
# and the worker's unsubscribe_url. For each, the members it has; None: not checked (a plain value).
TEMPLATE_VARIABLES: dict[str, frozenset[str] | None] = {
    "contact": frozenset(
        {"id", "phone", "email", "first_name", "last_name", "company", "title", "timezone", "fields", "tags"}
    ),
    "sender": frozenset({"id", "address", "name"}),
    "sequence": frozenset({"id", "name"}),
    "workspace": frozenset({"id", "name"}),
    "enrollment": frozenset({"id", "metadata", "enrolled_at", "assigned_to"}),
    "unsubscribe_url": None,
}


class RenderError(ValueError):
    """A template that cannot be rendered for this recipient; the message says which part and why."""


@dataclass(frozen=True)
class Rendered:
    subject: str | None
    text: str
    html: str | None


@lru_cache(maxsize=2048)
def _compiled(template: str, html: bool):
    """Compiling is most of the cost of rendering; a batch renders the same few templates hundreds of times."""
    return (_html_environment if html else _environment).from_string(template)


def compile_template(template: str, *, html: bool = False) -> None:
    """Check that a template compiles in the sandbox the worker renders with (at save, before any send) and
    names only variables a message has (a typo such as contact.frist_name would fail every send); RenderError
    says why not, with the line. Compiled templates stay cached for the worker."""
    try:
        _compiled(template, html)
    except Exception as error:  # user input: a syntax error, or anything the compiler meets (deep nesting)
        message = getattr(error, "message", None) or str(error) or type(error).__name__
        line = getattr(error, "lineno", None)
        raise RenderError(
            f"template does not compile: {message}" + (f" (line {line})" if line else "")
        ) from None
    check_variables((_html_environment if html else _environment).parse(template))


def check_variables(template: nodes.Template) -> None:
    """Every name the template reads from the message's context is one of TEMPLATE_VARIABLES, and every
    member it reads of one (contact.first_name, contact["email"]) is one that variable has. Names the
    template sets itself ({% set %}, {% for %}) are its own; members of free-form values (contact.fields,
    enrollment.metadata) are not checked."""
    context_names = meta.find_undeclared_variables(template)
    for name in sorted(context_names - TEMPLATE_VARIABLES.keys()):
        line = next(n.lineno for n in template.find_all(nodes.Name) if n.name == name)
        known = ", ".join(sorted(TEMPLATE_VARIABLES))
        raise RenderError(f"unknown variable {name!r} (line {line}): a message template may use {known}")
    exempt = _exempt_lookups(template)
    for node in template.find_all((nodes.Getattr, nodes.Getitem)):
        root, member = node.node, _member_name(node)
        if id(node) in exempt or not (isinstance(root, nodes.Name) and root.name in context_names and member):
            continue
        members = TEMPLATE_VARIABLES[root.name]
        if members is not None and member not in members:
            raise RenderError(
                f"unknown variable {root.name}.{member} (line {node.lineno}): {root.name} has "
                + ", ".join(sorted(members))
            )


def _exempt_lookups(template: nodes.Template) -> set[int]:
    """Member look-ups that may name what a variable lacks: every look-up of a member the template tests
    (`{% if contact.nickname is defined %}{{ contact.nickname }}`), and the mapping methods it calls
    (`contact.get("nickname", "")`)."""
    lookups = list(template.find_all((nodes.Getattr, nodes.Getitem)))
    tested = {
        _lookup_key(t.node) for t in template.find_all(nodes.Test) if t.name in ("defined", "undefined")
    }
    exempt = {id(node) for node in lookups if _lookup_key(node) in tested - {None}}
    exempt |= {
        id(call.node)
        for call in template.find_all(nodes.Call)
        if isinstance(call.node, nodes.Getattr) and call.node.attr in ("get", "items", "keys", "values")
    }
    return exempt


def _lookup_key(node: nodes.Node) -> tuple[str, str] | None:
    """(variable, member) of a look-up such as contact.nickname or contact["nickname"]; None for others."""
    if isinstance(node, nodes.Getattr | nodes.Getitem) and isinstance(node.node, nodes.Name):
        member = _member_name(node)
        return (node.node.name, member) if member else None
    return None


def _member_name(node: nodes.Getattr | nodes.Getitem) -> str | None:
    if isinstance(node, nodes.Getattr):
        return node.attr
    key = node.arg
    return key.value if isinstance(key, nodes.Const) and isinstance(key.value, str) else None


def _render(template: str | None, context: dict[str, Any], part: str, *, html: bool = False) -> str | None:
    if template is None:
        return None
    budget = _range_left.set(MAX_RANGE_ITEMS)
    try:
        return _bounded_output(_compiled(template, html).generate(context))
    except TemplateError as error:
        raise RenderError(f"{part}: {error.message or error}") from error
    except (
        Exception
    ) as error:  # user input: anything it raises (1/0, a too-big range) fails this message only
        raise RenderError(f"{part}: {error}") from error
    finally:
        _range_left.reset(budget)


def _bounded_output(pieces: Iterator[str]) -> str:
    """The rendered pieces joined, or RenderError once they pass MAX_OUTPUT_CHARS (the render stops there)."""
    out, size = [], 0
    for piece in pieces:
        size += len(piece)
        if size > MAX_OUTPUT_CHARS:
            raise RenderError(f"the rendered text is longer than {MAX_OUTPUT_CHARS} characters")
        out.append(piece)
    return "".join(out)


def render_message(
    subject: str | None, body: str, html_body: str | None, context: dict[str, Any]
) -> Rendered:
    """Render every part of one message for one recipient, or raise RenderError naming the part."""
    return Rendered(
        subject=_render(subject, context, "subject"),
        text=_render(body, context, "body") or "",
        html=_render(html_body, context, "html_body", html=True),
    )


def render_text(template: str | None, context: dict[str, Any]) -> str | None:
    """A text for a person (a task's description) rendered like a message, or as written when it does not
    render: the rep had better see the template than nothing."""
    if not template:
        return template
    try:
        return _render(template, context, "text")
    except RenderError:
        return template


def sms_encoding(text: str) -> str:
    """ "GSM-7" when every character is in the GSM 03.38 sets, else "UCS-2" (one emoji or curly quote does it)."""
    return "GSM-7" if all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text) else "UCS-2"


def sms_segments(text: str) -> int:
    """How many SMS segments a text costs: GSM-7 when every character fits (160 per single message,
    153 per part of a long one; extension characters count twice), else UCS-2 (70, then 67 UTF-16 units)."""
    if sms_encoding(text) == "GSM-7":
        septets = sum(2 if ch in GSM7_EXTENSION else 1 for ch in text)
        return 1 if septets <= 160 else math.ceil(septets / 153)
    units = len(text.encode("utf-16-le")) // 2
    return 1 if units <= 70 else math.ceil(units / 67)
