"""The commands about what the agent asks and offers: `permit` (its permission requests),
`answer` (its questions), `commands`, `mode` and `option` (what its session offers).

Registered with `@command` like the others; `daemon.cli.commands` imports this module.
"""

from __future__ import annotations

import argparse

from daemon.cli.client import ApiError, ClientError
from daemon.cli.parsing import UsageError, arg, command, conv_id, text_of
from protocol.limits import MAX_NAME, MAX_TEXT

TYPE_CHECKING = False  # as in daemon.cli.commands: no `typing` import at run time
if TYPE_CHECKING:
    from typing import Any

    from daemon.cli.commands import Ctx

__all__ = ["set_call"]


@command(
    "permit",
    "answer a permission request (see `acpd show ID`)",
    conv_id(),
    arg("request", metavar="REQUEST", nargs="?", type=text_of(MAX_NAME),
        help="the request's id (`p7-1`), as `acpd show ID` and the streams print it; "
             "leave it out when only one request is open"),
    arg("option", metavar="OPTION", nargs="?", type=text_of(MAX_NAME),
        help="the option to select: its number as shown (1, 2…) or its id"),
    arg("--cancel", action="store_true", help="answer `cancelled` instead of an option"),
    description="Answer a permission request of a running turn: `acpd permit ID OPTION` when one\n"
                "is open, `acpd permit ID REQUEST OPTION` to name it. `acpd show ID` lists the\n"
                "open requests with their numbered options.",
)  # fmt: skip
def cmd_permit(ctx: Ctx, a: argparse.Namespace) -> int:
    request, option = a.request, a.option
    if option is None and not a.cancel:  # `permit ID OPTION`
        request, option = None, request
    if (option is None) == (not a.cancel):
        raise UsageError("give OPTION or --cancel, not both or neither")
    conv = ctx.call("conversations/get", {"id": a.id})["conversation"]
    asking = [r for r in conv.get("permissions") or [] if isinstance(r, dict)]
    if request is None:
        request = _the_open_request(conv, asking)
    params: dict[str, Any] = {"id": conv["id"], "request": request}
    event = next((r for r in asking if r.get("request") == request), None)
    if a.cancel:
        params["cancelled"] = True
    else:
        params["option"] = _option_id(request, event, option)
    from daemon.cli import views

    return ctx.finish(
        ctx.call("permissions/respond", params), lambda r: views.answered(params, event)
    )


def _the_open_request(conv: dict[str, Any], asking: list[dict[str, Any]]) -> str:
    """The one open request's id; ClientError naming them if there are none or several."""
    short = conv.get("short_id") or conv["id"]
    if len(asking) == 1:
        return str(asking[0].get("request"))
    if not asking:
        raise ClientError(f"no permission request is open in {short}")
    names = ", ".join(f"{r.get('request')} ({r.get('title')})" for r in asking)
    raise ClientError(
        f"{len(asking)} permission requests are open in {short}: {names}; "
        f"name one: acpd permit {short} REQUEST OPTION"
    )


def _option_id(request: str, event: dict[str, Any] | None, option: str) -> str:
    """The option id for `option`, a number as displayed or an id. Without the open request
    to map with (answered meanwhile, or not open), it is sent as given: the daemon decides."""
    from daemon.cli import render

    options = render.permission_options(event) if event is not None else []
    if event is None or not option.isdigit() or any(o["option_id"] == option for o in options):
        return option
    if not 1 <= int(option) <= len(options):
        raise UsageError(f"request {request} has options 1 to {len(options)}, not {option}")
    return options[int(option) - 1]["option_id"]


