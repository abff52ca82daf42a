"""Which authentication method to use with an agent, and what to tell a person when none works.

Pure decisions (no I/O); `session.open_session` acts on them. ACP.md §4:
- An agent lists `authMethods` in its `initialize` answer. Type `agent` (or no type): the client
  calls `authenticate {methodId}` and the agent does the rest. `terminal`: the user runs the
  agent's own command with extra args in a terminal (never `authenticate`). The legacy
  `env_var` (codex-acp 0.16): `authenticate` works once the listed variables are set in the
  agent's environment.
- Config `[agents.NAME] auth = "ID"` names the method to use. Without it, acpd picks the first
  method (in the agent's order) whose variables are set: an `env_var` method's own `vars` (all
  of them), or for an `agent` method one of those its preset says it reads (`auth_vars`, e.g.
  gemini's `gemini-api-key` reads GEMINI_API_KEY). None: no `authenticate` up front.
- An `agent` method nothing describes is never tried on acpd's own initiative: which one the
  user has set up cannot be known, and some start an interactive login (codex-acp's `chat-gpt`
  opens a browser). The user names it with `auth`; until then the message lists them.
- Anything a person has to fix (no usable method while the agent demands one, a `terminal`
  login, variables missing) is an `AuthProblem` whose one-line message says what to do.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

import attrs

from protocol import acp

__all__ = [
    "AuthProblem",
    "AuthSettings",
    "Needs",
    "choose_method",
    "method_needs",
    "needs_message",
]


@attrs.frozen
class AuthSettings:
    """From the agent's config: `auth` (a method id, "" for none) and `auth_vars` (method id ->
    variables, one of which it needs, for methods that do not list them; presets fill it in)."""

    method: str = ""
    method_vars: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)


class AuthProblem(Exception):
    """Authentication cannot succeed until a person acts; the message (one line) says how."""


@attrs.frozen
class Needs:
    """The variables a method needs: all of them (an `env_var` method's `vars`), or one of
    them (a preset's `auth_vars`: codex-acp's `api-key` reads CODEX_API_KEY or OPENAI_API_KEY)."""

    names: tuple[str, ...]
    all: bool

    def met(self, env: Mapping[str, str]) -> bool:
        found = [bool(env.get(name)) for name in self.names]
        return bool(found) and (all(found) if self.all else any(found))

    def missing(self, env: Mapping[str, str]) -> list[str]:
        return [] if self.met(env) else [n for n in self.names if not env.get(n)]

    def __str__(self) -> str:
        names = self.names
        if len(names) == 1:
            return names[0]
        return ", ".join(names[:-1]) + (" and " if self.all else " or ") + names[-1]


def method_needs(method: acp.AuthMethod, settings: AuthSettings) -> Needs | None:
    """The variables `method` needs set, or None if it does not say (and no preset does)."""
    if method.kind == "env_var":
        names = []
        for var in method.vars or ():
            name = var.get("name") if isinstance(var, dict) else None
            if isinstance(name, str) and name and not var.get("optional"):
                names.append(name)
        return Needs(tuple(names), all=True)
    hinted = settings.method_vars.get(method.id)
    return Needs(tuple(hinted), all=False) if hinted else None


def choose_method(
    methods: Sequence[acp.AuthMethod],
    settings: AuthSettings,
    env: Mapping[str, str],
    *,
    agent: str,
    argv: Sequence[str],
) -> acp.AuthMethod | None:
    """The method to `authenticate` with before the first session call, or None.

    Raises `AuthProblem` when `auth` names a method that cannot work: not offered, a terminal
    login, or one whose variables are not all set.
    """
    if settings.method:
        chosen = next((m for m in methods if m.id == settings.method), None)
        if chosen is None:
            offered = ", ".join(m.id for m in methods) or "none"
            raise AuthProblem(
                f"agents.{agent}.auth = {settings.method!r}, but the agent offers no such "
                f"method (it offers: {offered})"
            )
        if chosen.kind == "terminal":
            raise AuthProblem(f"agent {agent!r} needs a login: {_terminal_hint(chosen, argv)}")
        needs = method_needs(chosen, settings)
        if needs is not None and needs.names and not needs.met(env):
            raise AuthProblem(
                f"agent {agent!r} (auth method {chosen.id}) needs {needs} set in its "
                f"environment (pass_env or env under [agents.{agent}])"
            )
        return chosen
    for method in methods:
        if method.kind not in ("env_var", "agent"):
            continue
        needs = method_needs(method, settings)
        if needs is not None and needs.met(env):
            return method
    return None


def needs_message(
    methods: Sequence[acp.AuthMethod],
    settings: AuthSettings,
    *,
    agent: str,
    argv: Sequence[str],
    tried: str | None = None,
    said: str = "",
) -> str:
    """One line for a person: the agent demands authentication; what would satisfy it."""
    head = f"agent {agent!r} requires authentication"
    if said:
        head += f" ({said})"
    if tried:
        head += f" and did not accept method {tried!r}"
    ways: list[str] = []
    choices: list[str] = []
    for method in methods:
        needs = method_needs(method, settings)
        if method.kind == "terminal":
            ways.append(_terminal_hint(method, argv))
        elif needs is not None and needs.names:
            ways.append(f"set {needs} (method {method.id})")
        elif method.kind == "agent" and method.id != tried:
            choices.append(f"{method.id} ({method.name})" if method.name else method.id)
    if choices:
        ways.append(
            f'choose a method with auth = "ID" under [agents.{agent}]: {", ".join(choices)}'
        )
    if not ways:
        return f"{head}, but offers no authentication method acpd can use"
    return f"{head}: " + "; or ".join(ways)


def _terminal_hint(method: acp.AuthMethod, argv: Sequence[str]) -> str:
    env = method.env if isinstance(method.env, dict) else {}
    words = [*argv, *(method.args or ())] if argv else ["the agent's command", *(method.args or ())]
    prefix = "".join(f"{k}={shlex.quote(v)} " for k, v in env.items())
    command = shlex.join(words) if argv else " ".join(words)
    return f"log in by running `{prefix}{command}` in a terminal (method {method.id})"
