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
from daemon.cli.parsing import COMMANDS, UsageError, build_parser, command_name, merge_global

# `typing` is not imported at run time: it alone costs ~10% of a client command's start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TextIO, TypeAlias

    from daemon.cli import render  # imported where used: --json output never needs it

    Human: TypeAlias = Callable[[dict[str, Any]], str]

__all__ = ["COMMANDS", "UsageError", "build_parser", "main"]

# The commands register themselves as their modules load: what the agent asks and offers
# (permit, answer, commands, mode, option), conversations, messages (send, queue, the streams)
# and the daemon (serve, acp, status…). `acpd --help` lists them in `parsing.ORDER`, then the
# rest in the order they registered.
from daemon.cli import asking as _asking  # noqa: E402, F401
from daemon.cli import conversations as _conversations  # noqa: E402, F401
from daemon.cli import messages as _messages  # noqa: E402, F401
from daemon.cli import service as _service  # noqa: E402, F401


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
