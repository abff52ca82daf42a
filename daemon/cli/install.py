"""`acpd install-systemd`: the user units and their installer.

`render_service`, `render_socket`, `install_units`; the files in the repository's `systemd/`
are `render_service("%h/.local/bin/acpd")` (the default config's TimeoutStopSec=) and
`render_socket()`.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Final, Literal, TextIO

from daemon.agents.environment import allowlist_words
from daemon.config import Config, ConfigError, load_config

__all__ = [
    "InstallError",
    "acpd_command",
    "exec_words",
    "install_units",
    "render_service",
    "render_socket",
    "run_install",
    "stop_timeout",
    "user_unit_dir",
]

# TimeoutStopSec= is shutdown_grace + this: the daemon stops within shutdown_grace however many
# agents run (every agent still running is killed by then); this covers a killed process the
# kernel is slow to reap (up to 5 s), the store's last commit and the interpreter's exit, with
# room to spare. 20 s with the defaults.
STOP_MARGIN_S: Final = 10.0

_SERVICE = """\
# acpd: durable conversations with ACP coding agents, as a systemd user service.
# `acpd install-systemd` writes this file with ExecStart pointing at the acpd that ran it.
# Change settings with `systemctl --user edit acpd`: a drop-in survives reinstalls.

[Unit]
Description=acpd: durable conversations with ACP coding agents
{unit_deps}
[Service]
# READY=1 once the API socket serves, STATUS= with live figures, RELOADING=1/READY=1 around a
# reload, STOPPING=1 at shutdown. Only acpd itself may notify: agents never see NOTIFY_SOCKET.
Type=notify
NotifyAccess=main
ExecStart={command} serve
# SIGHUP re-reads the config; a broken one is reported (status, journal) and the old one kept.
ExecReload=kill -HUP $MAINPID
Restart=on-failure
RestartSec=2s
# The event loop pings every WatchdogSec/2: a wedged daemon is killed and restarted.
WatchdogSec=30s
# SIGTERM stops acpd within shutdown_grace however many agents run: running turns drain, then
# every agent still running gets SIGTERM, and SIGKILL to its whole tree before the end.
# This is shutdown_grace + {margin}s (for a slow reap, the last commit and exit) from the config
# `acpd install-systemd` read; after raising it, run `acpd install-systemd --force` again (a
# reload does not change units).
TimeoutStopSec={timeout_stop}
# SIGTERM to acpd alone, which stops its agents itself, gracefully; SIGKILL for anything left.
KillMode=mixed
# The cgroups below acpd's are acpd's: it moves itself into a `daemon` leaf and puts each agent
# in a cgroup of its own, which it ends with everything in it (cgroup.kill) when the agent
# stops, and after a crash at the next start. Nothing an agent starts outlives it.
Delegate=yes

# Hardening that suits a tool which runs agents on your files. Agents run unattended: no
# privilege gain through setuid programs (sudo, pkexec), no setuid files, no realtime
# scheduling, no personality changes, native system calls only.
NoNewPrivileges=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
LockPersonality=yes
SystemCallArchitectures=native
# Deliberately not set:
# - ProtectSystem=, ProtectHome=, ReadOnlyPaths=: agents edit, build and test your projects
#   wherever they live, and acpd must see the same files as the shell that sent a cwd.
# - PrivateTmp=: the CLI may name a cwd under /tmp, and agents' tools share /tmp with yours.
# - PrivateDevices=, ProtectKernel*=, ProtectControlGroups=: in a user unit they need
#   unprivileged user namespaces, which some systems disable, and the service would not start.
# - MemoryDenyWriteExecute=: Node-based agents (claude, codex, gemini) need a JIT.
# - RestrictNamespaces=: agents' own sandboxes (bubblewrap for Claude Code's, Chromium's) and
#   the tools they run (rootless podman, unshare) create namespaces; forbidding it would make
#   agents less contained, not more.
# - UMask=: files agents create should get your usual permissions; acpd sets its own modes.

{allowlist}
EnvironmentFile=-%E/acpd/environment

[Install]
WantedBy=default.target
{install_also}"""

_SOCKET = """\
# acpd's API socket: systemd listens, and starts acpd.service on the first connection.
# `acpd install-systemd` writes this file; the path is the CLI's default socket. Enable it
# together with acpd.service: the service starts at login (and recovers queued messages), and
# the socket starts it again on the next connection after a crash or a `stop`.

[Unit]
Description=acpd API socket

[Socket]
ListenStream=%t/acpd/acpd.sock
SocketMode=0600
DirectoryMode=0700
RemoveOnStop=yes
FileDescriptorName=api
Service=acpd.service

[Install]
WantedBy=sockets.target
"""


class InstallError(Exception):
    """The units cannot be installed as asked; one line for the user."""


def stop_timeout(config: Config) -> int:
    """TimeoutStopSec= in seconds for `config`: above the daemon's own graceful-stop bound
    (`shutdown_grace`, every agent included), so that systemd's SIGKILL only ever meets a
    daemon that is stuck, not one that is still stopping."""
    return math.ceil(config.shutdown_grace + STOP_MARGIN_S)


def _allowlist_comment() -> str:
    """Comment lines: which of the service's variables agents see (as the README lists them)."""
    import textwrap

    text = (
        "Agents get an allow-list of this environment: " + ", ".join(allowlist_words()) + ", "
        "plus the variables each agent's pass_env names. Your own settings (KEY=value lines, "
        "e.g. API keys, a PATH that finds npx or gemini) go in the optional file."
    )
    return "\n".join("# " + line for line in textwrap.wrap(text, 93, break_on_hyphens=False))


