"""`acpd`: the command line (CONTRACT.md "Command line").

Client commands start fast: they import only the standard library and `daemon.cli.client`; trio
and the engine load only for `acpd serve`. Each command is a function registered with
`@command` (`daemon.cli.parsing`), which also declares its arguments, so adding one is a single
decorated function. Every command that changes something says what it did in one line.
"""

from __future__ import annotations

import argparse
import os
import sys

from daemon.cli import client as _client
from daemon.cli.client import ApiError, Client, ClientError, dumps, resolve_socket
from daemon.cli.parsing import (
    COMMANDS,
    UsageError,
    arg,
    bounded,
    build_parser,
    command,
    command_name,
    conv_id,
    merge_global,
    text_of,
)

# The daemon's bounds on params, checked here too so a usage error says so in our words.
from protocol.limits import MAX_ID, MAX_LIST_LIMIT, MAX_NAME, MAX_PATH, MAX_TEXT, MAX_TITLE

# `typing` is not imported at run time: it alone costs ~10% of a client command's start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TextIO, TypeAlias

    from daemon.cli import render  # imported where used: --json output never needs it

    Human: TypeAlias = Callable[[dict[str, Any]], str]

__all__ = ["COMMANDS", "UsageError", "build_parser", "main"]

# Its commands register themselves (permit, answer, commands, mode, option).
from daemon.cli import asking as _asking  # noqa: E402, F401


