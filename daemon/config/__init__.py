"""Configuration: frozen attrs classes, loaded from TOML with cattrs (errors name the key path).

The classes know nothing about TOML (cattrs `why.md`): loading is an edge concern, done once in
`load_config`. The default file may be missing (the defaults then); a file named by `--config`
or `$ACPD_CONFIG` must exist. Every problem is a `ConfigError` of one line naming the key.

The package: `settings` (the `Config` class, its defaults and the dashboard's exposure),
`agents` (one agent's config and the built-in presets), `loading` (TOML to a checked `Config`).
Re-exported here: what the rest of acpd imports; the presets and the default path stay in their
modules.
"""

from daemon.config.agents import AgentConfig
from daemon.config.loading import ConfigError, load_config, parse_config
from daemon.config.settings import (
    AGENT_MEMORY,
    MAX_AGENTS,
    Config,
    DashboardExposure,
    check_ws_exposure,
    default_max_agents,
    default_max_starting,
    parse_ws_address,
)

__all__ = [
    "AGENT_MEMORY",
    "MAX_AGENTS",
    "AgentConfig",
    "Config",
    "ConfigError",
    "DashboardExposure",
    "check_ws_exposure",
    "default_max_agents",
    "default_max_starting",
    "load_config",
    "parse_config",
    "parse_ws_address",
]
