"""Configuration: frozen attrs classes, loaded from TOML with cattrs (errors name the key path).

The classes know nothing about TOML (cattrs `why.md`): loading is an edge concern, done once in
`load_config`. The default file may be missing (the defaults then); a file named by `--config`
or `$ACPD_CONFIG` must exist. Every problem is a `ConfigError` of one line naming the key.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import sys
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import attrs
import cattrs
from cattrs.preconf.tomllib import TomllibConverter, make_converter

from protocol import acp

__all__ = [
    "AgentConfig",
    "Config",
    "ConfigError",
    "DashboardExposure",
    "builtin_agents",
    "check_ws_exposure",
    "default_config_path",
    "default_max_agents",
    "load_config",
    "parse_config",
    "parse_ws_address",
]

PermissionPolicy = Literal["ask", "allow", "deny"]

# `NAME`, or `PREFIX*` for every variable whose name starts with PREFIX.
_ENV_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\*?")
# A DNS name (e.g. a tailnet's `box.tail1234.ts.net`) or an IP address, as a browser sends it in
# `Host`, without the port.
_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]+\]")


# What one real agent costs (claude-agent-acp and the claude it runs: 250-400 MB), for the
# default `max_agents`: agents may take half of the machine's memory, at most MAX_AGENTS of them.
AGENT_MEMORY = 400 * 2**20
MAX_AGENTS = 8


def default_max_agents(meminfo: str = "/proc/meminfo") -> int:
    """MAX_AGENTS, or fewer when memory is short: half of MemTotal at AGENT_MEMORY per agent,
    never below 1 (MAX_AGENTS when MemTotal cannot be read)."""
    try:
        with open(meminfo, encoding="ascii") as f:
            total = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))
    except (OSError, ValueError, IndexError, StopIteration):
        return MAX_AGENTS
    return max(1, min(MAX_AGENTS, total // 2 // AGENT_MEMORY))


class ConfigError(Exception):
    """A config file that cannot be used; the message names the file and the key path."""


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


@attrs.frozen
class Config:
    """Everything tunable. Every timeout and buffer has a bound here (seconds, bytes, items)."""

    agents: Mapping[str, AgentConfig] = attrs.field(factory=dict)
    default_agent: str = "demo"
    # Interrupt: how long a cancelled turn may take to answer before the agent is restarted.
    drain_timeout: float = 5.0
    # Steering: how long the agent may take to answer `_session/steering`; after it, the
    # message waits first in line instead.
    steer_timeout: float = 10.0
    # A turn with no update from the agent for this long ends with stop reason `timeout`.
    turn_timeout: float = 600.0
    # Spawn + initialize + session/new or session/load.
    start_timeout: float = 60.0
    # SIGTERM to SIGKILL for an agent's process tree.
    stop_grace: float = 2.0
    # Added to the daemon's nice value for every agent started: a busy agent yields the CPU.
    agent_nice: int = 5
    # Unattended permission requests: policy, deadline, and the answer given at the deadline.
    permission_policy: PermissionPolicy = "ask"
    permission_timeout: float = 300.0
    permission_default: Literal["reject", "allow", "cancelled"] = "reject"
    # Questions from the agent (`elicitation/create`): how long one waits for a person, and
    # the answer given then.
    elicitation_timeout: float = 300.0
    elicitation_default: Literal["cancel", "decline"] = "cancel"
    # Agents with no turn, subscriber or pending permission for this long are stopped.
    idle_ttl: float = 900.0
    # Crash handling: this many crashes within crash_window marks the conversation failed.
    max_crashes: int = 3
    crash_window: float = 300.0
    # Graceful stop of the whole daemon (SIGTERM): turns drained and agents stopped within this.
    shutdown_grace: float = 10.0
    # Agent processes alive at once; a conversation that needs one more waits in line.
    max_agents: int = attrs.field(factory=default_max_agents)
    # Client side: cap on one request line / frame, and each subscriber's buffer (messages).
    max_line_bytes: int = 4 * 1024 * 1024
    subscriber_buffer: int = 1024
    # Persist the streaming text of a turn at least this often (a crash loses at most this).
    draft_interval: float = 1.0
    # Dashboard listen address ("" disables it). A non-loopback one needs TLS (cert + key)
    # or the explicitly unencrypted option, for a VPN; `ws_hosts` are the names it is
    # reached by (e.g. the one in the certificate), besides the address itself.
    ws: str = "127.0.0.1:7421"
    ws_tls_cert: str = ""
    ws_tls_key: str = ""
    ws_plain_http_on_network: bool = False
    ws_hosts: tuple[str, ...] = ()

    def dashboard_exposure(self) -> DashboardExposure:
        return DashboardExposure(
            tls_cert=Path(self.ws_tls_cert).expanduser() if self.ws_tls_cert else None,
            tls_key=Path(self.ws_tls_key).expanduser() if self.ws_tls_key else None,
            plain_http_on_network=self.ws_plain_http_on_network,
            hosts=self.ws_hosts,
        )

    def all_agents(self, environ: Mapping[str, str] | None = None) -> dict[str, AgentConfig]:
        """Every agent as it runs: the presets with the file's entries merged over them, and
        each one's `pass_env` resolved into its `env` from `environ` (default: the daemon's
        environment, read now), with `env` from the file winning."""
        source = os.environ if environ is None else environ
        merged = builtin_agents()
        for name, entry in self.agents.items():
            merged[name] = entry.over(merged[name]) if name in merged else entry
        return {
            name: attrs.evolve(agent, env={**agent.passed_env(source), **agent.env})
            for name, agent in merged.items()
        }


@attrs.frozen
class DashboardExposure:
    """How the dashboard may be served beyond this host (config `ws_*`)."""

    tls_cert: Path | None = None
    tls_key: Path | None = None
    plain_http_on_network: bool = False
    hosts: tuple[str, ...] = ()

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


def parse_ws_address(address: str) -> tuple[str, str, int]:
    """The dashboard's `HOST:PORT` → (IP to bind, host as written in URLs, port). HOST is an
    IP address or `localhost` (bound on 127.0.0.1); whether a non-loopback one may be served
    is `check_ws_exposure`'s to say. Raises ValueError with a message for people."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:7421), got {address!r}")
    ip_text = "127.0.0.1" if host == "localhost" else host.removeprefix("[").removesuffix("]")
    try:
        ip = ipaddress.ip_address(ip_text)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address or localhost") from None
    url_host = host if host == "localhost" else f"[{ip}]" if ip.version == 6 else str(ip)
    return str(ip), url_host, int(port_text)


