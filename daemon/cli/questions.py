"""The agent's questions (elicitations) for people at a terminal: what each asks (its form's
fields, or its link), and a form's answer built from `FIELD=VALUE` words.

Standard library only, like the rest of the CLI.
"""

from __future__ import annotations

TYPE_CHECKING = False  # as in daemon.cli.commands: no `typing` import at run time
if TYPE_CHECKING:
    from typing import Any

__all__ = ["form_content", "question_lines"]

_TRUE = {"true", "yes", "y", "on", "1"}
_FALSE = {"false", "no", "n", "off", "0"}


def _fields(asked: dict[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    schema = (asked or {}).get("schema")
    schema = schema if isinstance(schema, dict) else {}
    props = schema.get("properties")
    required = schema.get("required")
    return (
        props if isinstance(props, dict) else {},
        [r for r in required if isinstance(r, str)] if isinstance(required, list) else [],
    )


def question_lines(asked: dict[str, Any], answer_with: str) -> list[str]:
    """A question as `acpd show` and chat print it: the message, then each field (or the
    link), then how to answer."""
    out = [f"? question {asked.get('request')}: {asked.get('message')}"]
    if asked.get("mode") == "url":
        out.append(f"    open: {asked.get('url')}")
    props, required = _fields(asked)
    for name, field in props.items():
        field = field if isinstance(field, dict) else {}
        kind = str(field.get("type", "string"))
        choices = field.get("enum")
        if isinstance(choices, list):
            kind = " | ".join(map(str, choices))
        need = "required" if name in required else "optional"
        about = field.get("description") or field.get("title") or ""
        out.append(f"    {name} ({kind}, {need})" + (f": {about}" if about else ""))
    if asked.get("deadline"):
        out.append(f"    answered by itself at {asked['deadline']}")
    out.append(f"    {answer_with}")
    return out


def form_content(asked: dict[str, Any] | None, words: list[str]) -> dict[str, Any]:
    """`FIELD=VALUE` words as the form's answer, each value as its field wants it (a number,
    true/false, one of its choices, a comma-separated list). ValueError says what is wrong;
    without the question's form (answered meanwhile), values stay strings."""
    props, _ = _fields(asked)
    content: dict[str, Any] = {}
    for word in words:
        name, eq, value = word.partition("=")
        if not eq or not name:
            raise ValueError(f"{word!r}: give FIELD=VALUE")
        if asked is not None and props and name not in props:
            raise ValueError(f"{name}: not a field of this form ({', '.join(props)})")
        content[name] = _value(name, value, props.get(name))
    return content


def _value(name: str, text: str, field: object) -> object:
    kind = field.get("type") if isinstance(field, dict) else None
    try:
        if kind == "integer":
            return int(text)
        if kind == "number":
            return float(text)
    except ValueError:
        raise ValueError(f"{name}: {text!r} is not a {kind}") from None
    if kind == "boolean":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(f"{name}: {text!r} is not true or false")
    if kind == "array":
        return [part.strip() for part in text.split(",") if part.strip()]
    return text
