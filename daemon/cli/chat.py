"""The streaming commands: `follow`, `send --follow` and the interactive `chat`.

No trio here: `chat` waits on stdin and the socket with `selectors`, and takes Ctrl-C as a
flag through `signal.set_wakeup_fd`, so a keypress never tears a request in half. Permission
requests seen in a replay are only acted on once the replay is over and they are still open.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import sys

from daemon.cli import views
from daemon.cli.client import EVENT, ApiError, ClientError, Subscription
from daemon.cli.messages import CHAT_KEYS
from daemon.cli.render import permission_options

TYPE_CHECKING = False  # as in daemon.cli.commands: no `typing` import at run time
if TYPE_CHECKING:
    from types import FrameType
    from typing import Any

    from daemon.cli.client import Notice
    from daemon.cli.commands import Ctx

__all__ = ["chat", "follow", "send_and_follow"]

# Idle time after which a replay that ended on a gap in seqs counts as over.
_REPLAY_IDLE_S = 0.25
# What chat says of the queue after an interrupt (`views.paused_until`).
_PAUSED = views.paused_until("/resume", "your next message")


def _event(notice: Notice) -> dict[str, Any] | None:
    if notice.method != EVENT:
        return None
    event = notice.params.get("event")
    return event if isinstance(event, dict) else None


class Viewer:
    """Shows a subscription (rendered, or `--json` lines) and tracks open permission requests."""

    def __init__(self, ctx: Ctx, sub: Subscription, *, answer: str) -> None:
        self.ctx = ctx
        self.sub = sub
        # How a person answers an open request: "prompt" (asked here on the terminal),
        # "type" (chat: the next line typed) or "command" (told the `acpd permit` line).
        self.answer = answer
        self.renderer = ctx.renderer()
        self.open: dict[str, tuple[str, dict[str, Any]]] = {}  # request -> (conv id, event)
        self._announced: set[str] = set()

    def show(self, notice: Notice) -> None:
        if self.ctx.json:
            self.ctx.say(notice.to_json())
            self.ctx.out.flush()
        else:
            self.renderer.notice(notice)
        ev = _event(notice)
        if ev is None:
            return
        if ev.get("type") == "permission_requested":
            self.open[str(ev.get("request"))] = (str(notice.params.get("id")), ev)
        elif ev.get("type") == "permission_resolved":
            self.open.pop(str(ev.get("request")), None)

    @property
    def replaying(self) -> bool:
        return self.sub.last_seq < self.sub.through_seq

    @property
    def unannounced(self) -> bool:
        return any(request not in self._announced for request in self.open)

    def answer_open(self) -> None:
        """After the replay: prompt for (or explain how to answer) each open request once."""
        for request, (conv_id, ev) in list(self.open.items()):
            if request in self._announced:
                continue
            self._announced.add(request)
            if self.ctx.json:
                continue
            if self.answer == "prompt":
                self._prompt(conv_id, request, ev)
            elif self.answer == "type":
                n = len(permission_options(ev))
                self.renderer.info(f"    (type 1-{n} to answer permission {request})")
            else:
                sock = f" --socket {self.ctx.args.socket}" if self.ctx.args.socket else ""
                self.renderer.info(f"    answer with: acpd permit{sock} {conv_id} {request} OPTION")

    def _prompt(self, conv_id: str, request: str, ev: dict[str, Any]) -> None:
        options = permission_options(ev)
        try:
            choice = input(f"answer 1-{len(options)} (Enter: leave it open): ").strip()
        except EOFError:
            return
        if not choice:
            return
        option = choose(options, choice)
        if option is None:
            self.renderer.info(f"(no option {choice!r}; use `acpd permit {conv_id} {request}`)")
            return
        respond(self.ctx, self.renderer.info, conv_id, request, option)


def choose(options: list[dict[str, str]], choice: str) -> str | None:
    """An option id from a 1-based number or the id itself."""
    if choice.isdigit() and 1 <= int(choice) <= len(options):
        return options[int(choice) - 1]["option_id"]
    return choice if any(o["option_id"] == choice for o in options) else None


def respond(ctx: Ctx, info: Any, conv_id: str, request: str, option: str) -> None:
    try:
        ctx.call("permissions/respond", {"id": conv_id, "request": request, "option": option})
    except ApiError as exc:  # most likely answered meanwhile, by someone else or the deadline
        info(f"(not answered: {exc.message})")


def _watch(viewer: Viewer, handle: Any) -> None:
    """Feed notices to `handle` until it returns True; answer permissions after the replay."""
    sub = viewer.sub
    while True:
        notice = sub.next(_REPLAY_IDLE_S if viewer.unannounced else None)
        if notice is None:  # quiet: whatever the replay held has been shown
            viewer.answer_open()
            continue
        if handle(notice):
            return
        if not viewer.replaying:
            viewer.answer_open()


def _check_failed(ctx: Ctx, conv_id: str, ev: dict[str, Any]) -> None:
    """After an error event: a failed conversation will run nothing more, so stop waiting."""
    if ev.get("type") != "error":
        return
    conv = ctx.call("conversations/get", {"id": conv_id})["conversation"]
    if conv.get("status") == "failed":
        raise ClientError(f"conversation {conv_id} failed: {ev.get('message')}")


def _answer_mode(ctx: Ctx) -> str:
    return "prompt" if not ctx.json and sys.stdin.isatty() else "command"


def follow(ctx: Ctx, conv_id: str, from_seq: int) -> int:
    """`acpd follow`: replay after `from_seq` (negative: the last events), then live."""
    after = from_seq
    if after < 0:
        last = ctx.call("conversations/get", {"id": conv_id})["conversation"]["last_seq"]
        after = max(0, int(last) + from_seq)
    sub = Subscription(ctx.client, conv_id, after_seq=after)
    sub.start()
    viewer = Viewer(ctx, sub, answer=_answer_mode(ctx))
    try:
        _watch(viewer, lambda notice: viewer.show(notice))
    finally:
        viewer.renderer.close()
    return 0


def send_and_follow(
    ctx: Ctx,
    conv_id: str,
    text: str,
    *,
    run: bool,
    interrupt: bool,
    follow: bool,
    steer: bool = False,
) -> int:
    """`acpd send`: append a message; with `follow`, stream its turn until it ends (a steer
    taken into the running turn: that turn)."""
    params: dict[str, Any] = {"id": conv_id, "text": text, "run": run, "interrupt": interrupt}
    if steer:
        params = {"id": conv_id, "text": text, "steer": True}
    sub = None
    if follow:
        # Subscribe before sending, from the current end, so the turn is seen from its start.
        conv = ctx.call("conversations/get", {"id": conv_id})["conversation"]
        conv_id = params["id"] = conv["id"]
        sub = Subscription(ctx.client, conv_id, after_seq=int(conv["last_seq"]))
        sub.start()
    result = ctx.call("messages/send", params)
    seq = result.get("seq")
    staged = not run and not interrupt
    if ctx.json:
        ctx.emit(result)
    elif steer:
        ctx.say(views.steered(result))
    elif not follow or staged or result.get("queued") or result.get("resumed"):
        # Following, a turn that starts now shows itself: the line would only repeat it.
        ctx.say(views.sent(result, conv_id, staged=staged))
    ctx.out.flush()
    if sub is None:
        return 0
    viewer = Viewer(ctx, sub, answer=_answer_mode(ctx))
    if isinstance(seq, int):
        viewer.renderer.own_seqs.add(seq)  # the user knows what they sent

    requests: set[object] = set()  # permission requests of this turn (answers name no turn)

    def handle(notice: Notice) -> bool:
        nonlocal seq
        ev = _event(notice)
        steered = ev is not None and ev.get("type") == "user_message_steered"
        if steered and ev is not None and ev.get("message_seq") == seq:
            seq = ev.get("prompt_seq")  # it went into that turn: follow it to its end
        if ev is not None:
            ours = ev.get("prompt_seq") == seq or ev.get("seq") == seq
            if ours and ev.get("type") == "permission_requested":
                requests.add(ev.get("request"))
            elif ev.get("type") == "permission_resolved":
                ours = ev.get("request") in requests
            if not ours and ev.get("type") not in ("error", "agent_restarted"):
                return False
        elif notice.method != "conversation/lagged" and notice.params.get("prompt_seq") != seq:
            return False
        viewer.show(notice)
        if ev is not None:
            _check_failed(ctx, conv_id, ev)
            return ev.get("type") == "turn_ended" and ev.get("prompt_seq") == seq
        return False

    try:
        _watch(viewer, handle)
    finally:
        viewer.renderer.close()
    return 0


def chat(ctx: Ctx, conv_id: str | None, create: dict[str, Any] | None, from_seq: int) -> int:
    """`acpd chat`: a conversation (new if `conv_id` is None) on the terminal."""
    if conv_id is None:
        conv = ctx.call("conversations/create", create)["conversation"]
        ctx.note(f"new conversation {conv['id']} with agent {conv['agent']}")
    else:
        conv = ctx.call("conversations/get", {"id": conv_id})["conversation"]
        ctx.note(f"conversation {conv['id']} with agent {conv['agent']} ({conv['status']})")
    after = from_seq if from_seq >= 0 else max(0, int(conv["last_seq"]) + from_seq)
    sub = Subscription(ctx.client, conv["id"], after_seq=after)
    sub.start()
    session = _Chat(ctx, sub, conv)
    if session.tty:
        ctx.note(CHAT_KEYS)
    return session.run()


class _Chat:
    def __init__(self, ctx: Ctx, sub: Subscription, conv: dict[str, Any]) -> None:
        self.ctx = ctx
        self.sub = sub
        self.conv_id: str = conv["id"]
        # Whether a turn runs: from the snapshot, then from events newer than it (the replay
        # also holds older turns' starts and ends). Ctrl-C when idle must not call
        # `turns/interrupt`, which would pause the queue on the way out.
        self.running = conv.get("status") == "running"
        self._snapshot_seq = int(conv.get("last_seq", 0))
        self.viewer = Viewer(ctx, sub, answer="type")
        # Notes for people; with --json stdout holds JSON objects only, so they go to stderr.
        self.info = ctx.note if ctx.json else self.viewer.renderer.info
        self.stdin_fd = sys.stdin.fileno()
        self.tty = os.isatty(self.stdin_fd)
        self.waiting: set[int] = set()  # our messages whose turn has not ended
        self.stdin_open = True
        self.done = False
        self._buf = b""
        self._sigint = False

    def run(self) -> int:
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        old_fd = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        old_handler = signal.signal(signal.SIGINT, self._on_sigint)
        sel = selectors.DefaultSelector()
        sel.register(self.stdin_fd, selectors.EVENT_READ, "stdin")
        sel.register(self.sub.client.fileno(), selectors.EVENT_READ, "socket")
        sel.register(wake_r, selectors.EVENT_READ, "signal")
        try:
            while not self.done:
                if self.sub.client.has_buffered():  # select would not see these
                    self._notice(self.sub.next(0))
                    continue
                ready = sel.select(_REPLAY_IDLE_S if self.viewer.unannounced else None)
                if not ready:
                    self.viewer.answer_open()
                for key, _ in ready:
                    if key.data == "socket":
                        self._notice(self.sub.next(0))
                    elif key.data == "stdin":
                        self._stdin(sel)
                    else:
                        wake_r.recv(64)
                if self._sigint:
                    self._sigint = False
                    self._guarded(self._interrupt_or_leave)
        finally:
            signal.signal(signal.SIGINT, old_handler)
            signal.set_wakeup_fd(old_fd)
            sel.close()
            wake_r.close()
            wake_w.close()
            self.viewer.renderer.close()
        return 0

    def _guarded(self, fn: Any, *args: Any) -> None:
        """Run what a person asked for; the daemon saying no is news, not the end of the chat."""
        try:
            fn(*args)
        except ApiError as exc:
            self.info(f"(error: {exc.message})")

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self._sigint:  # a second Ctrl-C before the loop got to the first: something hangs
            raise KeyboardInterrupt
        self._sigint = True

    def _interrupt_or_leave(self) -> None:
        if not self.running:
            self.done = True
        elif self.ctx.call("turns/interrupt", {"id": self.conv_id}).get("interrupted"):
            self.info(f"(interrupted; {_PAUSED})")
        else:
            self.info("(the turn had already ended)")
            self.running = False

    def _notice(self, notice: Notice | None) -> None:
        if notice is None:
            return
        self.viewer.show(notice)
        ev = _event(notice)
        if ev is not None:
            kind = ev.get("type")
            if kind in ("turn_started", "turn_ended") and ev.get("seq", 0) > self._snapshot_seq:
                self.running = kind == "turn_started"
            if kind == "turn_ended" and isinstance(ev.get("prompt_seq"), int):
                self.waiting.discard(ev["prompt_seq"])
            if self.waiting:
                try:
                    _check_failed(self.ctx, self.conv_id, ev)
                except ClientError as exc:
                    if not self.tty:  # a script's messages will not run: say so and stop
                        raise
                    self.info(f"({exc}; a new message retries)")
                    self.waiting.clear()
        if not self.viewer.replaying:
            self.viewer.answer_open()
        if not self.stdin_open and not self.waiting:
            self.done = True

    def _stdin(self, sel: selectors.BaseSelector) -> None:
        data = os.read(self.stdin_fd, 65536)
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        if not data:  # EOF: a last unterminated line still counts
            lines.append(self._buf)
            self._buf = b""
        for line in lines:
            self._guarded(self._line, line.decode(errors="replace").rstrip("\r"))
        if not data:
            sel.unregister(self.stdin_fd)
            self.stdin_open = False
            # A person pressing Ctrl-D wants out now; a script's pipe wants its replies first.
            self.done = self.tty or not self.waiting

    def _line(self, line: str) -> None:
        text = line.strip()
        if not text or self.done:
            return
        if text.startswith("/") and self._slash(text):
            return
        if self.viewer.open:  # an option's number or id answers the oldest open request
            request, (conv_id, ev) = next(iter(self.viewer.open.items()))
            option = choose(permission_options(ev), text)
            if option is not None:
                respond(self.ctx, self.info, conv_id, request, option)
                return
        self._send({"id": self.conv_id, "text": line})

    def _send(self, params: dict[str, Any]) -> None:
        result = self.ctx.call("messages/send", params)
        seq, queued, number = result.get("seq"), result.get("queued", 0), result.get("number")
        if isinstance(seq, int) and not result.get("steered"):  # a steer has no turn of its own
            self.waiting.add(seq)
            if self.tty:  # the terminal already shows what was typed
                self.viewer.renderer.own_seqs.add(seq)
        if self.ctx.json:
            self.ctx.emit(result)
            self.ctx.out.flush()
            return
        if params.get("steer"):
            self.info(f"({views.steered(result)})")
            return
        # A message that starts at once shows itself (the typed line, then the reply).
        what = f"message {number}" if isinstance(number, int) else f"seq {seq}"
        again = "; the queue runs again, in order" if result.get("resumed") else ""
        if queued:
            self.info(f"({what} queued: {views.turns(queued)} ahead{again})")
        elif again:
            self.info(f"({what} starts now{again})")

    def _slash(self, text: str) -> bool:
        """Run a /command; False if it is none, so the line is sent as a message."""
        name = text.split()[0]
        if name in ("/quit", "/exit"):
            self.done = True
        elif name == "/help":
            self.info(CHAT_KEYS)
        elif name == "/interrupt":
            res = self.ctx.call("turns/interrupt", {"id": self.conv_id})
            done = "interrupted" if res.get("interrupted") else "no turn was running"
            self._result(res, f"({done}; {_PAUSED})")
        elif name == "/resume":
            res = self.ctx.call("conversations/resume", {"id": self.conv_id})
            self._result(res, f"({views.resumed(res)})")
        elif name == "/queue":
            res = self.ctx.call("messages/queue", {"id": self.conv_id})
            self._result(res, views.queue(res))
        elif name in ("/answer", "/decline"):
            self._answer(name, text.split()[1:])
        elif name == "/steer":
            steer = text[len(name) :].strip()
            if not steer:
                self.info("(/steer TEXT: into the running turn if the agent takes it)")
            else:
                self._send({"id": self.conv_id, "text": steer, "steer": True})
        else:
            return False
        return True

    def _answer(self, name: str, words: list[str]) -> None:
        """`/answer [REQUEST] FIELD=VALUE...`, `/decline [REQUEST]`: the agent's question."""
        from daemon.cli import questions

        conv = self.ctx.call("conversations/get", {"id": self.conv_id})["conversation"]
        open_ = [q for q in conv.get("questions") or [] if isinstance(q, dict)]
        ids = [str(q.get("request")) for q in open_]
        request = words.pop(0) if words and words[0] in ids else (ids[0] if len(ids) == 1 else None)
        if request is None:
            self.info("(no question is open)" if not ids else f"(name one: {', '.join(ids)})")
            return
        params: dict[str, Any] = {"id": self.conv_id, "request": request}
        if name == "/decline":
            params["action"] = "decline"
        else:
            asked = next(q for q in open_ if q.get("request") == request)
            try:
                params.update(action="accept", content=questions.form_content(asked, words))
            except ValueError as exc:
                self.info(f"({exc})")
                return
        res = self.ctx.call("elicitations/respond", params)
        self._result(res, f"(answered {request}: {params['action']})")

    def _result(self, result: dict[str, Any], text: str) -> None:
        """A /command's outcome: its JSON-RPC result with --json, else `text` for people."""
        if self.ctx.json:
            self.ctx.emit(result)
            self.ctx.out.flush()
        else:
            for line in text.split("\n"):
                self.info(line)
