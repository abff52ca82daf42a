"""`acpd`: the command line (CONTRACT.md "Command line").

Client commands start fast: they import only the standard library and `daemon.cli.client`; trio
and the engine load only for `acpd serve`. Each command is a function registered with
`@command`, which also declares its arguments, so adding one is a single decorated function.
"""

from __future__ import annotations

import argparse
import os
import sys

from daemon.cli import client as _client
from daemon.cli.client import ApiError, Client, ClientError, dumps, resolve_socket

# The daemon's bounds on params, checked here too so a usage error says so in our words.
from protocol.limits import MAX_ID, MAX_LIST_LIMIT, MAX_NAME, MAX_PATH, MAX_TEXT, MAX_TITLE

# `typing` is not imported at run time: it alone costs ~10% of a client command's start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TextIO, TypeAlias

    from daemon.cli import render  # imported where used: --json output never needs it

    Arg: TypeAlias = tuple[tuple[str, ...], dict[str, Any]]
    Human: TypeAlias = Callable[[dict[str, Any]], str]
    Run: TypeAlias = Callable[["Ctx", argparse.Namespace], int]

__all__ = ["UsageError", "build_parser", "main"]

EPILOG = """\
ids may be abbreviated to any unique prefix.

--json prints the daemon's JSON-RPC `result` exactly as returned, one JSON document. Streams
(`follow`, `send --follow`) print one JSON object per line: each notification as
{"method": ..., "params": ...} (the JSON-RPC notification minus "jsonrpc"); `send --follow`
prints its {"seq", "queued"} result first.

--socket and --json may come before the command too (`acpd --json ls`). socket: --socket PATH,
else $ACPD_SOCKET, else $XDG_RUNTIME_DIR/acpd/acpd.sock, else /tmp/acpd-$UID/acpd.sock.
Exit status: 0 ok, 1 error, 2 usage, 130 Ctrl-C, 141 closed pipe.
"""


class UsageError(Exception):
    """A bad combination of arguments that argparse cannot express: exit 2."""


def arg(*flags: str, **kwargs: Any) -> Arg:
    return flags, kwargs


def bounded(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An argparse `type`: an integer in lo..hi, with a message in our words."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            span = f"from {lo} to {hi}" if hi is not None else f"at least {lo}"
            raise argparse.ArgumentTypeError(f"must be {span}, not {value}")
        return value

    return parse


def text_of(limit: int, what: str = "characters") -> Callable[[str], str]:
    """An argparse `type`: a non-empty string of at most `limit` characters."""

    def parse(text: str) -> str:
        if not text:
            raise argparse.ArgumentTypeError("must not be empty")
        if len(text) > limit:
            raise argparse.ArgumentTypeError(f"longer than {limit} {what}")
        return text

    return parse


def conv_id() -> Arg:
    return arg("id", metavar="ID", type=text_of(MAX_ID), help="a conversation id or prefix")


class _Command:
    __slots__ = ("args", "client", "help", "name", "run")

    def __init__(self, name: str, help: str, args: tuple[Arg, ...], client: bool, run: Run) -> None:
        self.name, self.help, self.args, self.client, self.run = name, help, args, client, run


COMMANDS: dict[str, _Command] = {}


def command(name: str, help: str, *args: Arg, client: bool = True) -> Callable[[Run], Run]:
    """Register a subcommand; `client=True` adds `--socket` and `--json` and a connection."""

    def register(run: Run) -> Run:
        COMMANDS[name] = _Command(name, help, args, client, run)
        return run

    return register


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
    arg("--data-dir", metavar="DIR", help="default $ACPD_DATA_DIR, else $XDG_DATA_HOME/acpd"),
    arg("--socket", metavar="PATH", help="default as for the client commands"),
    arg("--ws", metavar="HOST:PORT", help="dashboard address (127.0.0.1:0 picks a free port)"),
    arg("--no-ws", action="store_true", help="no dashboard"),
    arg("--config", metavar="FILE", help="default $ACPD_CONFIG, else ~/.config/acpd/config.toml"),
    client=False,
)
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
    from daemon.cli import render

    return ctx.finish(ctx.call("daemon/status"), lambda r: render.status(r, ctx.client.path))


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

    # The token file is readable by the daemon's user only. The link carries the token in its
    # fragment, which the browser never sends to a server: the page reads it and forgets it.
    token = (Path(status["data_dir"]) / "dashboard.token").read_text(encoding="ascii").strip()
    link = f"{url}#token={token}"
    if ctx.json:
        ctx.emit({"url": url, "link": link})
    else:
        ctx.say(link)
    if a.open:
        import webbrowser

        if not webbrowser.open(link):
            ctx.note("acpd: found no web browser to open; open the link above")
    return 0


