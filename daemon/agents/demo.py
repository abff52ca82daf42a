"""acpd's built-in demo agent: a real ACP agent (stdio, JSON-RPC 2.0) needing no network or key.

Run it as `python -m daemon.agents.demo`; ACP on stdin/stdout, its log on stderr. It is the
default agent of the quick start and the subprocess fake of the tests.

What it does:
* `initialize`: protocol version 1, `loadSession: true`, agentInfo name "acpd-demo", and
  `_meta.steering.supported: true`.
* `session/new`: a fresh session (ids are random, unique across processes).
* `session/load`: replays the session's history as `user_message_chunk` and
  `agent_message_chunk` updates, then answers `{}`; unknown session: error -32002. History is
  one JSON file per session under `$ACPD_DEMO_DIR` (default `$XDG_STATE_HOME/acpd-demo`, or
  `~/.local/state/acpd-demo`), so it survives restarts.
* `session/prompt`: a short `agent_thought_chunk`, a `plan`, a `tool_call` and its completed
  `tool_call_update`, then a reply to the prompt's text in several `agent_message_chunk`s,
  `$ACPD_DEMO_DELAY` seconds apart (default 0.05); `end_turn`. If the text contains the word
  "permission", it first asks `session/request_permission` (options "allow", allow_once, and
  "reject", reject_once) and says what it was told.
* `session/cancel` stops the turn at any point (a pending permission request is abandoned)
  and the prompt answers `cancelled`. One prompt at a time per session (-32600 otherwise).
* `_session/steering` (ACP.md §20): while a turn runs, the text joins it (`injected`): the
  turn says `(steered: TEXT)` before its next chunk, or at its end. With no turn running it
  answers `promptRequired` (reason `noRunningTurn`) and does nothing: it never starts a turn
  by itself, whatever `idleBehavior` says.
* Unknown notifications are ignored, unknown requests answered -32601. It exits at stdin EOF.

Test hooks, as the whole prompt text:
* `/echo TEXT`: reply TEXT in one chunk, at once.
* `/slow N`: stream N chunks ("1 ", "2 ", ...), `$ACPD_DEMO_DELAY` apart.
* `/flood N`: send N chunks as fast as possible.
* `/hang`: never answer, and ignore `session/cancel` (for drain timeouts).
* `/crash`: write a line to stderr and exit with status 3.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import uuid
from pathlib import Path
from typing import Any

import attrs
import msgspec
import trio

from daemon.agents import _demo_store as store
from daemon.agents.peer import AgentPeer
from protocol import acp
from protocol.jsonrpc import INVALID_REQUEST, METHOD_NOT_FOUND, RESOURCE_NOT_FOUND, RpcFailure

__all__ = ["DemoAgent", "main"]

log = logging.getLogger("acpd-demo")

AGENT_INFO = acp.Implementation(name="acpd-demo", title="acpd demo agent", version="1")
PERMISSION_OPTIONS = [
    acp.PermissionOption(option_id="allow", name="Allow", kind="allow_once"),
    acp.PermissionOption(option_id="reject", name="Reject", kind="reject_once"),
]
_PERMISSION_WORD = re.compile(r"\bpermission\b", re.IGNORECASE)
_MAX_CHUNKS = 1_000_000

_decoders: dict[str, msgspec.json.Decoder[Any]] = {
    acp.INITIALIZE: msgspec.json.Decoder(acp.InitializeRequest),
    acp.SESSION_NEW: msgspec.json.Decoder(acp.NewSessionRequest),
    acp.SESSION_LOAD: msgspec.json.Decoder(acp.LoadSessionRequest),
    acp.SESSION_PROMPT: msgspec.json.Decoder(acp.PromptRequest),
    acp.SESSION_STEERING: msgspec.json.Decoder(acp.SteeringRequest),
}
_cancel_decoder = msgspec.json.Decoder(acp.CancelNotification)


@attrs.define(eq=False)
class _Session:
    file: store.SessionFile
    turn: trio.CancelScope | None = None
    busy: bool = False
    prompts_received: int = 0  # read off the wire, whether or not their task has started
    cancel_next: bool = False  # a cancel came after a prompt was read but before it started
    steerable: bool = False  # a turn runs that takes steers (until it says the last ones)
    steers: list[str] = attrs.field(factory=list)  # taken, not yet said


def _decode(method: str, raw: msgspec.Raw) -> object:
    try:
        return _decoders[method].decode(raw or b"{}")
    except msgspec.DecodeError as exc:
        raise RpcFailure(-32602, f"invalid params: {exc}") from None


def _count(arg: str, default: int) -> int:
    try:
        return max(0, min(int(arg), _MAX_CHUNKS))
    except ValueError:
        return default


class DemoAgent:
    """The agent's logic over one stream; `run()` serves it until end of stream."""

    def __init__(self, stream: trio.abc.Stream, *, state_dir: Path, delay: float) -> None:
        self.state_dir = state_dir
        self.delay = delay
        self.sessions: dict[str, _Session] = {}
        self.peer = AgentPeer(
            stream,
            on_update=lambda _sid, _update: None,  # clients send no session/update
            on_request=self.handle,
            on_notification=self.notified,
            on_request_received=self.received,
            log=log,
        )
        self._tool_ids = 0

    async def run(self) -> None:
        await self.peer.run()

    # --- dispatch -----------------------------------------------------------------------------

    async def handle(self, method: str, raw: msgspec.Raw) -> object:
        params = _decode(method, raw) if method in _decoders else None
        if isinstance(params, acp.InitializeRequest):
            caps = acp.AgentCapabilities(load_session=True)
            return acp.InitializeResponse(
                protocol_version=acp.PROTOCOL_VERSION,
                agent_capabilities=caps,
                agent_info=AGENT_INFO,
                meta={"steering": {"supported": True}},
            )
        if isinstance(params, acp.NewSessionRequest):
            file = store.SessionFile(session_id=f"demo-{uuid.uuid4().hex}", cwd=params.cwd)
            self.sessions[file.session_id] = _Session(file)
            await self._save(file)
            return acp.NewSessionResponse(session_id=file.session_id)
        if isinstance(params, acp.LoadSessionRequest):
            return await self._load(params)
        if isinstance(params, acp.PromptRequest):
            return await self._prompt(params)
        if isinstance(params, acp.SteeringRequest):
            return self._steer(params)
        raise RpcFailure(METHOD_NOT_FOUND, f"method not found: {method}")

    def received(self, method: str, raw: msgspec.Raw) -> None:
        if method != acp.SESSION_PROMPT:
            return
        try:
            session = self.sessions.get(_cancel_decoder.decode(raw or b"{}").session_id)
        except msgspec.DecodeError:
            return  # its handler reports that
        if session is not None:
            session.prompts_received += 1

    def notified(self, method: str, raw: msgspec.Raw) -> None:
        if method != acp.SESSION_CANCEL:
            return
        try:
            note = _cancel_decoder.decode(raw or b"{}")
        except msgspec.DecodeError:
            return
        session = self.sessions.get(note.session_id)
        if session is None:
            return
        if session.turn is not None:
            session.turn.cancel(reason="session/cancel")
        elif session.prompts_received:  # read in the same batch as its prompt: not lost
            session.cancel_next = True

    # --- sessions -----------------------------------------------------------------------------

    async def _save(self, file: store.SessionFile) -> None:
        await trio.to_thread.run_sync(store.save, self.state_dir, file)

    async def _load(self, params: acp.LoadSessionRequest) -> acp.LoadSessionResponse:
        try:
            file = await trio.to_thread.run_sync(store.load, self.state_dir, params.session_id)
        except KeyError:
            raise RpcFailure(
                RESOURCE_NOT_FOUND, f"session not found: {params.session_id}"
            ) from None
        file.cwd = params.cwd
        self.sessions[file.session_id] = _Session(file)
        # The whole history goes out before the answer (ACP.md §6).
        for entry in file.history:
            block = acp.TextContent(text=entry.text)
            update: acp.KnownUpdate = (
                acp.UserMessageChunk(content=block)
                if entry.role == "user"
                else acp.AgentMessageChunk(content=block)
            )
            await self._update(file.session_id, update)
        return acp.LoadSessionResponse()

    async def _update(self, session_id: str, update: acp.KnownUpdate) -> None:
        note = acp.SessionNotification(session_id=session_id, update=update)
        await self.peer.notify(acp.SESSION_UPDATE, note)

    def _steer(self, params: acp.SteeringRequest) -> acp.SteeringResponse:
        session = self.sessions.get(params.session_id)
        if session is None:
            raise RpcFailure(RESOURCE_NOT_FOUND, f"session not found: {params.session_id}")
        if not session.steerable:
            return acp.SteeringResponse(outcome="promptRequired", reason="noRunningTurn")
        text = "".join(acp.content_text(block) for block in params.prompt)
        session.steers.append(text)
        session.file.history.append(store.Entry(role="user", text=text))
        return acp.SteeringResponse(outcome="injected")

    # --- a turn -------------------------------------------------------------------------------

    async def _prompt(self, params: acp.PromptRequest) -> acp.PromptResponse:
        session = self.sessions.get(params.session_id)
        if session is None:
            raise RpcFailure(RESOURCE_NOT_FOUND, f"session not found: {params.session_id}")
        session.prompts_received = max(0, session.prompts_received - 1)
        if session.busy:
            raise RpcFailure(INVALID_REQUEST, "a prompt is already running in this session")
        text = "".join(acp.content_text(block) for block in params.prompt)
        command, _, arg = text.strip().partition(" ")
        if command == "/crash":
            print("acpd-demo: crashing on request (/crash)", file=sys.stderr, flush=True)
            os._exit(3)
        said: list[str] = []
        # The turn is cancellable from here, before the first await: a session/cancel that
        # arrives while the prompt is saved cancels the scope before it is entered.
        scope = trio.CancelScope()
        session.busy = True
        session.turn = scope
        if session.cancel_next:
            session.cancel_next = False
            scope.cancel(reason="session/cancel")
        try:
            session.file.history.append(store.Entry(role="user", text=text))
            await self._save(session.file)
            if command == "/hang":
                await trio.sleep_forever()  # outside the turn's scope: cancel has no effect
            with scope:
                if not scope.cancel_called:
                    session.steerable = True
                    await self._turn(session.file.session_id, text, command, arg, said)
                    # The last steers taken are said before the answer: none is left unsaid.
                    session.steerable = False
                    await self._say_steers(session.file.session_id, said)
        finally:
            session.steerable = False
            session.steers.clear()  # a cancelled turn drops what it had not said yet
            session.turn = None
            session.busy = False
        if said:
            session.file.history.append(store.Entry(role="agent", text="".join(said)))
            await self._save(session.file)
        # Any cancel received during the turn makes it `cancelled` (ACP.md §9), even one that
        # came while its last chunk was being written.
        return acp.PromptResponse(stop_reason="cancelled" if scope.cancel_called else "end_turn")

    async def _say(self, session_id: str, text: str, said: list[str]) -> None:
        """Say `text`, after any steer taken since the last chunk."""
        await self._say_steers(session_id, said)
        await self._update(session_id, acp.AgentMessageChunk(content=acp.TextContent(text=text)))
        said.append(text)

    async def _say_steers(self, session_id: str, said: list[str]) -> None:
        session = self.sessions.get(session_id)
        while session is not None and session.steers:
            steer = f"(steered: {session.steers.pop(0)}) "
            await self._update(
                session_id, acp.AgentMessageChunk(content=acp.TextContent(text=steer))
            )
            said.append(steer)

    async def _turn(self, sid: str, text: str, command: str, arg: str, said: list[str]) -> None:
        if command == "/echo":
            await self._say(sid, arg, said)
            return
        if command in ("/slow", "/flood"):
            slow = command == "/slow"
            for i in range(1, _count(arg, 5 if slow else 1000) + 1):
                await self._say(sid, f"{i} ", said)
                if slow:
                    await trio.sleep(self.delay)
                else:
                    await trio.lowlevel.checkpoint()
            return
        short = text if len(text) <= 60 else text[:57] + "..."
        thought = acp.TextContent(text=f"The user said {short!r}. A reply should echo it.")
        await self._update(sid, acp.AgentThoughtChunk(content=thought))
        await self._update(
            sid,
            acp.Plan(
                entries=[
                    acp.PlanEntry(content="Read the prompt", priority="high", status="completed"),
                    acp.PlanEntry(content="Count its words", status="in_progress"),
                    acp.PlanEntry(content="Write a reply", status="pending"),
                ]
            ),
        )
        self._tool_ids += 1
        tool_id = f"demo-tool-{self._tool_ids}"
        await self._update(
            sid,
            acp.ToolCall(
                tool_call_id=tool_id, title="Counting words", kind="think", status="in_progress"
            ),
        )
        await trio.sleep(self.delay)
        words = len(text.split())
        result = acp.Content(content=acp.TextContent(text=f"{words} words"))
        await self._update(
            sid, acp.ToolCallUpdate(tool_call_id=tool_id, status="completed", content=[result])
        )
        verdict = ""
        if _PERMISSION_WORD.search(text):
            verdict = " " + await self._ask(sid)
        reply = f"You said: {text.strip()} ({words} words).{verdict} This is acpd's demo agent."
        words_out = reply.split(" ")
        for i in range(0, len(words_out), 3):
            piece = " ".join(words_out[i : i + 3])
            await self._say(sid, piece if i == 0 else " " + piece, said)
            await trio.sleep(self.delay)

    async def _ask(self, sid: str) -> str:
        self._tool_ids += 1
        tool_call = {"toolCallId": f"demo-tool-{self._tool_ids}", "title": "Touch a file",
                     "kind": "edit", "status": "pending"}  # fmt: skip
        params = acp.RequestPermissionRequest(
            session_id=sid, tool_call=tool_call, options=PERMISSION_OPTIONS
        )
        answer = await self.peer.request(
            acp.REQUEST_PERMISSION, params, acp.RequestPermissionResponse
        )
        outcome = answer.outcome
        if isinstance(outcome, acp.CancelledOutcome):
            return "The permission request was cancelled."
        if outcome.option_id == "allow":
            return "Permission granted (allow)."
        return f"Permission denied ({outcome.option_id})."


