"""The environment an agent gets: an allow-list of the daemon's, plus its configured variables.

No trio here: `acpd install-systemd` (a command line that never imports trio) describes the
allow-list in the unit it writes, and the README lists the same (a test holds them together).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

__all__ = ["ENV_NAMES", "ENV_PREFIXES", "agent_env", "allowlist_words"]

_BASICS: Final = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "TERM", "TMPDIR", "SHELL")
# The standard proxy variables (both spellings are in use) and TLS trust roots, which every
# agent that talks to a model API needs behind a corporate proxy.
_PROXIES: Final = tuple(f"{name}_proxy" for name in ("http", "https", "ftp", "all", "no"))
_TLS: Final = ("SSL_CERT_FILE", "SSL_CERT_DIR")
ENV_NAMES: Final = frozenset(_BASICS + _PROXIES + tuple(p.upper() for p in _PROXIES) + _TLS)
ENV_PREFIXES: Final = ("LC_", "XDG_", "NODE_", "npm_config_", "ACPD_DEMO_")
# systemd's per-service variables: an agent that sees them could notify or take over sockets
# in the daemon's name. Removed even if a spec asks for them.
_ENV_DENIED: Final = frozenset({"NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"})
_ENV_DENIED_PREFIXES: Final = ("WATCHDOG_",)


def agent_env(extra: Mapping[str, str], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment an agent gets: an allow-list of `base` (default `os.environ`), then
    `extra`, minus systemd's per-service variables.

    `extra` is the agent's `env` as `Config.all_agents()` resolves it: the variables its
    `pass_env` names (API keys and the like), then the ones its config sets.
    """
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if k in ENV_NAMES or k.startswith(ENV_PREFIXES)}
    env.update(extra)
    return {
        k: v
        for k, v in env.items()
        if k not in _ENV_DENIED and not k.startswith(_ENV_DENIED_PREFIXES)
    }


def allowlist_words() -> list[str]:
    """The allow-list as people read it: names, then `PREFIX*` patterns, then the proxy and TLS
    variables (the unit's comment and the README list exactly these)."""
    proxies = [*_PROXIES, *(p.upper() for p in _PROXIES)]
    return [*_BASICS, *(p + "*" for p in ENV_PREFIXES), *proxies, *_TLS]
