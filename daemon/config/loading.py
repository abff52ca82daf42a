"""Loading: a TOML file to a checked `Config`, with cattrs (errors name the key path).

Done once, at the edge (`load_config`); every problem is a `ConfigError` of one line naming the
key.
"""

from __future__ import annotations

import os
import re
import shlex
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import cattrs
from cattrs.preconf.tomllib import TomllibConverter, make_converter

from daemon.config.agents import builtin_agents
from daemon.config.settings import Config, check_ws_exposure
from protocol import acp

__all__ = ["ConfigError", "default_config_path", "load_config", "parse_config"]

# `NAME`, or `PREFIX*` for every variable whose name starts with PREFIX.
_ENV_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\*?")
# A DNS name (e.g. a tailnet's `box.tail1234.ts.net`) or an IP address, as a browser sends it in
# `Host`, without the port.
_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]+\]")


class ConfigError(Exception):
    """A config file that cannot be used; the message names the file and the key path."""


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
    for key in ("max_crashes", "max_line_bytes", "subscriber_buffer", "max_agents",
                "max_starting"):  # fmt: skip
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