def render_service(command: str, *, socket: bool = True, config: Config | None = None) -> str:
    """acpd.service with `ExecStart={command} serve` (`command` is already in systemd's
    syntax: see `exec_words`) and TimeoutStopSec= from `config` (default: the defaults).
    With `socket`, it requires acpd.socket and enabling the service enables the socket too."""
    return _SERVICE.format(
        command=command,
        margin=f"{STOP_MARGIN_S:g}",
        timeout_stop=f"{stop_timeout(Config() if config is None else config)}s",
        unit_deps="Requires=acpd.socket\nAfter=acpd.socket\n" if socket else "",
        install_also="Also=acpd.socket\n" if socket else "",
        allowlist=_allowlist_comment(),
    )


def render_socket() -> str:
    return _SOCKET


_PLAIN_WORD = re.compile(r"[\w@%$+=:,./-]+")


def exec_words(argv: list[str]) -> str:
    """`argv` as an ExecStart= command line: `%` and `$` escaped (systemd would expand them),
    words with other characters double-quoted."""
    words = []
    for arg in argv:
        if "\n" in arg or "\0" in arg:
            raise InstallError(f"cannot put {arg!r} on an ExecStart= line")
        word = arg.replace("%", "%%").replace("$", "$$")
        if not _PLAIN_WORD.fullmatch(word):
            word = '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
        words.append(word)
    return " ".join(words)


def acpd_command(argv0: str | None = None) -> list[str]:
    """How systemd should start this acpd: the running `acpd` script's absolute path, or
    `python -m daemon.cli` with this interpreter (run from a checkout, or as a module)."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    path = os.path.abspath(argv0) if argv0 else ""
    if os.path.basename(path) == "acpd" and os.path.isfile(path) and os.access(path, os.X_OK):
        return [path]
    # Not resolved: a venv's python is a symlink, and only the link's path selects the venv.
    return [os.path.abspath(sys.executable), "-m", "daemon.cli"]


def user_unit_dir(environ: Mapping[str, str] | None = None) -> Path:
    """`$XDG_CONFIG_HOME/systemd/user`, else `~/.config/systemd/user`."""
    config = (os.environ if environ is None else environ).get("XDG_CONFIG_HOME", "")
    base = Path(config) if os.path.isabs(config) else Path.home() / ".config"
    return base / "systemd" / "user"


Action = Literal["write", "unchanged", "conflict"]


def install_units(
    directory: Path,
    command: list[str],
    *,
    socket: bool = True,
    force: bool = False,
    dry_run: bool = False,
    config: Config | None = None,
) -> list[tuple[Path, str, Action]]:
    """Write acpd.service (and acpd.socket) into `directory`; returns each unit's path, text
    and what happened to it. A unit that exists with other text is a conflict: nothing at all
    is written unless `force`. Writes are atomic (temporary file, then rename)."""
    service = render_service(exec_words(command), socket=socket, config=config)
    units = {"acpd.service": service}
    if socket:
        units["acpd.socket"] = render_socket()
    plan: list[tuple[Path, str, Action]] = []
    for name, text in units.items():
        path = directory / name
        try:
            old: str | None = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            old = None
        except OSError as exc:
            raise InstallError(f"cannot read {path}: {exc.strerror}") from None
        action: Action = "unchanged" if old == text else "write"
        if old is not None and old != text and not force:
            action = "conflict"
        plan.append((path, text, action))
    if dry_run or any(action == "conflict" for _, _, action in plan):
        return plan
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for path, text, action in plan:
            if action == "write":
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                tmp.write_text(text, encoding="utf-8")
                os.replace(tmp, path)
    except OSError as exc:
        raise InstallError(f"cannot write {exc.filename or directory}: {exc.strerror}") from None
    return plan


def run_install(
    out: TextIO,
    *,
    socket: bool,
    force: bool,
    dry_run: bool,
    directory: Path | None = None,
    command: list[str] | None = None,
    config: Config | None = None,
) -> int:
    """`acpd install-systemd`: install (or show) the units, then say how to enable them.

    TimeoutStopSec= follows `config` (default: the config file `acpd serve` reads by default).
    Raises `InstallError` when a unit that differs is in the way, or the config is broken.
    """
    directory = user_unit_dir() if directory is None else directory
    if config is None:
        try:
            config = load_config()
        except ConfigError as exc:
            raise InstallError(f"{exc} (fix it first: the service would not start)") from None
    plan = install_units(
        directory, acpd_command() if command is None else command,
        socket=socket, force=force, dry_run=dry_run, config=config,
    )  # fmt: skip
    conflicts = [str(path) for path, _, action in plan if action == "conflict"]
    if dry_run:
        for path, text, action in plan:
            what = {"write": "would write", "unchanged": "unchanged", "conflict": "differs"}
            print(f"# {path} ({what[action]})", file=out)
            print(text, file=out)
    elif not conflicts:
        for path, _, action in plan:
            print(f"{'wrote' if action == 'write' else 'unchanged'} {path}", file=out)
    if conflicts:
        raise InstallError(
            f"{', '.join(conflicts)} exists and differs; --force replaces it "
            "(--dry-run shows the new text)"
        )
    if not socket and (stale := directory / "acpd.socket").exists():
        drop = f"systemctl --user disable --now acpd.socket && rm {stale}"
        print(f"note: {stale} from an earlier install remains; to drop it: {drop}", file=out)
    # Both units: the service starts at login and recovers queued messages at once; the socket
    # starts it again on the next connection after a crash or a `systemctl --user stop`.
    units = "acpd.socket acpd.service" if socket else "acpd.service"
    print("then enable and start it:" if dry_run else "enable and start it with:", file=out)
    print(f"  systemctl --user daemon-reload && systemctl --user enable --now {units}", file=out)
    print("optionally, to keep it running after you log out (and start it at boot):", file=out)
    print("  loginctl enable-linger", file=out)
    return 0
