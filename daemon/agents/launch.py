"""Starting an agent: spawn it (its own process tree: group, session, cgroup if delegated,
niced below the daemon), run its connection, initialize; stop the whole tree on the way out.

`open_agent` for a child process, `connect_agent` for an in-process agent on a stream (tests'
fakes). Both yield an `AgentConnection` (`connection.py`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from daemon.agents import cgroups, subreaper
from daemon.agents._process import (
    agent_env,
    agent_umask,
)
from daemon.agents.agentlog import open_agent_log
from daemon.agents.connection import AgentConnection, AgentSpec, AgentStartError
from daemon.agents.peer import AgentPeer, PeerHandlers
from daemon.agents.tree import AgentTree

__all__ = ["connect_agent", "open_agent"]


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
        on_updates=h.on_updates,
        on_request=h.on_request,
        on_batch_end=h.on_batch_end,
        wait_for_space=h.wait_for_space,
        on_dropped=h.on_dropped,
        log=log,
    )
