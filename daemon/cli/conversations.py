"""The commands about conversations as a whole: `new`, `ls`, `show`, `rm`, `interrupt` and
`resume`; `create_params` checks a new conversation's options (`chat` and `acp` use it too).

Registered with `@command` like the others; `daemon.cli.commands` imports this module.
"""

from __future__ import annotations

import argparse
import os

from daemon.cli.parsing import UsageError, arg, bounded, command, conv_id, text_of

# The daemon's bounds on params, checked here too so a usage error says so in our words.
from protocol.limits import MAX_LIST_LIMIT, MAX_NAME, MAX_PATH, MAX_TITLE

TYPE_CHECKING = False  # as in daemon.cli.commands: no `typing` import at run time
if TYPE_CHECKING:
    from typing import Any

    from daemon.cli.commands import Ctx

__all__ = ["create_params"]


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