def check_ws_exposure(address: str, exposure: DashboardExposure) -> None:
    """Refuse a non-loopback dashboard address unless the user chose how it is served: HTTPS
    (a certificate and key) or, on purpose, unencrypted HTTP (e.g. inside a VPN). The token
    alone must not cross a network in clear by accident. Raises ValueError."""
    bind_ip, _, _ = parse_ws_address(address)
    if ipaddress.ip_address(bind_ip).is_loopback:
        return
    if not exposure.tls and not exposure.plain_http_on_network:
        raise ValueError(
            f"{address} is not a loopback address: serving the dashboard on a network needs "
            "ws_tls_cert and ws_tls_key (HTTPS), or ws_plain_http_on_network = true "
            "(unencrypted, only inside a VPN such as a tailnet); see the README"
        )


# --- loading ---------------------------------------------------------------------------------


class _Bad(ValueError):
    """A value of the wrong kind; the message is for people and names no key (the path does)."""


_KINDS = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "dict": "table"}


def _kind(value: object) -> str:
    name = type(value).__name__
    return _KINDS.get(name, name)


def _strict(expected: str, ok: Callable[[object], bool], cast: Callable[[Any], Any]) -> Any:
    """A structure hook taking only values of the right TOML type (cattrs would call `str(1)`)."""

    def hook(value: object, _: object) -> Any:
        if not ok(value):
            raise _Bad(f"expected {expected}, got {_kind(value)} {value!r}")
        return cast(value)

    return hook


def _argv(value: object, _: object) -> tuple[str, ...]:
    # An agent command may be written as one shell-like string or as an argv list.
    if isinstance(value, str):
        try:
            return tuple(shlex.split(value))
        except ValueError as exc:
            raise _Bad(f"cannot split {value!r}: {exc}") from None
    if isinstance(value, list) and all(isinstance(x, str) for x in value):
        return tuple(value)
    raise _Bad(f"expected a string or a list of strings, got {value!r}")


def _names(value: object, _: object) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise _Bad(f"expected a list of variable names, got {value!r}")
    for name in value:
        if not _ENV_PATTERN.fullmatch(name):
            raise _Bad(f"{name!r} is not a variable name or a NAME_PREFIX* pattern")
    return frozenset(value)


