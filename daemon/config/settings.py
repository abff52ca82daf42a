"""Everything tunable: the `Config` class with its defaults, and how the dashboard may be
served beyond this host (`DashboardExposure`, the `ws` address's checks)."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import attrs

from daemon.config.agents import AgentConfig, builtin_agents

__all__ = [
    "AGENT_MEMORY",
    "MAX_AGENTS",
    "Config",
    "DashboardExposure",
    "PermissionPolicy",
    "check_ws_exposure",
    "default_max_agents",
    "default_max_starting",
    "parse_ws_address",
]

PermissionPolicy = Literal["ask", "allow", "deny"]


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


def default_max_starting() -> int:
    """Agent start-ups at once: the CPUs acpd may run on, at least 2 (a start-up also waits
    for its agent's answers, not only for a CPU)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    return max(2, cpus)


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
    # Agents in start-up (spawn to session set up) at once; more wait in line, `starting`.
    max_starting: int = attrs.field(factory=default_max_starting)
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