def state_dir() -> Path:
    return store.default_dir()


def delay_from_env() -> float:
    try:
        return max(0.0, float(os.environ.get("ACPD_DEMO_DELAY", "0.05")))
    except ValueError:
        return 0.05


async def _serve_stdio() -> None:
    # Our own descriptors for the pipes: FdStream makes them non-blocking, and nothing else
    # in this process reads stdin or writes stdout.
    stream = trio.StapledStream(
        trio.lowlevel.FdStream(os.dup(1)), trio.lowlevel.FdStream(os.dup(0))
    )
    agent = DemoAgent(stream, state_dir=state_dir(), delay=delay_from_env())
    async with stream:
        await agent.run()


USAGE = """\
acpd's built-in demo agent: a real ACP agent on stdin/stdout that needs no network or key.
acpd runs it for the agent `demo` (`acpd new --agent demo`); you do not run it by hand.

It answers a prompt with a short thought, a plan, a tool call and a reply that repeats the
prompt, streamed in chunks. To try permission requests, put the word "permission" in a message
(`acpd send ID "ask my permission"`): it asks first (1: Allow, 2: Reject; answer with the
number in `acpd chat`, or `acpd permit ID N`) and then says what it was told.

Hooks, as the whole message:
  /echo TEXT   reply TEXT in one chunk, at once
  /slow N      stream N chunks ("1 ", "2 ", ...), ACPD_DEMO_DELAY apart
  /flood N     send N chunks as fast as it can
  /hang        never answer, and ignore cancels (the drain timeout then restarts it)
  /crash       write a line to stderr and exit with status 3

Environment:
  ACPD_DEMO_DELAY  seconds between reply chunks (default 0.05)
  ACPD_DEMO_DIR    where it keeps its sessions, so `session/load` works after a restart
                   (default $XDG_STATE_HOME/acpd-demo, or ~/.local/state/acpd-demo)"""


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m daemon.agents.demo",
        description=USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # --help prints the above; other arguments are ignored, as they always were (wrappers and
    # configured commands may pass some).
    parser.parse_known_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING, format="acpd-demo %(levelname)s: %(message)s"
    )
    trio.run(_serve_stdio)


if __name__ == "__main__":
    main()