_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _auth_vars(value: object, _: object) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict):
        raise _Bad(f"expected a table of method id = [variable names], got {value!r}")
    out: dict[str, tuple[str, ...]] = {}
    for method, names in value.items():
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise _Bad(f"{method}: expected a non-empty list of variable names, got {names!r}")
        for name in names:
            if not _VAR_NAME.fullmatch(name):
                raise _Bad(f"{method}: {name!r} is not a variable name")
        out[method] = tuple(names)
    return out


_MCP_KEYS = frozenset({"name", "type", "command", "args", "env", "url", "headers"})


def _pairs(value: object, what: str) -> list[tuple[str, str]]:
    """`env`/`headers` as a table (`{NAME = "value"}`) or ACP's list of `{name, value}`."""
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list) and all(
        isinstance(x, dict) and set(x) == {"name", "value"} for x in value
    ):
        items = [(x["name"], x["value"]) for x in value]
    else:
        raise _Bad(f"{what}: expected a table of strings or a list of {{name, value}}")
    if not all(isinstance(k, str) and k and isinstance(v, str) for k, v in items):
        raise _Bad(f"{what}: names and values must be strings")
    return items


def _mcp_server(entry: object) -> acp.McpServer:
    if not isinstance(entry, dict):
        raise _Bad(f"expected a table, got {entry!r}")
    if unknown := sorted(set(entry) - _MCP_KEYS):
        raise _Bad(f"unknown key {unknown[0]!r}")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise _Bad("name: required, a non-empty string")
    kind = entry.get("type", "stdio")
    if kind not in ("stdio", "http", "sse"):
        raise _Bad(f"type: expected 'stdio', 'http' or 'sse', got {kind!r}")
    if kind == "stdio":
        if stray := sorted({"url", "headers"} & set(entry)):
            raise _Bad(f"{stray[0]}: only for http and sse servers")
        command, args = entry.get("command"), entry.get("args", [])
        if not isinstance(command, str) or not command:
            raise _Bad("command: required for a stdio server, a non-empty string")
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise _Bad("args: expected a list of strings")
        env = [acp.EnvVariable(name=k, value=v) for k, v in _pairs(entry.get("env", {}), "env")]
        return acp.McpServerStdio(name=name, command=command, args=args, env=env)
    if stray := sorted({"command", "args", "env"} & set(entry)):
        raise _Bad(f"{stray[0]}: only for stdio servers")
    url = entry.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise _Bad(f"url: required for an {kind} server, an http:// or https:// URL")
    headers = [
        acp.HttpHeader(name=k, value=v) for k, v in _pairs(entry.get("headers", {}), "headers")
    ]
    if kind == "http":
        return acp.McpServerHttp(name=name, url=url, headers=headers)
    return acp.McpServerSse(name=name, url=url, headers=headers)


def _mcp_servers(value: object, _: object) -> tuple[acp.McpServer, ...]:
    if not isinstance(value, list):
        raise _Bad(f"expected a list of tables, got {value!r}")
    out: list[acp.McpServer] = []
    for i, entry in enumerate(value):
        try:
            server = _mcp_server(entry)
        except _Bad as exc:
            raise _Bad(f"[{i}]: {exc}") from None
        if any(s.name == server.name for s in out):
            raise _Bad(f"[{i}]: another server is named {server.name!r}")
        out.append(server)
    return tuple(out)


def _is_literal(tp: object) -> bool:
    return get_origin(tp) is Literal


def _literal(tp: Any) -> Callable[[object, object], object]:
    allowed = get_args(tp)

    def hook(value: object, _: object) -> object:
        if value not in allowed:
            raise _Bad(f"expected one of {', '.join(map(repr, allowed))}, got {value!r}")
        return value

    return hook


def _converter() -> TomllibConverter:
    conv = make_converter(forbid_extra_keys=True)
    conv.register_structure_hook(str, _strict("a string", lambda v: isinstance(v, str), str))
    conv.register_structure_hook(
        int, _strict("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool), int)
    )
    conv.register_structure_hook(
        float,
        _strict(
            "a number", lambda v: isinstance(v, int | float) and not isinstance(v, bool), float
        ),
    )
    conv.register_structure_hook(bool, _strict("a boolean", lambda v: isinstance(v, bool), bool))
    conv.register_structure_hook_func(lambda t: t == tuple[str, ...], _argv)
    conv.register_structure_hook_func(lambda t: t == frozenset[str], _names)
    conv.register_structure_hook_func(lambda t: t == Mapping[str, tuple[str, ...]], _auth_vars)
    conv.register_structure_hook_func(lambda t: t == tuple[acp.McpServer, ...], _mcp_servers)
    conv.register_structure_hook_factory(_is_literal, _literal)
    return conv


def _key_path(path: str) -> str:
    """cattrs' `$.agents['claude'].command` as `agents.claude.command`."""
    path = re.sub(r"\['((?:[^'\\]|\\.)*)'\]", r".\1", path.removeprefix("$"))
    return re.sub(r"\[(\d+)\]", r"[\1]", path).lstrip(".")


_EXTRA = "\0extra:"


def _format(exc: BaseException, tp: type | None) -> str:
    if isinstance(exc, _Bad):
        return str(exc)
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):  # spelled out per key by `_messages`
        return _EXTRA + "\n".join(sorted(exc.extra_fields))
    if isinstance(exc, KeyError):
        return "required key missing"
    if isinstance(exc, AttributeError | TypeError):
        return "expected a table" if "items" in str(exc) else f"wrong type ({exc})"
    return cattrs.v.format_exception(exc, tp)


