"""`acpd answer` and the questions in `acpd show`: an agent's form filled in from
FIELD=VALUE words, typed as the form wants them."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.cli import views
from daemon.cli.questions import form_content
from tests.cli.fakeserver import conv, serving
from tests.cli.test_everyday import acpd

FORM = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "who you are"},
        "count": {"type": "integer"},
        "ratio": {"type": "number"},
        "sure": {"type": "boolean"},
        "color": {"type": "string", "enum": ["red", "blue"]},
        "tags": {"type": "array"},
    },
    "required": ["name"],
}


def _question(request: str = "e5-1", **extra: Any) -> dict[str, Any]:
    return {"request": request, "message": "Who?", "mode": "form", "schema": FORM, **extra}


def _asked(*questions: dict[str, Any]) -> dict[str, Any]:
    return {
        "conversations/get": lambda c, p: {
            "conversation": conv("k3x9full", short_id="k3x9", questions=list(questions))
        },
        "elicitations/respond": lambda c, p: {},
    }


def test_fields_are_typed_as_the_form_wants() -> None:
    words = ["name=Ada", "count=3", "ratio=0.5", "sure=yes", "color=blue", "tags=a, b"]
    assert form_content(_question(), words) == {
        "name": "Ada", "count": 3, "ratio": 0.5, "sure": True, "color": "blue", "tags": ["a", "b"],
    }  # fmt: skip
    for bad, said in [
        ("count=three", "count: 'three' is not a integer"),
        ("sure=maybe", "sure: 'maybe' is not true or false"),
        ("age=3", "age: not a field of this form"),
        ("name", "'name': give FIELD=VALUE"),
    ]:
        with pytest.raises(ValueError, match=said):
            form_content(_question(), [bad])
    assert form_content(None, ["x=1"]) == {"x": "1"}  # no form to go by: as given


def test_answer_the_only_open_question(capsys: pytest.CaptureFixture[str]) -> None:
    with serving(_asked(_question())) as server:
        code, out, err = acpd(
            capsys, "answer", "k3x9", "name=Ada", "count=2", "--socket", server.path
        )
        assert (code, out, err) == (0, "answered e5-1: accept\n", "")
        assert server.requests[-1] == (
            "elicitations/respond",
            {"id": "k3x9full", "request": "e5-1", "action": "accept",
             "content": {"name": "Ada", "count": 2}},
        )  # fmt: skip
        code, out, _ = acpd(capsys, "answer", "k3x9", "--decline", "--socket", server.path)
        assert (code, out) == (0, "answered e5-1: decline\n")
        assert server.requests[-1][1] == {"id": "k3x9full", "request": "e5-1", "action": "decline"}
        code, _, err = acpd(capsys, "answer", "k3x9", "count=x", "--socket", server.path)
        assert (code, err) == (2, "acpd: error: count: 'x' is not a integer\n")
        code, _, err = acpd(capsys, "answer", "k3x9", "a=1", "--cancel", "--socket", server.path)
        assert (code, err) == (2, "acpd: error: fields go with --accept only\n")


def test_answer_names_the_open_questions_when_it_cannot_choose(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with serving(_asked(_question("e5-1"), _question("e5-2", message="Where?"))) as server:
        code, _, err = acpd(capsys, "answer", "k3x9", "name=x", "--socket", server.path)
        assert code == 1
        assert err.startswith("acpd: error: 2 questions are open in k3x9: e5-1 (Who?), e5-2")
        code, out, _ = acpd(capsys, "answer", "k3x9", "e5-2", "--decline", "--socket", server.path)
        assert (code, out) == (0, "answered e5-2: decline\n")
    with serving(_asked()) as server:
        code, _, err = acpd(capsys, "answer", "k3x9", "--cancel", "--socket", server.path)
    assert (code, err) == (1, "acpd: error: no question is open in k3x9\n")


def test_show_lists_the_open_questions_with_their_fields() -> None:
    shown = views.conversation(
        {"conversation": conv(short_id="c0ff", questions=[_question(deadline="2025-01-02T03:09Z")])}
    )
    assert shown.splitlines()[-9:] == [
        "? question e5-1: Who?",
        "    name (string, required): who you are",
        "    count (integer, optional)",
        "    ratio (number, optional)",
        "    sure (boolean, optional)",
        "    color (red | blue, optional)",
        "    tags (array, optional)",
        "    answered by itself at 2025-01-02T03:09Z",
        "    answer with: acpd answer c0ff FIELD=VALUE... (or --decline, --cancel)",
    ]
    url = _question(mode="url", url="https://example.test/login", schema=None)
    shown = views.conversation({"conversation": conv(short_id="c0ff", questions=[url])})
    assert "    open: https://example.test/login" in shown.splitlines()
