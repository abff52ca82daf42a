"""ACP agents as child processes, and the connection object the engine drives.

`open_agent` spawns an agent in its own process group (and cgroup, where acpd has one) with an
explicit environment and a lower CPU priority, runs an `AgentPeer` over its stdio, drains its
stderr into a bounded ring, and performs `initialize`. Leaving the context stops the agent:
stdin closed, SIGTERM to its whole tree (`daemon.agents.tree`), a grace period, then SIGKILL to
whatever of the tree is left, so no grandchild survives (several real agents ignore stdin EOF
and wrappers orphan their children, ACP.md §19). `connect_agent` does the same over an
existing stream, for in-process fakes.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Final, Protocol

import attrs
import trio

from daemon.agents._process import (
    STDERR_TAIL,
    LogBudget,
    StderrRing,
    agent_env,
    printable,
    signal_group,
)
from daemon.agents.agentlog import AgentLog
from daemon.agents.auth import AuthSettings
from daemon.agents.detail import error_detail, failure_detail
from daemon.agents.peer import AgentExited, AgentPeer, PeerHandlers
from daemon.agents.requests import SessionRequests, SessionSetUp
from daemon.agents.tree import AgentTree
from daemon.version import ACPD_VERSION
from protocol import acp
from protocol.framing import LineSplitter
from protocol.jsonrpc import RpcFailure

__all__ = [
    "AgentConnection",
    "AgentExited",
    "AgentSpec",
    "AgentStartError",
    "Launcher",
    "PeerHandlers",
    "SessionSetUp",
    "agent_env",
    "error_detail",
]

log = logging.getLogger("acpd.agent")

# After the agent's stdout ends, how long to wait for its exit status and the last of its
# stderr (both normally follow at once; a grandchild may hold stderr open).
_SETTLE: Final = 1.0
# SIGKILL cannot be ignored, but reaping still takes a moment: the bound on stop() beyond grace.
_KILL_BOUND: Final = 5.0


def client_info() -> acp.Implementation:
    """Our `clientInfo`."""
    return acp.Implementation(name="acpd", version=ACPD_VERSION)


class AgentStartError(Exception):
    """The agent could not be started: spawn failed, `initialize` failed, the agent speaks
    a protocol version acpd does not, or it cannot be authenticated. The message is one line;
    `stderr` has the agent's last stderr output, if any; `detail` what a person needs to act
    (the agent's error data, the stderr tail: an `error` event's `detail`). `permanent`:
    retrying cannot help (no such command or cwd, a login needed) until a person acts."""

    def __init__(
        self, message: str, *, stderr: str = "", permanent: bool = False, detail: str = ""
    ) -> None:
        super().__init__(message)
        self.stderr = stderr
        self.permanent = permanent
        self.detail = detail or stderr


@attrs.frozen
class AgentSpec:
    name: str
    argv: tuple[str, ...]
    cwd: str
    env: Mapping[str, str] = attrs.field(factory=dict)  # on top of the allow-listed base
    conversation: str = ""  # whose agent this is (recorded with its process tree)
    # How to authenticate (config `auth`, the preset's `auth_vars`): `session.open_session`.
    auth: AuthSettings = attrs.field(factory=AuthSettings)
    # MCP servers for its sessions (config `mcp_servers`): `session.open_session`.
    mcp_servers: tuple[acp.McpServer, ...] = ()
    # Where its stderr is kept (`paths.agent_log_path`); None: nowhere but the ring.
    log_path: Path | None = None


class Launcher(Protocol):
    """How the engine starts an agent: `open_agent` (with its tree tracked, `orphans.py`) in
    production, an in-process fake in tests. Leaving the block stops the agent."""

    def __call__(
        self, spec: AgentSpec, handlers: PeerHandlers
    ) -> AbstractAsyncContextManager[AgentConnection]: ...


_NOT_INITIALIZED: Final = acp.InitializeResponse(protocol_version=0)


@attrs.define(eq=False)
class AgentConnection(SessionRequests):
    """An initialized agent. Made by `open_agent`/`connect_agent`, valid inside their block."""

    peer: AgentPeer
    process: trio.Process | None = None  # None for in-process (stream) agents
    init: acp.InitializeResponse = _NOT_INITIALIZED  # set once `initialize` answered
    name: str = "agent"
    stop_grace: float = 2.0
    tree: AgentTree | None = None  # a process's whole tree (None for in-process agents)
    # What it was started with: authentication looks at its environment (are a method's
    # variables set?) and names its command (a terminal login reruns it).
    argv: tuple[str, ...] = ()
    env: Mapping[str, str] = attrs.field(factory=dict)
    log_file: AgentLog | None = None
    _stderr: StderrRing = attrs.field(factory=StderrRing, init=False)
    _gone: trio.Event = attrs.field(factory=trio.Event, init=False)
    _exited: trio.Event = attrs.field(factory=trio.Event, init=False)
    _stderr_done: trio.Event = attrs.field(factory=trio.Event, init=False)
    _stop_lock: trio.Lock = attrs.field(factory=trio.Lock, init=False)
    _stopped: bool = attrs.field(default=False, init=False)

    @property
    def can_load(self) -> bool:
        return self.init.agent_capabilities.load_session

    @property
    def can_resume(self) -> bool:
        return acp.supported(self.init.agent_capabilities.session_capabilities.resume)

    @property
    def can_close(self) -> bool:
        return acp.supported(self.init.agent_capabilities.session_capabilities.close)

    @property
    def can_steer(self) -> bool:
        """It advertised `_session/steering` (ACP.md §20); never sent otherwise."""
        return acp.steering_advertised(self.init)

    @property
    def alive(self) -> bool:
        """False once its stream has ended (it exited, crashed or was stopped)."""
        return not self._gone.is_set()

    @property
    def returncode(self) -> int | None:
        return self.process.returncode if self.process is not None else None

    # --- ACP ----------------------------------------------------------------------------------

    async def initialize(self) -> acp.InitializeResponse:
        """Negotiate (ACP.md §3). Raises `AgentStartError` for a version we cannot speak."""
        # Questions (elicitation) go to people, as forms or links: both modes are shown.
        asking = acp.ElicitationCapabilities(form={}, url={})
        caps = acp.ClientCapabilities(
            fs=acp.FileSystemCapability(), terminal=False, elicitation=asking
        )
        params = acp.InitializeRequest(
            protocol_version=acp.PROTOCOL_VERSION,
            client_capabilities=caps,
            client_info=client_info(),
        )
        resp = await self.peer.request(acp.INITIALIZE, params, acp.InitializeResponse)
        if resp.protocol_version != acp.PROTOCOL_VERSION:
            raise AgentStartError(
                f"agent {self.name!r} speaks ACP protocol version {resp.protocol_version}; "
                f"acpd speaks {acp.PROTOCOL_VERSION}"
            )
        self.init = resp
        return resp

    @classmethod
    @asynccontextmanager
    async def hosting(
        cls,
        peer: AgentPeer,
        *,
        process: trio.Process | None = None,
        stderr: trio.abc.ReceiveStream | None = None,
        name: str = "agent",
        stop_grace: float = 2.0,
        tree: AgentTree | None = None,
        argv: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        log_file: AgentLog | None = None,
    ) -> AsyncIterator[AgentConnection]:
        """Run a connection's tasks over `peer` (and `process`, the leader of `tree`),
        initialize, yield it; stop it on the way out, however we leave.

        Errors from the body and start-up failures are re-raised *after* the nursery, so
        callers get them as they are, not wrapped in an exception group.
        """
        conn = cls(
            peer,
            process,
            name=name,
            stop_grace=stop_grace,
            tree=tree,
            argv=tuple(argv),
            env=dict(agent_env({}) if env is None else env),
            log_file=log_file,
        )
        failure: Exception | None = None
        async with trio.open_nursery() as nursery:
            try:
                if stderr is not None:
                    nursery.start_soon(conn._drain_stderr, stderr)
                if process is not None:
                    nursery.start_soon(conn._watch_process, process)
                await nursery.start(conn._run_peer)
                try:
                    await conn.initialize()
                except (RpcFailure, AgentExited) as exc:
                    if isinstance(exc, AgentExited):
                        with trio.move_on_after(_SETTLE):
                            await conn.wait_exited()
                    failure = conn._start_error(exc)
                except AgentStartError as exc:
                    failure = exc
                else:
                    try:
                        yield conn
                    except Exception as exc:
                        failure = exc
            finally:
                with trio.move_on_after(conn.stop_grace + _KILL_BOUND, shield=True):
                    await conn.stop()
                # The tree is dead, so stdout and stderr end at once, unless something that
                # escaped it holds them: don't wait for that.
                nursery.cancel_scope.deadline = trio.current_time() + _SETTLE
        if failure is not None:
            raise failure

    # --- lifecycle ----------------------------------------------------------------------------

    def stderr_tail(self) -> str:
        """The last ~4 KiB of the agent's stderr (escapes stripped), for error events."""
        return self._stderr.text()

    def failure_detail(self) -> str:
        """An `error` event's `detail` when the agent failed or exited: the last lines of its
        stderr and the last malformed line it wrote, bounded; "" if there is neither."""
        return failure_detail(self.stderr_tail(), self.peer.last_malformed)

    async def wait_exited(self) -> None:
        """Block until the agent is gone: its stdout ended, or its process exited (then
        briefly for its exit status and the last of its stderr)."""
        await self._gone.wait()
        if self.process is not None:
            with trio.move_on_after(_SETTLE):
                await self._exited.wait()
                await self._stderr_done.wait()

    async def stop(self) -> None:
        """Stop the agent; idempotent. A process gets stdin closed and SIGTERM to its whole
        group, then after `stop_grace` SIGKILL to whatever of the group is left; this waits
        for the exit. An in-process agent has its stream closed."""
        async with self._stop_lock:
            if self._stopped:
                return
            if self.process is None:
                await self.peer.aclose()
            else:
                await self._stop_process(self.process)
            self._stopped = True

    async def _stop_process(self, proc: trio.Process) -> None:
        tree = self.tree
        assert tree is not None, "open_agent gives every process agent its tree"
        if proc.stdin is not None:
            with contextlib.suppress(trio.ClosedResourceError):
                await proc.stdin.aclose()
        if proc.returncode is None:  # not reaped: its pid, the group's id, is still ours
            signal_group(proc.pid, signal.SIGTERM)
        await trio.to_thread.run_sync(tree.signal, signal.SIGTERM)
        with trio.move_on_after(self.stop_grace):
            await proc.wait()
            await _wait_until(tree.settled)
        if await trio.to_thread.run_sync(tree.alive):  # also finds what was started meanwhile
            log.info("agent %s: still running after %gs, killing it", self.name, self.stop_grace)
            await trio.to_thread.run_sync(tree.kill)
            # Delivery is asynchronous: "stopped" must mean gone, so wait (briefly) for it.
            with trio.move_on_after(_KILL_BOUND):
                await _wait_until(tree.settled)
        await proc.wait()

    async def _run_peer(self, *, task_status: trio.TaskStatus[None]) -> None:
        try:
            await self.peer.run(task_status=task_status)
        finally:
            self._gone.set()

    async def _watch_process(self, proc: trio.Process) -> None:
        await proc.wait()
        self._exited.set()
        # Its stdout normally ends with it. If a process that left the group (setsid) still
        # holds the pipe open, the agent is gone all the same once its last output had time
        # to arrive: close our end, so the read loop ends and pending requests fail.
        with trio.move_on_after(_SETTLE):
            await self.peer.wait_finished()
        if self.peer.running:
            log.warning("agent %s exited but its stdout is still open; closing it", self.name)
            await self.peer.aclose()

    async def _drain_stderr(self, stream: trio.abc.ReceiveStream) -> None:
        splitter = LineSplitter(STDERR_TAIL)
        budget = LogBudget()
        try:
            while data := await stream.receive_some(65536):
                self._stderr.add(data)
                for line in splitter.feed(data):
                    budget.log(log, "agent %s stderr: %s", self.name, printable(line))
                if self.log_file is not None:
                    await self._to_log(self.log_file.write, data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self._stderr_done.set()

    async def _to_log(self, write: Callable[[Any], None], arg: Any) -> None:
        """A write to the agent log, in a thread; a log that fails is closed, not fatal."""
        try:
            await trio.to_thread.run_sync(write, arg)
        except OSError as exc:
            log.warning("agent %s: cannot write its log: %s", self.name, exc)
            if self.log_file is not None:
                self.log_file.close()
                self.log_file = None

    def _start_error(self, exc: RpcFailure | AgentExited) -> AgentStartError:
        tail = self.stderr_tail()
        if isinstance(exc, RpcFailure):
            what = f"failed to initialize: {exc.message}"
        else:
            code = self.returncode
            what = "exited during initialize" + (f" (status {code})" if code is not None else "")
        last = tail.splitlines()[-1].strip() if tail else ""
        detail = error_detail(exc) if isinstance(exc, RpcFailure) else ""
        return AgentStartError(
            f"agent {self.name!r} {what}" + (f": {last}" if last else ""),
            stderr=tail,
            detail="\n".join(p for p in (detail, self.failure_detail()) if p),
        )


async def _wait_until(done: Callable[[], bool]) -> None:
    # Nothing signals "the tree is gone" (only the leader is our child): poll, off the loop.
    while not await trio.to_thread.run_sync(done):  # noqa: ASYNC110
        await trio.sleep(0.02)
