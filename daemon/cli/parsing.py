"""The `acpd` parser: commands declare their arguments with `@command`, and every usage error
comes out in one style (`acpd: error: …`, exit 2), argparse's own included.

Standard library only, like the rest of the client side (see `daemon.cli.commands`).
"""

from __future__ import annotations

import argparse
import os

from protocol.limits import MAX_ID

TYPE_CHECKING = False  # as in daemon.cli.commands: no `typing` import at run time
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn, TypeAlias

    from daemon.cli.commands import Ctx

    Arg: TypeAlias = tuple[tuple[str, ...], dict[str, Any]]
    Run: TypeAlias = Callable[[Ctx, argparse.Namespace], int]

__all__ = [
    "CLIENT_NOTE",
    "COMMANDS",
    "IDS_NOTE",
    "ORDER",
    "Command",
    "UsageError",
    "arg",
    "bounded",
    "build_parser",
    "command",
    "command_name",
    "conv_id",
    "text_of",
]

IDS_NOTE = "ID may be abbreviated to any unique prefix (`acpd ls` shows the shortest)."

CLIENT_NOTE = """\
--json prints the daemon's JSON-RPC `result` exactly as returned, one JSON document. Streams
(`follow`, `send --follow`) print one JSON object per line: each notification as
{"method": ..., "params": ...} (the JSON-RPC notification minus "jsonrpc"); `send --follow`
prints its result first.

--socket and --json may come before the command too (`acpd --json ls`). socket: --socket PATH,
else $ACPD_SOCKET, else $XDG_RUNTIME_DIR/acpd/acpd.sock, else /tmp/acpd-$UID/acpd.sock.
Errors are one line, `acpd: error: …`. Exit status: 0 ok, 1 error, 2 usage, 130 Ctrl-C,
141 closed pipe."""

# Help lists commands in this order (CONTRACT.md's, then the additions).
ORDER = ("serve", "new", "send", "follow", "chat", "ls", "show", "queue", "rm", "interrupt",
         "resume", "permit", "answer", "status", "agents", "dashboard",
         "install-systemd")  # fmt: skip


class UsageError(Exception):
    """A usage error (bad option, value or combination): `acpd: error: …`, exit 2."""


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


def conv_id(**kwargs: Any) -> Arg:
    """The ID argument (a conversation id or a unique prefix of one)."""
    return arg("id", metavar="ID", type=text_of(MAX_ID), **kwargs)


class Command:
    __slots__ = ("args", "client", "description", "epilog", "help", "name", "run")

    def __init__(
        self,
        name: str,
        help: str,
        args: tuple[Arg, ...],
        client: bool,
        run: Run,
        description: str | None,
        epilog: str | None,
    ) -> None:
        self.name, self.help, self.args, self.client, self.run = name, help, args, client, run
        self.description, self.epilog = description, epilog

    @property
    def takes_id(self) -> bool:
        return any(kwargs.get("metavar") == "ID" for _, kwargs in self.args)


COMMANDS: dict[str, Command] = {}


def command(
    name: str,
    help: str,
    *args: Arg,
    client: bool = True,
    description: str | None = None,
    epilog: str | None = None,
) -> Callable[[Run], Run]:
    """Register a subcommand; `client=True` adds `--socket` and `--json` and a connection.
    `help` is its line in `acpd --help`; `description` (default: `help`) heads its own."""

    def register(run: Run) -> Run:
        COMMANDS[name] = Command(name, help, args, client, run, description, epilog)
        return run

    return register


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


class _Parser(argparse.ArgumentParser):
    """Usage errors raise `UsageError` (printed as `acpd: error: …`), not argparse's two
    lines of usage and `PROG: error:`; subcommands' parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `only`, just that command's (the one about to run: faster to build)."""
    parser = _Parser(
        prog="acpd",
        description="Durable conversations with ACP coding agents.",
        epilog=CLIENT_NOTE,
        formatter_class=_Formatter,
    )
    # Also accepted before the command; merged into the command's own by `merge_global`.
    parser.add_argument(
        "--socket",
        dest="global_socket",
        metavar="PATH",
        help="the daemon's socket (client commands and serve)",
    )
    parser.add_argument("--json", dest="global_json", action="store_true",
                        help="print JSON (client commands)")  # fmt: skip
    common = _Parser(add_help=False, formatter_class=_Formatter)
    common.add_argument("--socket", metavar="PATH", help="the daemon's socket")
    common.add_argument("--json", action="store_true", help="print JSON (see `acpd --help`)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    names = [n for n in ORDER if n in COMMANDS] + [n for n in COMMANDS if n not in ORDER]
    for cmd in (COMMANDS[n] for n in names if only in (None, n)):
        notes = [cmd.epilog, IDS_NOTE if cmd.takes_id else None, cmd.client and CLIENT_NOTE]
        p = sub.add_parser(
            cmd.name,
            help=cmd.help,
            description=cmd.description or cmd.help,
            parents=[common] if cmd.client else [],
            epilog="\n\n".join(n for n in notes if n) or None,
            formatter_class=_Formatter,
        )
        for flags, kwargs in cmd.args:
            p.add_argument(*flags, **kwargs)
        p.set_defaults(handler=cmd)
    return parser


def command_name(argv: list[str]) -> str | None:
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


def merge_global(args: argparse.Namespace) -> None:
    """Fold `--socket`/`--json` given before the command into the command's own options."""
    cmd: Command = args.handler
    pre_socket, pre_json = args.global_socket, args.global_json
    if pre_json and not cmd.client:
        raise UsageError(f"{cmd.name} takes no --json: it does not talk to the daemon")
    if pre_socket is not None and not hasattr(args, "socket"):
        raise UsageError(f"{cmd.name} takes no --socket")
    if pre_socket is not None and args.socket is None:
        args.socket = pre_socket
    if pre_json:
        args.json = True