@command("agents", "configured agents")
def cmd_agents(ctx: Ctx, a: argparse.Namespace) -> int:
    from daemon.cli import render

    return ctx.finish(ctx.call("agents/list"), render.agents)


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
    from daemon.cli import render

    width = os.get_terminal_size(ctx.out.fileno()).columns if ctx.out.isatty() else None
    ctx.say(render.conversations(result["conversations"], width))
    shown, total = len(result["conversations"]), result.get("total")
    if isinstance(total, int) and total > shown:
        ctx.note(f"({shown} of {total} shown; see --limit, and --before {result.get('next')})")
    return 0


@command("show", "a conversation's details", conv_id())
def cmd_show(ctx: Ctx, a: argparse.Namespace) -> int:
    from daemon.cli import render

    return ctx.finish(ctx.call("conversations/get", {"id": a.id}), render.conversation)


@command(
    "queue",
    "messages waiting for their turn",
    conv_id(),
    arg("--remove", type=bounded(1), metavar="SEQ", help="take the queued message SEQ out instead"),
)
def cmd_queue(ctx: Ctx, a: argparse.Namespace) -> int:
    from daemon.cli import render

    if a.remove is not None:
        return ctx.finish(ctx.call("messages/remove", {"id": a.id, "seq": a.remove}))
    return ctx.finish(ctx.call("messages/queue", {"id": a.id}), render.queue)


@command("rm", "delete a conversation", conv_id())
def cmd_rm(ctx: Ctx, a: argparse.Namespace) -> int:
    return ctx.finish(ctx.call("conversations/delete", {"id": a.id}))


@command("interrupt", "cancel the running turn (the queue pauses)", conv_id())
def cmd_interrupt(ctx: Ctx, a: argparse.Namespace) -> int:
    def human(result: dict[str, Any]) -> str:
        # Either way the queue is paused now (CONTRACT.md: interrupt pauses the queue).
        done = "interrupted" if result.get("interrupted") else "no turn was running"
        return f"{done}; the queue is paused until `acpd resume {a.id}`"

    return ctx.finish(ctx.call("turns/interrupt", {"id": a.id}), human)


@command("resume", "resume a paused queue", conv_id())
def cmd_resume(ctx: Ctx, a: argparse.Namespace) -> int:
    return ctx.finish(ctx.call("conversations/resume", {"id": a.id}))


@command(
    "permit",
    "answer a pending permission request",
    conv_id(),
    arg("request", metavar="REQUEST", type=text_of(MAX_NAME)),
    arg("option", metavar="OPTION", nargs="?", type=text_of(MAX_NAME),
        help="the option to select: its id, or its number as the prompt shows it"),
    arg("--cancel", action="store_true", help="answer `cancelled` instead of an option"),
)  # fmt: skip
def cmd_permit(ctx: Ctx, a: argparse.Namespace) -> int:
    if (a.option is None) == (not a.cancel):
        raise UsageError("give OPTION or --cancel, not both or neither")
    params: dict[str, Any] = {"id": a.id, "request": a.request}
    if a.cancel:
        params["cancelled"] = True
    else:
        params["option"] = a.option
        if a.option.isdigit():  # a number as displayed, unless some option has that id
            params["id"], params["option"] = option_by_number(ctx, a.id, a.request, a.option)
    return ctx.finish(ctx.call("permissions/respond", params))


def option_by_number(ctx: Ctx, conv: str, request: str, number: str) -> tuple[str, str]:
    """(conversation id, option id) for option `number` (1-based) of `request`, found in the
    conversation's latest events. Raises UsageError if it has no such option."""
    from daemon.cli import render
    from daemon.cli.chat import find_permission_request

    conv_id, event = find_permission_request(ctx, conv, request)
    options = render.permission_options(event) if event is not None else []
    if any(o["option_id"] == number for o in options) or event is None:
        return conv_id, number  # an id after all, or nothing to map with: the daemon decides
    if not 1 <= int(number) <= len(options):
        raise UsageError(f"request {request} has options 1 to {len(options)}, not {number}")
    return conv_id, options[int(number) - 1]["option_id"]


# --- messages and streams (chat.py holds the loops) --------------------------------------------


