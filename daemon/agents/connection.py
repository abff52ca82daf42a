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
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Final, Protocol

import attrs
import trio

from daemon.agents import cgroups, subreaper
from daemon.agents._process import (
    STDERR_TAIL,
    LogBudget,
    StderrRing,
    agent_env,
    agent_umask,
    printable,
    signal_group,
)
from daemon.agents.agentlog import AgentLog, open_agent_log
from daemon.agents.auth import AuthSettings
from daemon.agents.detail import error_detail, failure_detail
from daemon.agents.peer import AgentExited, AgentPeer, PeerHandlers
from daemon.agents.requests import SessionRequests, SessionSetUp
from daemon.agents.tree import AgentTree
from daemon.version import acpd_version
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
    "connect_agent",
    "error_detail",
    "open_agent",
]

log = logging.getLogger("acpd.agent")

# After the agent's stdout ends, how long to wait for its exit status and the last of its
# stderr (both normally follow at once; a grandchild may hold stderr open).
_SETTLE: Final = 1.0
# SIGKILL cannot be ignored, but reaping still takes a moment: the bound on stop() beyond grace.
_KILL_BOUND: Final = 5.0


def client_info() -> acp.Implementation:
    """Our `clientInfo`."""
    return acp.Implementation(name="acpd", version=acpd_version())


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


def _child_setup(nice: int, cgroup_procs: int | None) -> Callable[[], None] | None:
    """What the child does between fork and exec: enter its cgroup (before it can start
    anything that could stay outside), then lower its priority. Plain system calls only: the
    daemon has threads, so the child must take no lock and import nothing."""
    if nice <= 0 and cgroup_procs is None:
        return None  # (and subprocess may use vfork, the faster spawn)

    def setup() -> None:
        if cgroup_procs is not None:
            os.write(cgroup_procs, b"0")  # "0": the writing process
        if nice > 0:
            os.nice(nice)

    return setup


