"""`acpd serve`: the daemon's entry point, its task tree, signals and systemd notification.

```
trio.run(_serve)
└─ root nursery
   ├─ signal watcher          SIGTERM/SIGINT: graceful stop (twice: now); SIGHUP: reload config
   ├─ keep_alive              WATCHDOG=1 to systemd, if it asked for a watchdog
   └─ open_engine(...)        store, recovery; on exit drains turns within shutdown_grace
      └─ front-ends nursery
         ├─ serve_unix        (nursery.start; the socket systemd passed, if any)
         ├─ serve_dashboard   (nursery.start, unless --no-ws; then READY=1)
         └─ status reporter   STATUS= to systemd when the figures change
```

Start-up errors a user can fix (config, lock, socket, store) are one line on stderr and exit 1.
systemd's variables (NOTIFY_SOCKET, LISTEN_*, WATCHDOG_*) are read and removed from the
environment first thing: see `daemon.systemd`.
"""

from __future__ import annotations

import argparse
import importlib.metadata
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

from daemon.config import Config, ConfigError, load_config
from daemon.dashboard import parse_address, serve_dashboard
from daemon.dispatch import DaemonInfo, Dispatcher
from daemon.engine import Engine, open_engine
from daemon.logs import setup_logging
from daemon.paths import default_data_dir, default_socket_path
from daemon.systemd import (
    ActivationError,
    Notifier,
    ServiceStatus,
    figures,
    keep_alive,
    notify,
    take_activated_socket,
    watchdog_interval,
)
from daemon.unix_server import ListenError, serve_unix
from store import DataDirLock, LockedError, StoreError

__all__ = ["add_serve_arguments", "main", "notify", "serve_main"]

log = logging.getLogger("acpd")


def _version() -> str:
    try:
        return importlib.metadata.version("acpd")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


@attrs.define(eq=False)
class _Control:
    """What the signal watcher acts on."""

    config: Config
    config_path: Path | None
    service: ServiceStatus
    stop: trio.Event = attrs.field(factory=trio.Event)
    force: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    engine: Engine | None = None

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


async def _figures(engine: Engine) -> str:
    stored = await engine.count()
    return figures(live=engine.live_count(), agents=engine.agents_running(), stored=stored)


async def _run(
    control: _Control,
    data_dir: Path,
    socket_path: Path,
    ws: str,
    activated: socket.socket | None,
) -> None:
    started = trio.current_time()
    async with open_engine(control.config, data_dir) as engine:
        control.engine = engine
        dispatcher = Dispatcher(engine, DaemonInfo(data_dir, _version(), started))
        async with trio.open_nursery() as fronts:
            if activated is not None:  # systemd's socket: it stays bound when we stop
                where = f"{activated.getsockname() or '?'} (from systemd)"
                await fronts.start(partial(serve_unix, None, dispatcher, adopt=activated))
            else:
                where = str(socket_path)
                await fronts.start(partial(serve_unix, socket_path, dispatcher))
            if ws:  # its URL (no token) goes in daemon/status, for `acpd dashboard`
                dispatcher.dashboard_url = await fronts.start(
                    serve_dashboard, ws, dispatcher, data_dir
                )
            await control.service.ready(partial(_figures, engine))
            fronts.start_soon(control.service.report)
            log.info("ready: socket %s, data dir %s, pid %d", where, data_dir, os.getpid())
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


async def _serve(
    config: Config,
    config_path: Path | None,
    data_dir: Path,
    socket_path: Path,
    ws: str,
    systemd: _Systemd,
) -> None:
    control = _Control(config, config_path, ServiceStatus(systemd.notifier))
    # Open before anything else so an early SIGTERM is a graceful stop, not a KeyboardInterrupt.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with trio.open_nursery() as root:
            root.start_soon(_watch_signals, signals, control)
            if systemd.watchdog is not None:  # pings from the start: startup is watched too
                root.start_soon(keep_alive, systemd.notifier, systemd.watchdog)
            with control.force:
                await _run(control, data_dir, socket_path, ws, systemd.activated)
            root.cancel_scope.cancel(reason="stopped")


def _fail(message: object) -> int:
    print(f"acpd: {message}", file=sys.stderr)
    return 1


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
            parse_address(ws)
        except ValueError as exc:
            print(f"acpd: --ws: {exc}", file=sys.stderr)
            return 2
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        return _fail(exc)
    ws_addr = "" if no_ws else (ws if ws is not None else config.ws)
    failure: BaseException | None = None
    logging_ready = False
    try:
        with DataDirLock(data_dir):  # creates the data dir 0700 if need be
            # After the lock: a refused second daemon must not touch the first one's log.
            setup_logging(data_dir)
            logging_ready = True
            trio.run(_serve, config, config_path, data_dir, socket_path, ws_addr, systemd)
    except* (LockedError, StoreError, ListenError, ConfigError) as group:
        failure = _leaf(group)
    if failure is None:
        return 0
    if logging_ready:  # one line on stderr, and a record in the log file
        log.error("%s", failure)
        return 1
    return _fail(failure)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """`serve`'s options (CONTRACT.md), for this module's parser and the CLI's."""
    parser.add_argument("--data-dir", type=Path, help="default: $ACPD_DATA_DIR or XDG data dir")
    parser.add_argument("--socket", type=Path, help="default: $ACPD_SOCKET or XDG runtime dir")
    ws = parser.add_mutually_exclusive_group()
    ws.add_argument("--ws", metavar="HOST:PORT", help="dashboard address (port 0: any free)")
    ws.add_argument("--no-ws", action="store_true", help="no dashboard")
    parser.add_argument("--config", type=Path, help="default: $ACPD_CONFIG or XDG config dir")


def main(argv: list[str] | None = None) -> int:
    """`python -m daemon.main serve ...`: the daemon without the CLI."""
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


if __name__ == "__main__":
    sys.exit(main())
