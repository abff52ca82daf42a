"""One agent's configuration (`AgentConfig`) and the agents every acpd knows (the presets)."""

from __future__ import annotations

import sys
from collections.abc import Mapping

import attrs

from protocol import acp

__all__ = ["AgentConfig", "builtin_agents"]


@attrs.frozen
class AgentConfig:
    """One agent: its argv and what it gets of the environment.

    `env` is set on top of the allow-listed base environment (`daemon.agents._process.agent_env`);
    `pass_env` names variables (or `PREFIX*` patterns) passed through from the daemon's own
    environment, which is how API keys reach an agent without being written in the file.
    In the file, a built-in agent's entry may leave `command` out: it keeps the preset's.
    """

    command: tuple[str, ...] = ()
    env: Mapping[str, str] = attrs.field(factory=dict)
    pass_env: frozenset[str] = frozenset()
    # The authentication method to use (an id of the agent's `authMethods`); "" lets acpd
    # pick one whose variables are set (`daemon.agents.auth`).
    auth: str = ""
    # Method id -> variables it reads, for methods that do not list theirs (ACP `agent`
    # type): one of them set makes the method a candidate. The presets fill this in.
    auth_vars: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)
    # ACP `McpServer`s passed on every session/new, load and resume.
    mcp_servers: tuple[acp.McpServer, ...] = ()

    def over(self, preset: AgentConfig) -> AgentConfig:
        """This file entry merged over a built-in preset: our command, auth and MCP servers if
        given, both `env`s and `auth_vars` (ours win), both `pass_env`s."""
        return AgentConfig(
            command=self.command or preset.command,
            env={**preset.env, **self.env},
            pass_env=preset.pass_env | self.pass_env,
            auth=self.auth or preset.auth,
            auth_vars={**preset.auth_vars, **self.auth_vars},
            mcp_servers=self.mcp_servers or preset.mcp_servers,
        )

    def passed_env(self, environ: Mapping[str, str]) -> dict[str, str]:
        """The variables of `environ` that `pass_env` names."""
        names = {p for p in self.pass_env if not p.endswith("*")}
        prefixes = tuple(p[:-1] for p in self.pass_env if p.endswith("*"))
        return {k: v for k, v in environ.items() if k in names or k.startswith(prefixes)}


def builtin_agents() -> dict[str, AgentConfig]:
    """Agents every acpd knows: the demo agent and presets for the common real ones."""
    return {
        "demo": AgentConfig(command=(sys.executable, "-m", "daemon.agents.demo")),
        "claude": AgentConfig(
            command=("npx", "-y", "@agentclientprotocol/claude-agent-acp"),
            pass_env=frozenset({"ANTHROPIC_*", "CLAUDE_*"}),
        ),
        # codex-acp's `api-key` method reads CODEX_API_KEY, else OPENAI_API_KEY (2.6.0 source);
        # the older @zed-industries/codex-acp lists the same as `env_var` methods itself.
        "codex": AgentConfig(
            command=("npx", "-y", "@agentclientprotocol/codex-acp"),
            pass_env=frozenset({"OPENAI_*", "CODEX_*"}),
            auth_vars={"api-key": ("CODEX_API_KEY", "OPENAI_API_KEY")},
        ),
        # gemini-cli's methods are all of ACP's `agent` type; `gemini-api-key` reads
        # GEMINI_API_KEY (observed with 0.61.0: without it, sessions answer auth required).
        "gemini": AgentConfig(
            command=("npx", "-y", "@google/gemini-cli", "--acp"),
            pass_env=frozenset({"GEMINI_*", "GOOGLE_*"}),
            auth_vars={"gemini-api-key": ("GEMINI_API_KEY",)},
        ),
    }