def _messages(exc: cattrs.BaseValidationError) -> list[str]:
    out = []
    for line in cattrs.transform_error(exc, format_exception=_format):
        message, _, path = line.rpartition(" @ ")
        key = _key_path(path)
        if message.startswith(_EXTRA):
            names = message.removeprefix(_EXTRA).split("\n")
            out += [f"{key + '.' if key else ''}{name}: unknown key" for name in names]
            continue
        if message.startswith("[") and key:  # a list entry's own path: `mcp_servers[1]: …`
            out.append(f"{key}{message}")
            continue
        out.append(f"{key}: {message}" if key else message)
    return out


def _validate(cfg: Config) -> None:
    builtin = builtin_agents()
    for name, agent in cfg.agents.items():
        if not agent.command and name not in builtin:
            raise ValueError(f"agents.{name}.command: required ({name!r} is not a built-in agent)")
    if cfg.default_agent not in cfg.all_agents({}):
        known = ", ".join(sorted(cfg.all_agents({})))
        raise ValueError(f"default_agent: no agent named {cfg.default_agent!r} (known: {known})")
    for key in ("drain_timeout", "steer_timeout", "turn_timeout", "start_timeout", "stop_grace",
                "permission_timeout", "elicitation_timeout", "idle_ttl", "crash_window",
                "shutdown_grace", "draft_interval"):  # fmt: skip
        if getattr(cfg, key) <= 0:
            raise ValueError(f"{key}: must be positive")
    for key in ("max_crashes", "max_line_bytes", "subscriber_buffer", "max_agents"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"{key}: must be at least 1")
    if not 0 <= cfg.agent_nice <= 19:  # raising priority (below 0) needs privileges
        raise ValueError("agent_nice: must be from 0 to 19")
    exposure = cfg.dashboard_exposure()
    if bool(cfg.ws_tls_cert) != bool(cfg.ws_tls_key):
        raise ValueError(
            "ws_tls_cert, ws_tls_key: give both (a certificate and its key) or neither"
        )
    for key in ("ws_tls_cert", "ws_tls_key"):
        if getattr(cfg, key) and not getattr(exposure, key.removeprefix("ws_")).is_absolute():
            raise ValueError(f"{key}: must be an absolute path (or start with ~)")
    if exposure.tls and exposure.plain_http_on_network:
        raise ValueError(
            "ws_plain_http_on_network: not with ws_tls_cert (HTTPS is served); choose one"
        )
    for name in cfg.ws_hosts:
        if not _HOST_NAME.fullmatch(name):
            raise ValueError(f"ws_hosts: {name!r} is not a host name (no port, no scheme)")
    if cfg.ws:
        try:
            check_ws_exposure(cfg.ws, exposure)
        except ValueError as exc:
            raise ValueError(f'ws: {exc} (ws = "" turns the dashboard off)') from None


def parse_config(text: str, *, source: str = "<config>") -> Config:
    try:
        cfg: Config = _converter().loads(text, Config)
        _validate(cfg)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except cattrs.BaseValidationError as exc:
        raise ConfigError(f"{source}: " + "; ".join(_messages(exc))) from None
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return cfg


def default_config_path() -> Path:
    if env := os.environ.get("ACPD_CONFIG"):
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "acpd" / "config.toml"


def load_config(path: Path | None = None) -> Config:
    """Load `path`, else CONTRACT.md's lookup. Only the default file may be missing (the
    defaults then): one named by `--config` or `$ACPD_CONFIG` must exist."""
    explicit = path is not None or bool(os.environ.get("ACPD_CONFIG"))
    path = path or default_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{path}: no such config file") from None
        return Config()
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_config(text, source=str(path))
