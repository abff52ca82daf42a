"""Choosing an authentication method, and the one line a person gets when none works."""

from __future__ import annotations

import msgspec
import pytest

from daemon.agents.auth import (
    AuthProblem,
    AuthSettings,
    choose_method,
    needs_message,
)
from protocol import acp

# What the real agents offered (ACP.md §19, observed again here).
CODEX_016 = msgspec.json.decode(
    b"""[{"id": "chatgpt", "name": "Login with ChatGPT"},
    {"type": "env_var", "id": "codex-api-key", "name": "Use CODEX_API_KEY",
     "vars": [{"name": "CODEX_API_KEY"}]},
    {"type": "env_var", "id": "openai-api-key", "name": "Use OPENAI_API_KEY",
     "vars": [{"name": "OPENAI_API_KEY"}]}]""",
    type=list[acp.AuthMethod],
)
GEMINI = msgspec.json.decode(
    b"""[{"id": "oauth-personal", "name": "Log in with Google"},
    {"id": "gemini-api-key", "name": "Gemini API key",
     "_meta": {"api-key": {"provider": "google"}}},
    {"id": "vertex-ai", "name": "Vertex AI"},
    {"id": "gateway", "name": "AI API Gateway"}]""",
    type=list[acp.AuthMethod],
)
GEMINI_HINTS = AuthSettings(method_vars={"gemini-api-key": ("GEMINI_API_KEY",)})
TERMINAL = acp.AuthMethod(
    id="login", name="Log in", type="terminal", args=["--login"], env={"MODE": "a b"}
)
ARGV = ("npx", "-y", "some-agent")


def choose(methods: list[acp.AuthMethod], settings: AuthSettings, **env: str) -> str | None:
    method = choose_method(methods, settings, env, agent="a", argv=ARGV)
    return method.id if method is not None else None


def test_an_env_var_method_is_chosen_when_its_variables_are_set() -> None:
    assert choose(CODEX_016, AuthSettings(), OPENAI_API_KEY="sk") == "openai-api-key"
    # The agent's order decides between two usable ones.
    assert choose(CODEX_016, AuthSettings(), OPENAI_API_KEY="sk", CODEX_API_KEY="c") == (
        "codex-api-key"
    )
    assert choose(CODEX_016, AuthSettings()) is None
    assert choose(CODEX_016, AuthSettings(), OPENAI_API_KEY="") is None  # empty is unset


def test_an_env_var_method_needs_all_its_variables_but_not_optional_ones() -> None:
    both = acp.AuthMethod(
        id="both",
        type="env_var",
        vars=[{"name": "A"}, {"name": "B"}, {"name": "C", "optional": True}],
    )
    assert choose([both], AuthSettings(), A="1") is None
    assert choose([both], AuthSettings(), A="1", B="2") == "both"


def test_agent_methods_are_chosen_only_through_the_presets_hints() -> None:
    assert choose(GEMINI, AuthSettings(), GEMINI_API_KEY="k") is None
    assert choose(GEMINI, GEMINI_HINTS, GEMINI_API_KEY="k") == "gemini-api-key"
    assert choose(GEMINI, GEMINI_HINTS) is None
    # A hint is "one of these".
    hints = AuthSettings(method_vars={"vertex-ai": ("GOOGLE_API_KEY", "GOOGLE_CLOUD_PROJECT")})
    assert choose(GEMINI, hints, GOOGLE_CLOUD_PROJECT="p") == "vertex-ai"


def test_a_configured_method_is_used_as_named() -> None:
    assert choose(GEMINI, AuthSettings(method="oauth-personal")) == "oauth-personal"
    assert choose(CODEX_016, AuthSettings(method="openai-api-key"), OPENAI_API_KEY="k") == (
        "openai-api-key"
    )


@pytest.mark.parametrize(
    ("methods", "settings", "says"),
    [
        (GEMINI, AuthSettings(method="nope"), "agents.a.auth = 'nope', but the agent offers no "
         "such method (it offers: oauth-personal, gemini-api-key, vertex-ai, gateway)"),
        ([], AuthSettings(method="x"), "it offers: none"),
        (CODEX_016, AuthSettings(method="openai-api-key"), "needs OPENAI_API_KEY set in its "
         "environment (pass_env or env under [agents.a])"),
        ([TERMINAL], AuthSettings(method="login"), "log in by running "
         "`MODE='a b' npx -y some-agent --login` in a terminal (method login)"),
    ],
)  # fmt: skip
def test_a_configured_method_that_cannot_work_is_a_problem_for_a_person(
    methods: list[acp.AuthMethod], settings: AuthSettings, says: str
) -> None:
    with pytest.raises(AuthProblem) as caught:
        choose(methods, settings)
    assert says in str(caught.value)
    assert "\n" not in str(caught.value)


def test_terminal_methods_are_never_chosen_by_themselves() -> None:
    assert choose([TERMINAL], AuthSettings(), MODE="x") is None


def test_the_message_names_every_way_out() -> None:
    line = needs_message(CODEX_016, AuthSettings(), agent="codex", argv=ARGV, said="Auth req")
    assert line == (
        "agent 'codex' requires authentication (Auth req): set CODEX_API_KEY (method "
        "codex-api-key); or set OPENAI_API_KEY (method openai-api-key); or choose a method with "
        'auth = "ID" under [agents.codex]: chatgpt (Login with ChatGPT)'
    )
    line = needs_message(GEMINI, GEMINI_HINTS, agent="gemini", argv=ARGV)
    assert line.startswith("agent 'gemini' requires authentication: set GEMINI_API_KEY (method ")
    assert "oauth-personal (Log in with Google), vertex-ai (Vertex AI), gateway" in line
    hints = AuthSettings(method_vars={"api-key": ("CODEX_API_KEY", "OPENAI_API_KEY")})
    codex_26 = [acp.AuthMethod(id="api-key", name="API Key")]
    assert "set CODEX_API_KEY or OPENAI_API_KEY (method api-key)" in needs_message(
        codex_26, hints, agent="codex", argv=ARGV
    )
    line = needs_message([TERMINAL], AuthSettings(), agent="t", argv=ARGV, tried="x")
    assert line == (
        "agent 't' requires authentication and did not accept method 'x': log in by running "
        "`MODE='a b' npx -y some-agent --login` in a terminal (method login)"
    )
    assert needs_message([], AuthSettings(), agent="t", argv=ARGV) == (
        "agent 't' requires authentication, but offers no authentication method acpd can use"
    )
