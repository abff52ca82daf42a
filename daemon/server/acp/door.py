"""`acpd acp`: ACP as an agent on one stream, acpd's socket API behind it.

An ACP client (an editor, acpx, an SDK's client) talks to `FrontDoor.serve` as to any agent;
every session is a daemon conversation (`sessionId` is its id). The front door translates and
holds nothing durable: conversations, queues, questions and history live in the daemon, so
closing the stream detaches and the conversation goes on.

Connections to the daemon: one "control" connection for calls (connected at `initialize`, or
at the first call that needs it, and again after it is lost), and one per attached session for
its subscription (see `session.Attachment`).

Mapping (README, "ACP front door"):
- `initialize`: protocol version 1; `loadSession`, session `list`, `resume`, `close`; prompts
  of text and resource links only (the daemon stores a message as text); no auth methods.
- `session/new` creates a conversation; `session/load` replays it, then follows it;
  `session/resume` follows it without replay; `session/close` cancels this client's prompts
  and detaches; `session/list` lists conversations (by `cwd` if given).
- `session/prompt` sends a message and answers with its own turn's stop reason.
- `session/cancel` withdraws this client's queued messages and interrupts its running one.
- `session/set_mode`, `session/set_config_option`: forwarded (the daemon's errors passed on).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import attrs
import msgspec
import trio

from daemon.agents.peer import AgentExited, AgentPeer
from daemon.server.acp.link import Connector, DaemonConn, checked, open_daemon_conn
from daemon.server.acp.session import Attachment
from daemon.version import ACPD_VERSION
from protocol import acp, api
from protocol.jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    RESOURCE_NOT_FOUND,
    RpcFailure,
    decode_params,
)

__all__ = ["AGENT_INFO", "FrontDoor"]

log = logging.getLogger("acpd.acp")

T = TypeVar("T")

AGENT_INFO: Final = acp.Implementation(
    name="acpd", title="acpd (durable conversations)", version=ACPD_VERSION
)
# How long one write to the client may block before it counts as gone (an editor that stopped
# reading our stdout); generous: editors pause.
CLIENT_WRITE_BOUND: Final = 30.0
LIST_PAGE: Final = 50  # sessions per session/list page
# After the client's end of stream: how long its requests still in progress (not prompts:
# those are detached at once) may take to be answered before acpd acp exits.
EOF_GRACE: Final = 5.0

Handler = Callable[[Any], Awaitable[msgspec.Struct]]


def prompt_text(blocks: list[acp.ContentBlock]) -> str:
    """The message a prompt becomes: its text blocks, and its resource links as Markdown
    links, in order. Other blocks are refused (-32602): `initialize` did not offer them, and
    the daemon keeps a message as text."""
    parts = []
    for block in blocks:
        if isinstance(block, acp.TextContent | acp.ResourceLink):
            parts.append(acp.content_text(block))
        else:
            kind = type(block).__struct_config__.tag
            raise RpcFailure(
                INVALID_PARAMS,
                f"{kind} content is not supported: acpd passes text and resource links "
                "(promptCapabilities say so)",
            )
    return "".join(parts)


@attrs.define(eq=False)
class FrontDoor:
    connect: Connector
    where: str  # the daemon's socket, for messages
    agent: str | None = None  # for session/new: a configured agent, or
    agent_cmd: list[str] | None = None  # a command; neither: the daemon's default
    notices: bool = False
    elicitation_form: bool = False
    elicitation_url: bool = False
    sessions: dict[str, Attachment] = attrs.field(factory=dict)
    _peer: AgentPeer | None = None
    _nursery: trio.Nursery | None = None
    _control: DaemonConn | None = None
    _control_lock: trio.Lock = attrs.field(factory=trio.Lock)
    _handlers: dict[str, tuple[msgspec.json.Decoder[Any], Handler]] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        def entry(tp: type[T], fn: Callable[[T], Awaitable[msgspec.Struct]]) -> Any:
            return (msgspec.json.Decoder(tp), fn)

        self._handlers = {
            acp.INITIALIZE: entry(acp.InitializeRequest, self._initialize),
            acp.AUTHENTICATE: entry(acp.AuthenticateRequest, self._authenticate),
            acp.SESSION_NEW: entry(acp.NewSessionRequest, self._new),
            acp.SESSION_LOAD: entry(acp.LoadSessionRequest, self._load),
            acp.SESSION_RESUME: entry(acp.ResumeSessionRequest, self._resume),
            acp.SESSION_CLOSE: entry(acp.CloseSessionRequest, self._close),
            acp.SESSION_LIST: entry(acp.ListSessionsRequest, self._list),
            acp.SESSION_PROMPT: entry(acp.PromptRequest, self._prompt),
            acp.SESSION_SET_MODE: entry(acp.SetSessionModeRequest, self._set_mode),
            acp.SESSION_SET_CONFIG_OPTION: entry(
                acp.SetSessionConfigOptionRequest, self._set_config_option
            ),
        }

    # --- serving ------------------------------------------------------------------------------

    async def serve(self, stream: trio.abc.Stream) -> None:
        """Serve one ACP client on `stream` until it closes; then detach everything (the
        conversations are not touched) and return."""
        peer = AgentPeer(
            stream,
            on_update=_client_update,
            on_request=self._request,
            on_notification=self._notification,
            answer_malformed=True,
            write_bound=CLIENT_WRITE_BOUND,
            eof_grace=EOF_GRACE,
            on_eof=self._input_closed,
            log=log,
        )
        self._peer = peer
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await peer.run()  # returns at the client's end of stream
            nursery.cancel_scope.cancel(reason="client gone")
        self._nursery = None

    def _input_closed(self) -> None:
        """The client's end of stream: detach every session now (its prompts answered with
        an error, their messages staying in the conversations); what else is in progress gets
        EOF_GRACE to be answered, for a client that still reads."""
        gone = RpcFailure(
            INTERNAL_ERROR,
            "the client closed its input: acpd acp stops waiting; the message stays queued "
            "in the conversation",
        )
        for att in self.sessions.values():
            att.detach(gone)

    def _client_gone(self) -> None:
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel(reason="client stopped reading")

    async def _request(self, method: str, raw: msgspec.Raw) -> object:
        entry = self._handlers.get(method)
        if entry is None:
            raise RpcFailure(METHOD_NOT_FOUND, f"method not found: {method[:100]}")
        decoder, handler = entry
        return await handler(decode_params(decoder, raw))

    def _notification(self, method: str, raw: msgspec.Raw) -> None:
        if method != acp.SESSION_CANCEL:
            return  # unknown notifications are ignored (ACP.md §1)
        try:
            sid = msgspec.json.decode(raw or b"{}", type=acp.CancelNotification).session_id
        except msgspec.DecodeError as exc:
            log.warning("ignored a malformed session/cancel: %s", exc)
            return
        att = self.sessions.get(sid)
        if att is not None and self._nursery is not None:
            self._nursery.start_soon(self._cancel, att)

    async def _cancel(self, att: Attachment) -> None:
        try:
            await att.cancel_own()
        except RpcFailure as exc:  # a notification has no answer: the log says why
            log.warning("session/cancel of %s failed: %s", att.conv_id, exc.message)

    # --- what attachments use (session.Door) --------------------------------------------------

    async def call(self, method: str, params: msgspec.Struct | dict[str, Any], tp: type[T]) -> T:
        """A call on the control connection (connected, or connected again, on demand)."""
        conn = await self._control_conn()
        return await conn.call(method, params, tp)

    async def update(self, session_id: str, update: acp.KnownUpdate) -> None:
        assert self._peer is not None
        note = acp.SessionNotification(session_id=session_id, update=update)
        try:
            await self._peer.notify(acp.SESSION_UPDATE, note)
        except AgentExited:
            # The client stopped reading (or its pipe broke): the whole door ends, this with it.
            self._client_gone()
            await trio.lowlevel.checkpoint()
            raise

    async def ask(self, method: str, params: msgspec.Struct | dict[str, Any], tp: type[T]) -> T:
        """A request to the client; withdrawn (`$/cancel_request`) if cancelled meanwhile."""
        assert self._peer is not None
        try:
            return await self._peer.request(method, params, tp, withdraw=True)
        except AgentExited:
            raise RpcFailure(INTERNAL_ERROR, "the client is gone") from None

    async def _control_conn(self) -> DaemonConn:
        async with self._control_lock:
            conn = self._control
            if conn is None or not conn.alive:
                assert self._nursery is not None
                self._control = conn = await self._nursery.start(self._hold_control)
            return conn

    async def _hold_control(self, *, task_status: trio.TaskStatus[DaemonConn]) -> None:
        async with open_daemon_conn(self.connect, self.where) as conn:
            task_status.started(conn)
            await conn.wait_closed()

    # --- handlers ----------------------------------------------------------------------------

    async def _initialize(self, p: acp.InitializeRequest) -> acp.InitializeResponse:
        caps = p.client_capabilities
        session = caps.session if isinstance(caps.session, acp.ClientSessionCapabilities) else None
        self.notices = session is not None and acp.supported(session.notices)
        elicitation = caps.elicitation
        if isinstance(elicitation, acp.ElicitationCapabilities):
            self.elicitation_form = acp.supported(elicitation.form)
            self.elicitation_url = acp.supported(elicitation.url)
        await self._control_conn()  # a daemon that is not running: say so now
        return acp.InitializeResponse(
            protocol_version=acp.PROTOCOL_VERSION,  # the only one we speak, whatever was asked
            agent_capabilities=acp.AgentCapabilities(
                load_session=True,
                session_capabilities=acp.SessionCapabilities(list={}, resume={}, close={}),
            ),
            auth_methods=[],
            agent_info=AGENT_INFO,
        )

    async def _authenticate(self, p: acp.AuthenticateRequest) -> acp.EmptyResult:
        raise RpcFailure(
            INVALID_PARAMS, "acpd offers no authentication methods: the daemon logs in to agents"
        )

    async def _new(self, p: acp.NewSessionRequest) -> acp.NewSessionResponse:
        params = checked(
            api.CreateParams,
            agent=self.agent,
            agent_cmd=self.agent_cmd,
            cwd=p.cwd,
            mcp_servers=p.mcp_servers or None,  # the hosted agent's sessions get them
        )
        created = await self.call("conversations/create", params, api.ConversationResult)
        conv = created.conversation
        await self._attach(conv.id, "new", 0)
        return acp.NewSessionResponse(session_id=conv.id)

    async def _load(self, p: acp.LoadSessionRequest) -> acp.LoadSessionResponse:
        conv = await self._conversation(p.session_id)
        await self._attach(conv["id"], "load", 0)
        return acp.LoadSessionResponse(**_session_state(conv))

    async def _resume(self, p: acp.ResumeSessionRequest) -> acp.ResumeSessionResponse:
        conv = await self._conversation(p.session_id)
        await self._attach(conv["id"], "resume", int(conv.get("last_seq", 0)))
        return acp.ResumeSessionResponse(**_session_state(conv))

    async def _close(self, p: acp.CloseSessionRequest) -> acp.EmptyResult:
        att = self.sessions.pop(p.session_id, None)
        if att is not None:
            # ACP: close cancels ongoing work as session/cancel would, then frees the session.
            try:
                await att.cancel_own()
            finally:
                att.detach()
        return acp.EmptyResult()

    async def _list(self, p: acp.ListSessionsRequest) -> acp.ListSessionsResponse:
        cursor = p.cursor if isinstance(p.cursor, str) else None
        cwd = p.cwd if isinstance(p.cwd, str) else None
        params = checked(api.ListParams, limit=LIST_PAGE, before=cursor, cwd=cwd)
        page = await self.call("conversations/list", params, api.ListResult)
        sessions = [
            acp.SessionInfo(
                session_id=c.id,
                cwd=c.cwd,
                title=c.title or msgspec.UNSET,
                updated_at=c.updated_at,
            )
            for c in page.conversations
        ]
        nxt = page.next if page.next is not None else msgspec.UNSET
        return acp.ListSessionsResponse(sessions=sessions, next_cursor=nxt)

    async def _prompt(self, p: acp.PromptRequest) -> acp.PromptResponse:
        att = self._attached(p.session_id)
        return await att.prompt(prompt_text(p.prompt))

    async def _set_mode(self, p: acp.SetSessionModeRequest) -> acp.EmptyResult:
        self._attached(p.session_id)
        params = {"id": p.session_id, "mode": p.mode_id}
        await self.call("conversations/set_mode", params, dict[str, Any])
        return acp.EmptyResult()

    async def _set_config_option(
        self, p: acp.SetSessionConfigOptionRequest
    ) -> acp.SetSessionConfigOptionResponse:
        self._attached(p.session_id)
        params = {"id": p.session_id, "option": p.config_id, "value": p.value}
        result = await self.call("conversations/set_option", params, dict[str, Any])
        # The daemon answers with the conversation, whose options the agent just confirmed.
        options = _session_state(result.get("conversation", {})).get("config_options", [])
        return acp.SetSessionConfigOptionResponse(config_options=options)

    # --- sessions ----------------------------------------------------------------------------

    async def _conversation(self, session_id: str) -> dict[str, Any]:
        # A plain dict: fields newer than this front door (modes, config_options) kept.
        result = await self.call("conversations/get", api.IdParams(id=session_id), dict[str, Any])
        conv = result.get("conversation")
        if not isinstance(conv, dict) or conv.get("id") != session_id:
            # An id prefix resolves in the daemon: ACP session ids are exact.
            raise RpcFailure(RESOURCE_NOT_FOUND, f"no such session: {session_id}")
        return conv

    def _attached(self, session_id: str) -> Attachment:
        att = self.sessions.get(session_id)
        if att is None:
            raise RpcFailure(
                RESOURCE_NOT_FOUND,
                f"session {session_id} is not open here: session/new, load or resume it first",
            )
        return att

    async def _attach(self, conv_id: str, mode: str, after_seq: int) -> None:
        old = self.sessions.pop(conv_id, None)
        if old is not None:
            old.detach()  # loaded again: the new attachment replaces it
        att = Attachment(self, conv_id, mode, after_seq)
        assert self._nursery is not None
        await self._nursery.start(att.run)
        self.sessions[conv_id] = att
        self._nursery.start_soon(self._forget_when_finished, att)

    async def _forget_when_finished(self, att: Attachment) -> None:
        await att.finished.wait()
        if self.sessions.get(att.conv_id) is att:
            del self.sessions[att.conv_id]


def _session_state(conv: dict[str, Any]) -> dict[str, Any]:
    """`modes` and `configOptions` for a session/load or resume answer, from a conversation
    that has them (CONTRACT.md, second round); nothing from one that does not."""
    out: dict[str, Any] = {}
    modes = conv.get("modes")
    if isinstance(modes, dict) and isinstance(modes.get("current"), str):
        available = [
            acp.SessionMode(
                id=str(m.get("id")),
                name=str(m.get("name") or m.get("id")),
                description=m["description"]
                if isinstance(m.get("description"), str)
                else msgspec.UNSET,
            )
            for m in modes.get("available") or []
            if isinstance(m, dict) and m.get("id")
        ]
        out["modes"] = acp.SessionModeState(
            current_mode_id=modes["current"], available_modes=available
        )
    options = conv.get("config_options")
    if isinstance(options, list):
        out["config_options"] = options
    return out


def _client_update(_sid: str, _update: object) -> None:
    log.debug("ignored a session/update from the client")
