"""`acpd serve`: the daemon's entry point, its task tree, signals and systemd notification.

```
trio.run(_serve)
└─ root nursery
   ├─ signal watcher          SIGTERM/SIGINT: graceful stop (twice: now); SIGHUP: reload config
   ├─ keep_alive              WATCHDOG=1 to systemd, if it asked for a watchdog
   ├─ serve_reaper            reaps orphans of agent trees that came back to us (subreaper)
   └─ open_engine(...)        store, recovery; on exit drains turns within shutdown_grace
      └─ front-ends nursery
         ├─ serve_unix        (nursery.start; the socket systemd passed, if any)
         ├─ serve_dashboard   (nursery.start, unless --no-ws; then READY=1)
         ├─ status reporter   STATUS= to systemd when the figures change
         └─ file watch        under systemd: the database deleted or replaced -> stop, exit 1
```

The database file deleted or replaced under a running daemon: writes are refused (-32005) and
`daemon/status` says so. Under systemd (NOTIFY_SOCKET was set) the daemon also stops and exits
1, so that the unit's `Restart=on-failure` starts it again on the file now at the path (a new
one if it was deleted); run by hand, it goes on refusing writes until someone restarts it.

Agents' process trees: before the loop starts, the daemon makes itself a child subreaper and,
where systemd delegated its cgroup, moves into a `daemon` leaf so that each agent gets a cgroup
of its own (`daemon.agents.cgroups`). After the engine has stopped every agent, whatever is
still below the daemon is killed (`subreaper.sweep`): nothing of an agent outlives `acpd serve`.

Start-up errors a user can fix (config, data dir, lock, socket, store) are one line on stderr,
`acpd: error: ...`, and exit 1 (2 for a bad option). systemd's variables (NOTIFY_SOCKET,
LISTEN_*, WATCHDOG_*) are read and removed from the environment first thing: see
`daemon.server.systemd`.

Files: the daemon runs under umask 0o077, so its store, logs and token are ours only. It creates
its data dir (and socket directory) 0700; an existing one must be ours and writable by no one
else, and is used as it is: acpd never changes the mode of a directory it did not create.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import attrs
import trio

from daemon.agents import subreaper
from daemon.agents._process import remember_umask
from daemon.agents.cgroups import AgentCgroups
from daemon.config import Config, ConfigError, load_config, parse_ws_address
from daemon.engine.opening import open_engine
from daemon.engine.registry import Engine
from daemon.logs import setup_logging, stderr_is_journal
from daemon.paths import PrivateDirError, default_data_dir, default_socket_path, private_dir
from daemon.server.dispatch import DaemonInfo, Dispatcher
from daemon.server.systemd import (
    ActivationError,
    Notifier,
    ServiceStatus,
    figures,
    keep_alive,
    take_activated_socket,
    watchdog_interval,
)
from daemon.server.unix import ListenError, serve_unix
from daemon.version import ACPD_VERSION
from store import DataDirLock, LockedError, StorageUnavailable, StoreError

__all__ = ["DataDirError", "add_serve_arguments", "main", "prepare_data_dir", "serve_main"]

log = logging.getLogger("acpd")

DAEMON_UMASK = 0o077


class DataDirError(Exception):
    """The data dir cannot be used safely; the message is one line for the user."""


def prepare_data_dir(data_dir: Path) -> None:
    """Create `data_dir` 0700, or check that an existing one is ours and writable by no one
    else. Its mode is never changed. Raises `DataDirError`."""
    try:
        private_dir(data_dir, what="data dir", risk="replace its files (the store, the token)")
    except PrivateDirError as exc:
        raise DataDirError(str(exc)) from None


@attrs.define(eq=False)
class _Control:
    """What the signal watcher acts on."""

    config: Config
    config_path: Path | None
    service: ServiceStatus
    stop: trio.Event = attrs.field(factory=trio.Event)
    force: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    engine: Engine | None = None
    exit_code: int = 0

    def reload(self) -> None:
        self.service.reloading()
        try:
            config = load_config(self.config_path)
        except ConfigError as exc:
            log.error("config not reloaded, keeping the old one: %s", exc)
            self.service.reloaded(f"config not reloaded, keeping the old one: {exc}")
            return
        self.config = config
        if self.engine is not None:
            self.engine.reload(config)
        log.info("config reloaded")
        self.service.reloaded()


async def _watch_signals(signals: AsyncIterator[int], control: _Control) -> None:
    async for signum in signals:
        name = signal.Signals(signum).name
        if signum == signal.SIGHUP:
            control.reload()
        elif not control.stop.is_set():
            log.info("%s: stopping", name)
            control.stop.set()
        else:
            log.warning("%s again: stopping now, without waiting for turns", name)
            control.force.cancel(reason=f"second {name}")


async def _exit_when_file_lost(engine: Engine, control: _Control) -> None:
    """Under systemd: a restart opens the file at the path; we never would (the file we
    hold is gone from it), so stop and fail, and let `Restart=on-failure` do it."""
    await engine.io.wait_file_lost()
    log.error("the database file was deleted or replaced: stopping, for systemd to restart acpd")
    control.exit_code = 1
    control.stop.set()


async def _load_the_rest() -> None:
    """What the first conversation to go live needs (the supervisor, and with it the turn, the
    agent slot and the agents' side), loaded in a worker thread once the daemon is ready: the
    first send then finds it loaded instead of paying 17-35 ms of import in the event loop.
    One that comes sooner waits for the import lock: no longer than it would have anyway."""
    await trio.to_thread.run_sync(importlib.import_module, "daemon.engine.supervisor")


async def _figures(engine: Engine) -> str:
    stored = await engine.count()
    text = figures(live=engine.live_count(), agents=engine.agents_running(), stored=stored)
    problem = engine.storage().message  # `systemctl status` shows an outage too
    return f"{text}; {problem}" if problem else text


async def _run(
    control: _Control,
    data_dir: Path,
    socket_path: Path,
    ws: str,
    activated: socket.socket | None,
    containment: _Containment,
) -> None:
    started = trio.current_time()
    served: str | None = str(socket_path)
    if activated is not None:
        name = activated.getsockname()
        served = name if isinstance(name, str) and name else None
    async with open_engine(control.config, data_dir, cgroups=containment.cgroups) as engine:
        control.engine = engine
        dispatcher = Dispatcher(engine, DaemonInfo(data_dir, ACPD_VERSION, started, served))
        async with trio.open_nursery() as fronts:
            if activated is not None:  # systemd's socket: it stays bound when we stop
                where = f"{served or '?'} (from systemd)"
                await fronts.start(partial(serve_unix, None, dispatcher, adopt=activated))
            else:
                where = str(socket_path)
                await fronts.start(partial(serve_unix, socket_path, dispatcher))
            if ws:  # its URL (no token) goes in daemon/status, for `acpd dashboard`
                # Imported only when served: the page's HTTP side (h11 among it) is some 14 ms
                # of start-up, for nothing under --no-ws or ws = "".
                from daemon.server.dashboard import serve_dashboard

                exposure = control.config.dashboard_exposure()
                dispatcher.dashboard_url = await fronts.start(
                    partial(serve_dashboard, exposure=exposure), ws, dispatcher, data_dir
                )
            await control.service.ready(partial(_figures, engine))
            fronts.start_soon(_load_the_rest)
            fronts.start_soon(control.service.report)
            if control.service.notifier.enabled:
                fronts.start_soon(_exit_when_file_lost, engine, control)
            log.info("ready: socket %s, data dir %s, pid %d", where, data_dir, os.getpid())
            log.info("%s", containment.note)
            await control.stop.wait()
            grace = engine.config.shutdown_grace
            control.service.stopping(f"draining turns (up to {grace:g}s)")
            log.info("closing listeners; draining turns (up to %gs)", grace)
            fronts.cancel_scope.cancel(reason="daemon stopping")
        control.engine = None
    log.info("stopped")


@attrs.frozen
class _Systemd:
    """What systemd handed us at start-up (all empty when not run by systemd)."""

    notifier: Notifier
    watchdog: float | None  # seconds between pings
    activated: socket.socket | None

    @classmethod
    def from_environ(cls) -> _Systemd:
        """Take systemd's variables out of the environment. Raises `ActivationError`."""
        notifier, watchdog = Notifier.from_environ(), watchdog_interval()
        return cls(notifier, watchdog, take_activated_socket())


@attrs.frozen
class _Containment:
    """How agents' process trees are held (set up before the loop starts)."""

    subreaper: bool
    cgroups: AgentCgroups | None
    note: str  # for the log, once the daemon is ready (start-up errors stay one line)

    @classmethod
    def set_up(cls) -> _Containment:
        problem = subreaper.become()
        cgroups, note = AgentCgroups.setup()
        if cgroups is None:
            held = "process group and marker" + (", below acpd (subreaper)" if not problem else "")
            note = f"{note}: agents are held by {held}"
        if problem is not None:
            note += f"; not a child subreaper ({problem}): agents' orphans go to init"
        return cls(problem is None, cgroups, note)

    async def sweep(self) -> None:
        """The engine has stopped every agent: end whatever is left below us."""
        cgroups = self.cgroups
        if cgroups is not None and (found := await trio.to_thread.run_sync(cgroups.sweep)):
            log.warning("killed %d agent cgroup(s) still running at exit", found)
        if self.subreaper and (found := await subreaper.sweep()):
            log.warning("killed %d process(es) of agents still running at exit", found)


async def _serve(
    config: Config,
    config_path: Path | None,
    data_dir: Path,
    socket_path: Path,
    ws: str,
    systemd: _Systemd,
    containment: _Containment,
) -> int:
    control = _Control(config, config_path, ServiceStatus(systemd.notifier))
    # Open before anything else so an early SIGTERM is a graceful stop, not a KeyboardInterrupt.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with trio.open_nursery() as root:
            root.start_soon(_watch_signals, signals, control)
            if systemd.watchdog is not None:  # pings from the start: startup is watched too
                root.start_soon(keep_alive, systemd.notifier, systemd.watchdog)
            if containment.subreaper:
                await root.start(subreaper.serve_reaper)
            try:
                with control.force:
                    await _run(control, data_dir, socket_path, ws, systemd.activated, containment)
            finally:
                with trio.CancelScope(shield=True):
                    await containment.sweep()
            root.cancel_scope.cancel(reason="stopped")
    return control.exit_code


def _fail(message: object, code: int = 1) -> int:
    """One line on stderr, `acpd: error: …` as every acpd error (with an error priority when
    stderr is the journal)."""
    prefix = "<3>" if stderr_is_journal() else ""
    print(f"{prefix}acpd: error: {' '.join(str(message).split())}", file=sys.stderr)
    return code


def _log_to_file(message: str) -> None:
    """Record a start-up failure in the log file too (stderr has had its one line)."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "%s", (message,), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def serve_main(
    *,
    data_dir: Path | None,
    socket: Path | None,
    ws: str | None,
    no_ws: bool,
    config_path: Path | None,
) -> int:
    """Run the daemon in the foreground until SIGTERM/SIGINT; returns the exit code."""
    try:  # first: nothing may inherit systemd's variables or its socket
        systemd = _Systemd.from_environ()
    except ActivationError as exc:
        return _fail(exc)
    data_dir = (data_dir or default_data_dir()).absolute()
    socket_path = (socket or default_socket_path()).absolute()
    if ws is not None:
        try:
            parse_ws_address(ws)
        except ValueError as exc:
            return _fail(f"--ws: {exc}", 2)
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        return _fail(exc)
    ws_addr = "" if no_ws else (ws if ws is not None else config.ws)
    # Everything the daemon creates (store, WAL, logs, token, socket) is ours only; the
    # original umask is kept for agents (`daemon.agents._process.agent_umask`).
    old_umask = os.umask(DAEMON_UMASK)
    remember_umask(old_umask)
    try:
        return _serve_locked(config, config_path, data_dir, socket_path, ws_addr, systemd)
    finally:
        os.umask(old_umask)


def _serve_locked(
    config: Config,
    config_path: Path | None,
    data_dir: Path,
    socket_path: Path,
    ws_addr: str,
    systemd: _Systemd,
) -> int:
    failure: BaseException | None = None
    logging_ready = False
    code = 0
    try:
        prepare_data_dir(data_dir)
        with DataDirLock(data_dir):
            # After the lock: a refused second daemon must not touch the first one's log.
            setup_logging(data_dir)
            logging_ready = True
            containment = _Containment.set_up()  # before any agent, and before READY=1
            code = trio.run(
                _serve, config, config_path, data_dir, socket_path, ws_addr, systemd, containment
            )
    except* (DataDirError, LockedError, StoreError, ListenError, ConfigError) as group:
        failure = _leaf(group)
        if isinstance(failure, StorageUnavailable):  # at start-up: say which file, and how
            failure = StoreError(f"{failure} ({failure.detail})")
    if failure is None:
        return code
    if logging_ready:
        _log_to_file(str(failure))
    return _fail(failure)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """`serve`'s options (CONTRACT.md), for this module's parser and the CLI's."""
    parser.add_argument("--data-dir", type=Path, help="default: $ACPD_DATA_DIR or XDG data dir")
    parser.add_argument("--socket", type=Path, help="default: $ACPD_SOCKET or XDG runtime dir")
    ws = parser.add_mutually_exclusive_group()
    ws.add_argument(
        "--ws",
        metavar="HOST:PORT",
        help="dashboard address (port 0: any free); a non-loopback one needs ws_tls_cert and "
        "ws_tls_key, or ws_plain_http_on_network, in the config",
    )
    ws.add_argument("--no-ws", action="store_true", help="no dashboard")
    parser.add_argument("--config", type=Path, help="default: $ACPD_CONFIG or XDG config dir")


def main(argv: list[str] | None = None) -> int:
    """`python -m daemon.server serve ...`: the daemon without the CLI."""
    parser = argparse.ArgumentParser(prog="acpd")
    commands = parser.add_subparsers(dest="command", required=True)
    add_serve_arguments(commands.add_parser("serve", help="run the daemon in the foreground"))
    args = parser.parse_args(argv)
    return serve_main(
        data_dir=args.data_dir,
        socket=args.socket,
        ws=args.ws,
        no_ws=args.no_ws,
        config_path=args.config,
    )