async def _spawn(
    spec: AgentSpec, tree: AgentTree, nice: int, env: Mapping[str, str]
) -> trio.Process:
    """Start the agent as its tree's leader. Raises `AgentStartError`."""
    cgroup_procs: int | None = None
    try:
        if tree.cgroup is not None:
            cgroup_procs = await trio.to_thread.run_sync(cgroups.open_procs, tree.cgroup)
        with subreaper.spawning():  # trio waits for this child: nobody else may reap it
            proc = await trio.lowlevel.open_process(
                list(spec.argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=spec.cwd,
                env=dict(env),
                start_new_session=True,
                # The user's own umask, not the daemon's 077: files an agent writes in a
                # project must come out as if the user had written them.
                umask=-1 if (mask := agent_umask()) is None else mask,
                preexec_fn=_child_setup(nice, cgroup_procs),
            )
            subreaper.manage(proc.pid)
    except OSError as exc:
        what = exc.strerror or type(exc).__name__
        if exc.filename == spec.cwd and isinstance(exc, FileNotFoundError | NotADirectoryError):
            what = f"no such working directory: {spec.cwd}"
        elif isinstance(exc, FileNotFoundError):
            what = f"command not found: {spec.argv[0]}"
        elif isinstance(exc, PermissionError):
            what = f"permission denied: {spec.argv[0]}"
        elif isinstance(exc.filename, str) and Path(exc.filename).name == "cgroup.procs":
            raise AgentStartError(f"cannot start agent {spec.name!r}: its cgroup: {what}") from None
        raise AgentStartError(f"cannot start agent {spec.name!r}: {what}", permanent=True) from None
    except subprocess.SubprocessError:  # the child's set-up (cgroup, nice) failed
        raise AgentStartError(
            f"cannot start agent {spec.name!r}: could not enter its cgroup or lower its priority"
        ) from None
    finally:
        if cgroup_procs is not None:
            os.close(cgroup_procs)
    return proc


@asynccontextmanager
async def open_agent(
    spec: AgentSpec,
    handlers: PeerHandlers,
    *,
    on_spawn: Callable[[trio.Process], Awaitable[None]] | None = None,
    tree: AgentTree | None = None,
    nice: int = 0,
    stop_grace: float = 2.0,
    log: logging.Logger | None = None,
) -> AsyncIterator[AgentConnection]:
    """Spawn `spec` and initialize it; stop it (its whole process tree) on exit. `handlers`
    are the peer's (`AgentPeer`).

    `tree` says where the agent goes (its marker, its cgroup if any; default: a new tree
    without a cgroup); `nice` is added to the daemon's nice value for it. `on_spawn(process)`
    runs right after the spawn, before `initialize`: the moment from which the tree exists
    and must be accounted for (orphans.py records it then).

    Raises `AgentStartError` (one line) if it cannot be spawned, exits or fails during
    `initialize`, or speaks another protocol version. Start-up is not bounded here. Bound it
    from outside, with care: this holds a nursery open across the `yield`, so a
    `with trio.fail_after(...)` must enclose the whole `async with` block, not only its entry.
    (The engine enters it in a task started with `nursery.start` under `fail_after`, and calls
    `task_status.started()` once set up.) On exit, normal or not, the agent is stopped under
    a shield, bounded by `stop_grace` plus a few seconds.
    """
    if not spec.argv:
        raise AgentStartError(f"agent {spec.name!r} has an empty command")
    if tree is None:
        tree = AgentTree.new(within=os.getpid() if subreaper.is_active() else None)
    await trio.to_thread.run_sync(acpd_version)  # the first call reads package metadata
    # Shielded: once spawned, the agent must reach the block below that stops it.
    env = {**agent_env(spec.env), **tree.env}
    with trio.CancelScope(shield=True):
        proc = await _spawn(spec, tree, nice, env)
        await trio.to_thread.run_sync(tree.spawned, proc.pid)
        if on_spawn is not None:
            await on_spawn(proc)
    assert proc.stdio is not None
    assert proc.stderr is not None
    peer = _peer(proc.stdio, handlers, log or logging.getLogger(f"acpd.peer.{spec.name}"))
    log_file = None
    if spec.log_path is not None:
        header = f"agent {spec.name} started (pid {proc.pid}): {' '.join(spec.argv)}"
        log_file = await open_agent_log(spec.log_path, header)
    hosting = AgentConnection.hosting(
        peer,
        process=proc,
        stderr=proc.stderr,
        name=spec.name,
        stop_grace=stop_grace,
        tree=tree,
        argv=spec.argv,
        env=env,
        log_file=log_file,
    )
    try:
        async with hosting as conn:
            yield conn
    finally:
        subreaper.release(proc.pid)
        with trio.CancelScope(shield=True):
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    await pipe.aclose()
            if log_file is not None:
                code = proc.returncode
                end = "stopped" if code is None else f"exited with status {code}"
                with contextlib.suppress(OSError):
                    await trio.to_thread.run_sync(log_file.note, f"agent {end}")
                log_file.close()


@asynccontextmanager
async def connect_agent(
    stream: trio.abc.Stream,
    handlers: PeerHandlers,
    *,
    name: str = "agent",
    log: logging.Logger | None = None,
    argv: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[AgentConnection]:
    """`open_agent` over an existing stream (in-process fakes); `process` is None, and
    stopping closes the stream. `argv` and `env` say what it was "started" with (what
    authentication looks at); `env` defaults to what `open_agent` would give it."""
    hosting = AgentConnection.hosting(_peer(stream, handlers, log), name=name, argv=argv, env=env)
    async with hosting as conn:
        yield conn


def _peer(stream: trio.abc.Stream, h: PeerHandlers, log: logging.Logger | None) -> AgentPeer:
    return AgentPeer(
        stream,
        on_update=h.on_update,
        on_request=h.on_request,
        on_batch_end=h.on_batch_end,
        wait_for_space=h.wait_for_space,
        on_dropped=h.on_dropped,
        log=log,
    )