class Ctx:
    """What a command runs with: its output streams and, for client commands, a connection."""

    def __init__(self, args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
        self.args = args
        self.out = out
        self.err = err
        self.json: bool = getattr(args, "json", False)
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            # Calls are bounded (a wedged daemon); a stream's waits for notifications are not.
            self._client = Client(resolve_socket(self.args.socket), timeout=_client.CALL_TIMEOUT)
        return self._client

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.client.call(method, params)

    def emit(self, result: object) -> None:
        print(dumps(result), file=self.out)

    def finish(self, result: dict[str, Any], human: Human | None = None) -> int:
        """Print a command's result: as JSON, or for people with `human` (nothing if None)."""
        if self.json:
            self.emit(result)
        elif human is not None and (text := human(result)):
            self.say(text)
        return 0

    def say(self, text: str) -> None:
        print(text, file=self.out)

    def note(self, text: str) -> None:
        """Information for people that is not the command's output."""
        print(text, file=self.err)

    def renderer(self) -> render.Renderer:
        from daemon.cli import render

        return render.Renderer(self.out, render.Style.for_stream(self.out))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


# --- the daemon --------------------------------------------------------------------------------


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


# --- conversations -----------------------------------------------------------------------------


@command(
    "new",
    "create a conversation; prints its id",
    arg("--agent", metavar="NAME", type=text_of(MAX_NAME),
        help="a configured agent (see `acpd agents`; default: the configured default)"),
    arg("--agent-cmd", metavar="'CMD ARG…'", help="run this command as the agent"),
    arg("--cwd", metavar="DIR", help="the agent's working directory (default: here)"),
    arg("--title", metavar="T", help="default: the first message"),
)  # fmt: skip
def cmd_new(ctx: Ctx, a: argparse.Namespace) -> int:
    params = create_params(a.agent, a.agent_cmd, a.cwd, a.title)
    return ctx.finish(ctx.call("conversations/create", params), lambda r: r["conversation"]["id"])


def create_params(
    agent: str | None, agent_cmd: str | None, cwd: str | None, title: str | None
) -> dict[str, Any]:
    if agent and agent_cmd:
        raise UsageError("--agent and --agent-cmd exclude each other")
    directory = os.path.abspath(os.path.expanduser(cwd) if cwd else os.getcwd())
    if not os.path.isdir(directory):
        raise UsageError(f"--cwd: not a directory: {directory}")
    if len(directory) > MAX_PATH:
        raise UsageError(f"--cwd: longer than {MAX_PATH} characters")
    if title is not None and len(title) > MAX_TITLE:
        raise UsageError(f"--title: longer than {MAX_TITLE} characters")
    params: dict[str, Any] = {"cwd": directory}
    if agent:
        params["agent"] = agent
    if agent_cmd is not None:
        import shlex

        try:
            argv = shlex.split(agent_cmd)
        except ValueError as exc:
            raise UsageError(f"--agent-cmd: {exc}") from None
        if not argv or not argv[0]:
            raise UsageError("--agent-cmd: empty command")
        if any(len(word) > MAX_PATH for word in argv):
            raise UsageError(f"--agent-cmd: a word longer than {MAX_PATH} characters")
        params["agent_cmd"] = argv
    if title is not None:
        params["title"] = title
    return params


@command(
    "ls",
    "list conversations, newest activity first",
    arg("--limit", type=bounded(1, MAX_LIST_LIMIT), default=50, metavar="N",
        help=f"at most N, 1 to {MAX_LIST_LIMIT} (default 50)"),
    arg("--before", metavar="CURSOR", type=text_of(MAX_NAME),
        help="the page after this one (`next` of --json)"),
    epilog="On a terminal each id's shortest unique prefix is highlighted: type that much of it\n"
           "(or more) wherever a command takes an ID.",
)  # fmt: skip
def cmd_ls(ctx: Ctx, a: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": a.limit}
    if a.before:
        params["before"] = a.before
    result = ctx.call("conversations/list", params)
    if ctx.json or not result.get("conversations"):
        if not ctx.json:
            ctx.note("no conversations (start one with `acpd new` or `acpd chat`)")
        return ctx.finish(result)
    from daemon.cli import render, views

    width = os.get_terminal_size(ctx.out.fileno()).columns if ctx.out.isatty() else None
    ctx.say(views.conversations(result["conversations"], width, render.Style.for_stream(ctx.out)))
    shown, total = len(result["conversations"]), result.get("total")
    if isinstance(total, int) and total > shown:
        ctx.note(f"({shown} of {total} shown; see --limit, and --before {result.get('next')})")
    return 0


@command(
    "show",
    "a conversation's details, and the permission requests waiting for an answer",
    conv_id(),
)
def cmd_show(ctx: Ctx, a: argparse.Namespace) -> int:
    from daemon.cli import views

    return ctx.finish(ctx.call("conversations/get", {"id": a.id}), views.conversation)


@command(
    "queue",
    "messages waiting for their turn, by number; edit, move or remove one",
    conv_id(),
    arg("--remove", type=bounded(1), metavar="N",
        help="take message N (its number, as listed) out of the queue"),
    arg("--edit", nargs=2, metavar=("N", "TEXT"),
        help="give queued message N the text TEXT (`-`: read it from stdin): what its prompt "
             "will say"),
    arg("--move", type=bounded(1), metavar="N", help="put queued message N first in line"),
    arg("--before", type=bounded(1), metavar="M",
        help="with --move: right before queued message M instead"),
)  # fmt: skip
def cmd_queue(ctx: Ctx, a: argparse.Namespace) -> int:
    from daemon.cli import views

    verbs = [v for v in (a.remove, a.edit, a.move) if v is not None]
    if len(verbs) > 1:
        raise UsageError("give one of --remove, --edit and --move")
    if a.before is not None and a.move is None:
        raise UsageError("--before goes with --move")
    edit, text = None, ""
    if a.edit is not None:
        edit = int(a.edit[0]) if a.edit[0].isdigit() else 0
        if not edit:
            raise UsageError(f"--edit N TEXT: N is a message number, not {a.edit[0]!r}")
        text = read_text([a.edit[1]], sys.stdin)
    if not verbs:
        return ctx.finish(ctx.call("messages/queue", {"id": a.id}), views.queue)
    pending = ctx.call("messages/queue", {"id": a.id}).get("pending") or []
    if edit is not None:
        params = {"id": a.id, "seq": _queued(a.id, pending, edit), "text": text}
        result = _change(ctx, "messages/edit", params, edit, "edit")
        return ctx.finish(result, lambda r: f"edited message {edit}")
    if a.move is not None:
        params = {"id": a.id, "seq": _queued(a.id, pending, a.move)}
        if a.before is not None:
            params["before"] = _queued(a.id, pending, a.before)
        who = f"{a.move} or {a.before}" if a.before is not None else str(a.move)
        result = _change(ctx, "messages/move", params, who, "move")
        numbers = {m["seq"]: m.get("number") for m in pending}
        order = " ".join(f"#{numbers.get(s, '?')}" for s in result.get("order") or [])
        return ctx.finish(result, lambda r: f"moved message {a.move}; the queue: {order}")
    params = {"id": a.id, "seq": _queued(a.id, pending, a.remove)}
    result = _change(ctx, "messages/remove", params, a.remove, "remove")
    return ctx.finish(result, lambda r: f"removed message {a.remove}")


def _queued(conv: str, pending: list[dict[str, Any]], number: int) -> int:
    """The seq of queued message `number`, from a `messages/queue` listing."""
    seq = next((m["seq"] for m in pending if m.get("number") == number), None)
    if seq is None:
        listed = ", ".join(str(m.get("number")) for m in pending)
        queued = f"queued: {listed}" if listed else "nothing is queued"
        raise ClientError(f"no message {number} in the queue of {conv} ({queued})")
    return int(seq)


def _change(ctx: Ctx, method: str, params: dict[str, Any], number: object, verb: str) -> Any:
    """Call a queue verb; a refusal because the message is no longer queued, in our words."""
    try:
        return ctx.call(method, params)
    except ApiError as exc:
        if exc.code != _CONFLICT:
            raise
        if "being steered" in exc.message:
            raise ClientError(
                f"message {number} is being steered into the running turn: try again shortly"
            ) from None
        raise ClientError(f"message {number} has started already: too late to {verb}") from None


_CONFLICT = -32003


@command("rm", "delete a conversation (its agent is stopped)", conv_id())
def cmd_rm(ctx: Ctx, a: argparse.Namespace) -> int:
    conv = ctx.call("conversations/get", {"id": a.id})["conversation"]
    result = ctx.call("conversations/delete", {"id": conv["id"]})
    title = f" ({conv['title']})" if conv.get("title") else ""
    return ctx.finish(result, lambda r: f"removed conversation {conv['id']}{title}")


@command(
    "interrupt",
    "cancel the running turn; the queue pauses until resumed or the next send",
    conv_id(),
)
def cmd_interrupt(ctx: Ctx, a: argparse.Namespace) -> int:
    from daemon.cli import views

    paused = views.paused_until(f"`acpd resume {a.id}`", f"the next `acpd send {a.id}`")

    def human(result: dict[str, Any]) -> str:
        done = "interrupted" if result.get("interrupted") else "no turn was running"
        return f"{done}; {paused}"

    return ctx.finish(ctx.call("turns/interrupt", {"id": a.id}), human)


@command(
    "resume",
    "run the queue again, in order (idempotent); also lifts `failed`",
    conv_id(),
    description="Run a paused queue again, in order (idempotent). Also lifts `failed` (too many\n"
                "agent crashes), so the next message starts an agent again.",
)  # fmt: skip
def cmd_resume(ctx: Ctx, a: argparse.Namespace) -> int:
    from daemon.cli import views

    return ctx.finish(ctx.call("conversations/resume", {"id": a.id}), views.resumed)


# --- messages and streams (daemon.cli.chat holds the loops) ------------------------------------

# `chat --help`, and what chat prints when it starts on a terminal (and for /help).
CHAT_KEYS = """\
Enter sends a line: it starts at once, or is queued while a turn runs (and shown as queued).
A number (or an option id) answers the oldest open permission request. Ctrl-C interrupts the
running turn, or leaves when nothing runs; Ctrl-D leaves (from a pipe: once the replies to what
was sent have arrived).
A question of the agent's: /answer [REQUEST] FIELD=VALUE..., or /decline [REQUEST].
Slash commands: /interrupt, /resume, /queue, /answer, /decline, /help, /quit (or /exit);
/steer TEXT puts TEXT into the running turn, if the agent can take it (else next in line)."""


@command(
    "send",
    "append a user message; `-` reads it from stdin",
    conv_id(),
    arg("text", metavar="TEXT", nargs="+"),
    arg("--no-run", action="store_true",
        help="stage it: the queue pauses until `acpd resume` (or a send without --no-run)"),
    arg("--interrupt", action="store_true",
        help="cancel the running turn first, then go on with the queue"),
    arg("--steer", action="store_true",
        help="into the running turn, if the agent can take it (says whether it did); "
             "else next in line, ahead of the queue"),
    arg("--follow", action="store_true", help="stream until this message's turn ends"),
    epilog="Prints what happened: `sent (message N, starts now)`, or how many turns run before\n"
           "it. Messages are numbered 1, 2, 3… in each conversation; a send (without --no-run)\n"
           "also lifts a pause: the messages queued before it run first, in order.",
)  # fmt: skip
def cmd_send(ctx: Ctx, a: argparse.Namespace) -> int:
    from daemon.cli.chat import send_and_follow

    if a.steer and (a.no_run or a.interrupt):
        raise UsageError("--steer goes with neither --no-run nor --interrupt")
    text = read_text(a.text, sys.stdin)
    return send_and_follow(
        ctx, a.id, text, run=not a.no_run, interrupt=a.interrupt, follow=a.follow, steer=a.steer
    )


def read_text(words: list[str], stdin: TextIO) -> str:
    """The message: the words joined, or stdin for a lone `-` (trailing newlines dropped)."""
    text = stdin.read().rstrip("\n") if words == ["-"] else " ".join(words)
    if not text.strip():
        raise UsageError("the message is empty")
    if len(text) > MAX_TEXT:
        raise UsageError(f"the message is longer than {MAX_TEXT} characters")
    return text


@command(
    "follow",
    "replay events after SEQ, then stream live until Ctrl-C",
    conv_id(),
    arg("--from", dest="from_seq", type=int, default=0, metavar="SEQ",
        help="replay after event SEQ (default 0: everything; negative: the last -SEQ events)"),
)  # fmt: skip
def cmd_follow(ctx: Ctx, a: argparse.Namespace) -> int:
    from daemon.cli.chat import follow

    return follow(ctx, a.id, a.from_seq)


@command(
    "chat",
    "interactive: type to send (queued while a turn runs); Ctrl-C interrupts the turn",
    arg("id", metavar="ID", nargs="?", type=text_of(MAX_ID), help="default: a new conversation"),
    arg("--agent", metavar="NAME", type=text_of(MAX_NAME), help="for a new conversation"),
    arg("--agent-cmd", metavar="'CMD ARG…'", help="for a new conversation"),
    arg("--cwd", metavar="DIR", help="for a new conversation (default: here)"),
    arg("--title", metavar="T", help="for a new conversation"),
    arg("--from", dest="from_seq", type=int, default=-20, metavar="SEQ",
        help="history to show first: after event SEQ, or the last -SEQ events (default -20)"),
    epilog=CHAT_KEYS,
)  # fmt: skip
def cmd_chat(ctx: Ctx, a: argparse.Namespace) -> int:
    from daemon.cli.chat import chat

    if a.id is not None and (a.agent or a.agent_cmd or a.cwd or a.title is not None):
        raise UsageError("--agent, --agent-cmd, --cwd and --title are for a new conversation")
    params = None if a.id else create_params(a.agent, a.agent_cmd, a.cwd, a.title)
    return chat(ctx, a.id, params, a.from_seq)


# --- main --------------------------------------------------------------------------------------


def _api_message(exc: ApiError) -> str:
    """An error reply for people: msgspec's wording for bad params (`Expected `int` >= 1 - at
    `$.seq``) restated, for anything the CLI's own checks let through."""
    import re

    found = re.fullmatch(r"invalid params: (.*?)(?: - at `\$\.?(.*)`)?", exc.message, re.S)
    if exc.code != -32602 or found is None:
        return exc.message
    what, where = found.group(1), found.group(2)
    what = what.replace("`", "")
    what = what[:1].lower() + what[1:]
    return f"the daemon refused {where or 'the request'}: {what}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ctx: Ctx | None = None
    try:
        try:
            args = build_parser(command_name(argv)).parse_args(argv)  # --help exits here
            merge_global(args)
            ctx = Ctx(args, sys.stdout, sys.stderr)
            return int(args.handler.run(ctx, args))
        finally:
            if ctx is not None:
                ctx.close()
            sys.stdout.flush()  # here, so a closed pipe is caught below
    except UsageError as exc:
        message, name = str(exc), command_name(argv)
        if name is not None:  # e.g. an unknown option, which the top parser reports
            message = message.replace("(see `acpd --help`)", f"(see `acpd {name} --help`)")
        return _fail(message, 2)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): say nothing, and keep the interpreter's own flush
        # at exit from failing again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except ApiError as exc:
        return _fail(_api_message(exc))
    except ClientError as exc:
        return _fail(str(exc))
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        return _fail(f"{exc.strerror or exc}{where}")
    except Exception as exc:  # a bug: still one line, with the traceback only on request
        if os.environ.get("ACPD_DEBUG"):
            raise
        return _fail(f"internal error: {type(exc).__name__}: {exc} (ACPD_DEBUG=1 for details)")


def _fail(message: str, code: int = 1) -> int:
    """Every error, one style: `acpd: error: …` on one line of stderr."""
    print(f"acpd: error: {' '.join(message.split())}", file=sys.stderr)
    return code
