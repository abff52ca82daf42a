"""Configuration: frozen attrs classes, loaded from TOML with cattrs (errors name the key path).

The classes know nothing about TOML (cattrs `why.md`): loading is an edge concern, done once in
`load_config`. A missing file means the defaults; a broken one is a `ConfigError`.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import attrs
import cattrs
from cattrs.preconf.tomllib import TomllibConverter, make_converter

__all__ = ["AgentConfig", "Config", "ConfigError", "builtin_agents", "load_config"]

PermissionPolicy = Literal["ask", "allow", "deny"]


class ConfigError(Exception):
    """A config file that cannot be used; the message names the file and the key path."""


@attrs.frozen
class AgentConfig:
    command: tuple[str, ...]
    env: Mapping[str, str] = attrs.field(factory=dict)


def builtin_agents() -> dict[str, AgentConfig]:
    """Agents every acpd knows: the demo agent and presets for the common real ones."""
    return {
        "demo": AgentConfig(command=(sys.executable, "-m", "daemon.demo_agent")),
        "claude": AgentConfig(
            command=("npx", "-y", "@agentclientprotocol/claude-agent-acp"),
        ),
        "codex": AgentConfig(command=("npx", "-y", "@zed-industries/codex-acp")),
        "gemini": AgentConfig(command=("gemini", "--acp")),
    }


@attrs.frozen
class Config:
    """Everything tunable. Every timeout and buffer has a bound here (seconds, bytes, items)."""

    agents: Mapping[str, AgentConfig] = attrs.field(factory=dict)
    default_agent: str = "demo"
    # Interrupt: how long a cancelled turn may take to answer before the agent is restarted.
    drain_timeout: float = 5.0
    # A turn with no update from the agent for this long ends with stop reason `timeout`.
    turn_timeout: float = 600.0
    # Spawn + initialize + session/new or session/load.
    start_timeout: float = 60.0
    # SIGTERM to SIGKILL for an agent's process group.
    stop_grace: float = 2.0
    # Unattended permission requests: policy, deadline, and the answer given at the deadline.
    permission_policy: PermissionPolicy = "ask"
    permission_timeout: float = 300.0
    permission_default: Literal["reject", "allow", "cancelled"] = "reject"
    # Agents with no turn, subscriber or pending permission for this long are stopped.
    idle_ttl: float = 900.0
    # Crash handling: this many crashes within crash_window marks the conversation failed.
    max_crashes: int = 3
    crash_window: float = 300.0
    # Graceful stop of the whole daemon (SIGTERM): turns drained and agents stopped within this.
    shutdown_grace: float = 10.0
    # Client side: cap on one request line / frame, and each subscriber's buffer (messages).
    max_line_bytes: int = 4 * 1024 * 1024
    subscriber_buffer: int = 1024
    # Persist the streaming text of a turn at least this often (a crash loses at most this).
    draft_interval: float = 1.0
    # Dashboard listen address ("" disables it).
    ws: str = "127.0.0.1:7421"

    def all_agents(self) -> dict[str, AgentConfig]:
        merged = builtin_agents()
        merged.update(self.agents)
        return merged


def _converter() -> TomllibConverter:
    conv = make_converter(forbid_extra_keys=True)
    # An agent command may be written as one shell-like string or as an argv list.
    conv.register_structure_hook_func(lambda t: t == tuple[str, ...], lambda v, _: _str_tuple(v))
    return conv


def _str_tuple(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        import shlex

        return tuple(shlex.split(value))
    if isinstance(value, list) and all(isinstance(x, str) for x in value):
        return tuple(value)
    raise ValueError("expected a string or a list of strings")


def _validate(cfg: Config) -> None:
    for name, agent in cfg.agents.items():
        if not agent.command:
            raise ValueError(f"agents.{name}.command: must not be empty")
    if cfg.default_agent not in cfg.all_agents():
        raise ValueError(f"default_agent: no agent named {cfg.default_agent!r}")
    for key in ("drain_timeout", "turn_timeout", "start_timeout", "stop_grace",
                "permission_timeout", "idle_ttl", "crash_window", "shutdown_grace",
                "draft_interval"):  # fmt: skip
        if getattr(cfg, key) <= 0:
            raise ValueError(f"{key}: must be positive")
    for key in ("max_crashes", "max_line_bytes", "subscriber_buffer"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"{key}: must be at least 1")


def parse_config(text: str, *, source: str = "<config>") -> Config:
    try:
        cfg: Config = _converter().loads(text, Config)
        _validate(cfg)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except cattrs.BaseValidationError as exc:
        raise ConfigError(f"{source}: " + "; ".join(cattrs.transform_error(exc))) from None
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return cfg


def default_config_path() -> Path:
    if env := os.environ.get("ACPD_CONFIG"):
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "acpd" / "config.toml"


def load_config(path: Path | None = None) -> Config:
    """Load `path` (default: CONTRACT.md's lookup). A missing file means the defaults."""
    path = path or default_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_config(text, source=str(path))