@command(
    "answer",
    "answer a question of the agent's (see `acpd show ID`)",
    conv_id(),
    arg("request", metavar="REQUEST", nargs="?", type=text_of(MAX_NAME),
        help="the question's id (`e7-1`), as `acpd show ID` and the streams print it; "
             "leave it out when only one question is open"),
    arg("fields", metavar="FIELD=VALUE", nargs="*", type=text_of(MAX_TEXT),
        help="the form's fields, for --accept (numbers and true/false as the form wants)"),
    arg("--accept", action="store_true", help="answer with the fields given (the default)"),
    arg("--decline", action="store_true", help="say no"),
    arg("--cancel", action="store_true", help="leave it unanswered (as an interrupt does)"),
    description="Answer a question the agent asked: `acpd answer ID name=Ada count=3` when one is\n"
                "open, `acpd answer ID REQUEST --decline` to name it. `acpd show ID` lists the\n"
                "open questions with their fields; a url question is answered --accept once\n"
                "you have opened its link.",
)  # fmt: skip
def cmd_answer(ctx: Ctx, a: argparse.Namespace) -> int:
    from daemon.cli import questions

    request, fields = a.request, list(a.fields)
    if request is not None and "=" in request:  # `answer ID name=x`: no REQUEST given
        request, fields = None, [request, *fields]
    if a.accept + a.decline + a.cancel > 1:
        raise UsageError("give one of --accept, --decline and --cancel")
    action = "decline" if a.decline else "cancel" if a.cancel else "accept"
    if fields and action != "accept":
        raise UsageError("fields go with --accept only")
    conv = ctx.call("conversations/get", {"id": a.id})["conversation"]
    open_ = [q for q in conv.get("questions") or [] if isinstance(q, dict)]
    if request is None:
        request = _the_open_question(conv, open_)
    asked = next((q for q in open_ if q.get("request") == request), None)
    params: dict[str, Any] = {"id": conv["id"], "request": request, "action": action}
    if action == "accept":
        try:
            params["content"] = questions.form_content(asked, fields)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    return ctx.finish(
        ctx.call("elicitations/respond", params), lambda r: f"answered {request}: {action}"
    )


def _the_open_question(conv: dict[str, Any], open_: list[dict[str, Any]]) -> str:
    short = conv.get("short_id") or conv["id"]
    if len(open_) == 1:
        return str(open_[0].get("request"))
    if not open_:
        raise ClientError(f"no question is open in {short}")
    names = ", ".join(f"{q.get('request')} ({q.get('message')})" for q in open_)
    raise ClientError(
        f"{len(open_)} questions are open in {short}: {names}; name one: acpd answer {short} "
        "REQUEST ..."
    )


# --- what the agent session offers: slash commands, modes, options ---------------------------


@command("commands", "the slash commands the agent offers (send one as a message: /name args)",
         conv_id())  # fmt: skip
def cmd_commands(ctx: Ctx, a: argparse.Namespace) -> int:
    from daemon.cli import sessionview

    result = ctx.call("conversations/get", {"id": a.id})
    return ctx.finish(result, lambda r: sessionview.commands_table(r["conversation"]))


@command(
    "mode",
    "the agent's modes, the current one marked; with MODE, switch to it",
    conv_id(),
    arg("mode", metavar="MODE", nargs="?", type=text_of(MAX_NAME), help="a mode id to switch to"),
)
def cmd_mode(ctx: Ctx, a: argparse.Namespace) -> int:
    from daemon.cli import sessionview

    if a.mode is None:
        result = ctx.call("conversations/get", {"id": a.id})
        return ctx.finish(result, lambda r: sessionview.modes_table(r["conversation"]))
    result = set_call(ctx, "conversations/set_mode", {"id": a.id, "mode": a.mode})
    return ctx.finish(result, lambda r: f"mode: {a.mode}")


@command(
    "option",
    "the agent's options (model, reasoning effort…) and their values; with KEY VALUE, set one",
    conv_id(),
    arg("key", metavar="KEY", nargs="?", type=text_of(MAX_NAME), help="an option id"),
    arg("value", metavar="VALUE", nargs="?", type=text_of(MAX_NAME),
        help="a value id or name (on/off for a switch)"),
)  # fmt: skip
def cmd_option(ctx: Ctx, a: argparse.Namespace) -> int:
    from daemon.cli import sessionview

    if a.key is not None and a.value is None:
        raise UsageError("give KEY and VALUE to set an option, or neither to list them")
    result = ctx.call("conversations/get", {"id": a.id})
    if a.key is None:
        return ctx.finish(result, lambda r: sessionview.options_table(r["conversation"]))
    try:
        key, value = sessionview.option_value(result["conversation"], a.key, a.value)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    params = {"id": result["conversation"]["id"], "option": key, "value": value}
    result = set_call(ctx, "conversations/set_option", params)
    shown = value if isinstance(value, str) else ("on" if value else "off")
    return ctx.finish(result, lambda r: f"{key}: {shown}")


def set_call(ctx: Ctx, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """A call that sets something at the agent; a daemon without the method says so plainly."""
    try:
        return ctx.call(method, params)
    except ApiError as exc:
        if exc.code == -32601:
            raise ClientError(f"this daemon cannot do that yet (no method {method})") from None
        raise