@command(
    "send",
    "append a user message; `-` reads it from stdin",
    conv_id(),
    arg("text", metavar="TEXT", nargs="+"),
    arg("--no-run", action="store_true",
        help="stage it: the queue pauses until `acpd resume` (or a send without --no-run)"),
    arg("--interrupt", action="store_true", help="cancel the running turn first"),
    arg("--follow", action="store_true", help="stream until this message's turn ends"),
)  # fmt: skip
def cmd_send(ctx: Ctx, a: argparse.Namespace) -> int:
    from daemon.cli.chat import send_and_follow

    text = read_text(a.text, sys.stdin)
    return send_and_follow(
        ctx, a.id, text, run=not a.no_run, interrupt=a.interrupt, follow=a.follow
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
        help="replay after SEQ (default 0: everything; negative: the last -SEQ events)"),
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
        help="history to show first: after SEQ, or the last -SEQ events (default -20)"),
)  # fmt: skip
def cmd_chat(ctx: Ctx, a: argparse.Namespace) -> int:
    from daemon.cli.chat import chat

    if a.id is not None and (a.agent or a.agent_cmd or a.cwd or a.title is not None):
        raise UsageError("--agent, --agent-cmd, --cwd and --title are for a new conversation")
    params = None if a.id else create_params(a.agent, a.agent_cmd, a.cwd, a.title)
    return chat(ctx, a.id, params, a.from_seq)


# --- parsing and main --------------------------------------------------------------------------


_ORDER = ("serve", "new", "send", "follow", "chat", "ls", "show", "queue", "rm", "interrupt",
          "resume", "permit", "status", "agents")  # fmt: skip


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """argparse's formatter, sized without `shutil` (whose import argparse would pay for)."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        if width is None:
            try:
                width = int(os.environ.get("COLUMNS", "")) or os.get_terminal_size(2).columns
            except (ValueError, OSError):
                width = 80
            width -= 2
        super().__init__(prog, indent_increment, max_help_position, width)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `only`, just that command's (the one about to run: faster to build)."""
    parser = argparse.ArgumentParser(
        prog="acpd",
        description="Durable conversations with ACP coding agents.",
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    # Also accepted before the command; merged into the command's own by `_merge_global`.
    parser.add_argument(
        "--socket",
        dest="global_socket",
        metavar="PATH",
        help="the daemon's socket (client commands and serve)",
    )
    parser.add_argument("--json", dest="global_json", action="store_true",
                        help="print JSON (client commands)")  # fmt: skip
    common = argparse.ArgumentParser(add_help=False, formatter_class=_Formatter)
    common.add_argument("--socket", metavar="PATH", help="the daemon's socket")
    common.add_argument("--json", action="store_true", help="print JSON (see `acpd --help`)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Help lists CONTRACT.md's order; commands registered elsewhere follow.
    names = [n for n in _ORDER if n in COMMANDS] + [n for n in COMMANDS if n not in _ORDER]
    for cmd in (COMMANDS[n] for n in names if only in (None, n)):
        p = sub.add_parser(
            cmd.name,
            help=cmd.help,
            description=cmd.help,
            parents=[common] if cmd.client else [],
            epilog=EPILOG if cmd.client else None,
            formatter_class=_Formatter,
        )
        for flags, kwargs in cmd.args:
            p.add_argument(*flags, **kwargs)
        p.set_defaults(handler=cmd)
    return parser


def _command_name(argv: list[str]) -> str | None:
    """The command word, past any options before it (`acpd --socket S --json ls`)."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word == "--socket":
            skip = True
        elif not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def _merge_global(args: argparse.Namespace) -> None:
    """Fold `--socket`/`--json` given before the command into the command's own options."""
    cmd: _Command = args.handler
    pre_socket, pre_json = args.global_socket, args.global_json
    if pre_json and not cmd.client:
        raise UsageError("--json is for client commands")
    if pre_socket is not None and not hasattr(args, "socket"):
        raise UsageError("--socket is not an option of this command")
    if pre_socket is not None and args.socket is None:
        args.socket = pre_socket
    if pre_json:
        args.json = True


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
    parser = build_parser(_command_name(argv))
    args = parser.parse_args(argv)  # exits 2 on a usage error
    ctx: Ctx | None = None
    try:
        try:
            _merge_global(args)
            ctx = Ctx(args, sys.stdout, sys.stderr)
            return int(args.handler.run(ctx, args))
        finally:
            if ctx is not None:
                ctx.close()
            sys.stdout.flush()  # here, so a closed pipe is caught below
    except UsageError as exc:
        parser.exit(2, f"acpd {args.command}: error: {exc}\n")
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


def _fail(message: str) -> int:
    print(f"acpd: error: {message}", file=sys.stderr)
    return 1
