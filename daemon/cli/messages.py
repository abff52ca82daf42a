"""The commands about messages: `send`, `queue` (what waits, and its edits), and the
streams `follow` and `chat` (`daemon.cli.chat` holds their loops).

Registered with `@command` like the others; `daemon.cli.commands` imports this module.
"""

from __future__ import annotations

import argparse
import sys

from daemon.cli.client import ApiError, ClientError
from daemon.cli.conversations import create_params
from daemon.cli.parsing import UsageError, arg, bounded, command, conv_id, text_of

# The daemon's bounds on params, checked here too so a usage error says so in our words.
from protocol.limits import MAX_ID, MAX_NAME, MAX_TEXT

TYPE_CHECKING = False  # as in daemon.cli.commands: no `typing` import at run time
if TYPE_CHECKING:
    from typing import Any, TextIO

    from daemon.cli.commands import Ctx

__all__ = ["CHAT_KEYS", "read_text"]


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
