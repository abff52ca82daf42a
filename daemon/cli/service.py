"""The commands about the daemon itself: running it (`serve`, `install-systemd`), its ACP
front door (`acp`), and what it says of itself (`status`, `dashboard`, `agents`).

Registered with `@command` like the others; `daemon.cli.commands` imports this module.
"""

from __future__ import annotations

import argparse

from daemon.cli.client import ClientError, resolve_socket
from daemon.cli.conversations import create_params
from daemon.cli.parsing import UsageError, arg, command, text_of

# The daemon's bounds on params, checked here too so a usage error says so in our words.
from protocol.limits import MAX_NAME

TYPE_CHECKING = False  # as in daemon.cli.commands: no `typing` import at run time
if TYPE_CHECKING:
    from daemon.cli.commands import Ctx

__all__: list[str] = []


@command(
    "serve",
    "run the daemon in the foreground (what systemd runs)",
    arg("--data-dir", metavar="DIR",
        help="default $ACPD_DATA_DIR, else $XDG_DATA_HOME/acpd (~/.local/share/acpd)"),
    arg("--socket", metavar="PATH",
        help="default $ACPD_SOCKET, else $XDG_RUNTIME_DIR/acpd/acpd.sock, else "
             "/tmp/acpd-$UID/acpd.sock"),
    arg("--ws", metavar="HOST:PORT", help="dashboard address (127.0.0.1:0 picks a free port)"),
    arg("--no-ws", action="store_true", help="no dashboard"),
    arg("--config", metavar="FILE",
        help="default $ACPD_CONFIG, else $XDG_CONFIG_HOME/acpd/config.toml "
             "(~/.config/acpd/config.toml)"),
    client=False,
)  # fmt: skip
def cmd_serve(ctx: Ctx, a: argparse.Namespace) -> int:
    if a.ws is not None and a.no_ws:
        raise UsageError("--ws and --no-ws exclude each other")
    from pathlib import Path

    from daemon.server.serve import serve_main

    def path(value: str | None) -> Path | None:
        return Path(value).expanduser() if value else None

    return serve_main(
        data_dir=path(a.data_dir),
        socket=path(a.socket),
        ws=a.ws,
        no_ws=a.no_ws,
        config_path=path(a.config),
    )


@command(
    "acp",
    "speak ACP as an agent on stdin/stdout: editors and other ACP clients use acpd's "
    "conversations (configure `acpd acp` as their agent command)",
    arg("--agent", metavar="NAME", type=text_of(MAX_NAME),
        help="the agent of sessions it creates (default: the daemon's default agent)"),
    arg("--agent-cmd", metavar="'CMD ARG…'", help="run this command as their agent instead"),
    arg("--socket", metavar="PATH", help="the daemon's socket (default as for client commands)"),
    client=False,
)  # fmt: skip
def cmd_acp(ctx: Ctx, a: argparse.Namespace) -> int:
    from pathlib import Path

    from daemon.server.acp.main import run

    params = create_params(a.agent, a.agent_cmd, None, None)  # checks the two options
    socket = Path(resolve_socket(a.socket))
    return run(socket, agent=params.get("agent"), agent_cmd=params.get("agent_cmd"))


@command(
    "install-systemd",
    "write systemd user units that run this acpd (socket activation, notify, watchdog)",
    arg("--dry-run", action="store_true", help="print the units and commands; write nothing"),
    arg("--no-socket", action="store_true",
        help="no socket activation: the service binds its socket itself"),
    arg("--force", action="store_true", help="replace units that differ from these"),
    client=False,
)  # fmt: skip
def cmd_install_systemd(ctx: Ctx, a: argparse.Namespace) -> int:
    from daemon.cli.install import InstallError, run_install

    try:
        return run_install(ctx.out, socket=not a.no_socket, force=a.force, dry_run=a.dry_run)
    except InstallError as exc:
        raise ClientError(str(exc)) from None


@command("status", "daemon health and figures")
def cmd_status(ctx: Ctx, a: argparse.Namespace) -> int:
    from daemon.cli import views

    return ctx.finish(ctx.call("daemon/status"), lambda r: views.status(r, ctx.client.path))


@command(
    "dashboard",
    "print the dashboard's link, which carries its access token",
    arg("--open", action="store_true", help="also open it in the default web browser"),
)
def cmd_dashboard(ctx: Ctx, a: argparse.Namespace) -> int:
    status = ctx.call("daemon/status")
    url = status.get("dashboard_url")
    if not url:
        raise ClientError('this daemon serves no dashboard (it runs with --no-ws or ws = "")')
    from pathlib import Path

    from daemon.server import tokens

    # The token file is readable by the daemon's user only. The link carries the token in its
    # fragment, which the browser never sends to a server: the page reads it and forgets it.
    data_dir = Path(status["data_dir"])
    link = f"{url}#token={tokens.read_token(data_dir)}"
    if ctx.json:
        ctx.emit({"url": url, "link": link})
    else:
        ctx.say(link)
    if a.open:
        import webbrowser

        # Not the token: a browser's command line is readable by every local user. A code
        # is worth nothing once the page has used it, or after a minute.
        if not webbrowser.open(f"{url}#code={tokens.create_login_code(data_dir)}"):
            ctx.note("acpd: found no web browser to open; open the link above")
    return 0


@command("agents", "configured agents")
def cmd_agents(ctx: Ctx, a: argparse.Namespace) -> int:
    from daemon.cli import views

    return ctx.finish(ctx.call("agents/list"), views.agents)
