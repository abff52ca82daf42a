"""systemd integration at run time: notification, the watchdog, socket activation.

For `acpd serve` (the protocol is sd_notify(3), sd_watchdog_enabled(3), sd_listen_fds(3)):

- `Notifier` sends datagrams to `NOTIFY_SOCKET`; `ServiceStatus` says what systemd must hear
  and when: READY=1 once the API socket serves, `STATUS=` live figures, RELOADING=1/READY=1
  around a SIGHUP reload, STOPPING=1 at shutdown, never READY=1 before serving or after
  STOPPING=1.
- `keep_alive` pings WATCHDOG=1 from the event loop, so a wedged loop is what systemd kills.
- `take_activated_socket` adopts the listening socket of `acpd.socket`.

Each reads its variables once, at start-up, and removes them from the environment, so nothing
the daemon starts inherits them (agents get an allow-listed environment anyway: `agent_env`).

The units themselves and their installer are the command line's: `daemon.cli.install`.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Final, Literal, NoReturn

import attrs
import trio

__all__ = [
    "API_FD_NAME",
    "ActivationError",
    "Notifier",
    "ServiceStatus",
    "figures",
    "keep_alive",
    "take_activated_socket",
    "watchdog_interval",
]

log = logging.getLogger("acpd.systemd")

SD_LISTEN_FDS_START: Final = 3
API_FD_NAME: Final = "api"  # FileDescriptorName= in acpd.socket
STATUS_INTERVAL: Final = 5.0  # seconds between checks of the figures in STATUS=
_STATUS_MAX: Final = 1000  # characters: a datagram must stay well under systemd's 4 KiB buffer
_LISTEN_VARS: Final = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
_WATCHDOG_VARS: Final = ("WATCHDOG_USEC", "WATCHDOG_PID")

Environ = MutableMapping[str, str]


def _environ(environ: Environ | None) -> Environ:
    return os.environ if environ is None else environ


# --- sd_notify ---------------------------------------------------------------------------------


def _socket_address(value: str) -> str | None:
    if value.startswith("@"):  # abstract namespace
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


@attrs.define(eq=False)
class Notifier:
    """Sends sd_notify(3) datagrams to `address` (a `NOTIFY_SOCKET` value); without one, every
    send is a no-op returning False. A failure is logged (once until a send works again), never
    raised: the service goes on whether or not systemd listens.

    Sends never block: the socket is non-blocking, so a notify queue that systemd does not
    drain costs a lost datagram, not a stalled event loop.
    """

    address: str = ""
    _failing: bool = attrs.field(default=False, init=False)

    @classmethod
    def from_environ(cls, environ: Environ | None = None, *, unset: bool = True) -> Notifier:
        env = _environ(environ)
        address = env.pop("NOTIFY_SOCKET", "") if unset else env.get("NOTIFY_SOCKET", "")
        return cls(address)

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *fields: str) -> bool:
        """Send `fields` ("READY=1", "STATUS=...") as one datagram, newline-separated."""
        if not self.address:
            return False
        addr = _socket_address(self.address)
        if addr is None:
            if not self._failing:
                log.warning("NOTIFY_SOCKET %r is not a unix socket; not notifying", self.address)
            self._failing = True
            return False
        message = "\n".join(fields)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto(message.encode(), addr)
        except OSError as exc:
            if not self._failing:
                log.warning("could not notify systemd (%s): %s", message.split("\n")[0], exc)
            self._failing = True
            return False
        self._failing = False
        return True


def _one_line(text: str) -> str:
    text = " ".join(text.split())  # a newline would start another field
    return text if len(text) <= _STATUS_MAX else text[: _STATUS_MAX - 3] + "..."


def figures(*, live: int, agents: int, stored: int) -> str:
    """The figures `STATUS=` shows (`systemctl --user status acpd`)."""

    def n(count: int, one: str, many: str) -> str:
        return f"{count} {one if count == 1 else many}"

    return (
        f"{n(live, 'live conversation', 'live conversations')}, "
        f"{n(agents, 'agent running', 'agents running')}, {stored} stored"
    )


@attrs.define(eq=False)
class ServiceStatus:
    """What systemd hears about the service's state, with the order systemd relies on kept:
    READY=1 only once serving, RELOADING=1/READY=1 only while ready, nothing after STOPPING=1
    but STATUS=. With a disabled `notifier` all of it is a no-op."""

    notifier: Notifier
    interval: float = STATUS_INTERVAL
    state: Literal["starting", "ready", "reloading", "stopping"] = "starting"
    note: str = ""  # shown after the figures until cleared, e.g. a failed reload
    _figures: Callable[[], Awaitable[str]] | None = attrs.field(default=None, init=False)
    _shown: str = attrs.field(default="", init=False)
    _failing: bool = attrs.field(default=False, init=False)
    _poke: trio.Event = attrs.field(factory=trio.Event, init=False)

    async def _text(self) -> str:
        text = ""
        if self._figures is not None:
            try:
                text = await self._figures()
            except Exception as exc:  # a status line must never take the daemon down
                if not self._failing:
                    log.warning("no figures for systemd's status: %s", exc)
                self._failing, text = True, "figures unavailable"
            else:
                self._failing = False
        return "; ".join(t for t in (text, self.note) if t)

    def _status(self, text: str) -> str:
        self._shown = text
        return f"STATUS={_one_line(text)}"

    async def ready(self, current_figures: Callable[[], Awaitable[str]]) -> None:
        """The service serves: READY=1 with the first figures. Call once, after the listeners'
        `nursery.start` returned."""
        self._figures = current_figures
        self.state = "ready"
        self.notifier.send("READY=1", self._status(await self._text()))

    def reloading(self) -> bool:
        """RELOADING=1 (with MONOTONIC_USEC=, as Type=notify-reload wants) if we are ready;
        returns whether `reloaded` should follow."""
        if self.state != "ready":
            return False
        self.state = "reloading"
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading the config")
        return True

    def reloaded(self, error: str = "") -> None:
        """READY=1 after a reload; `error` (the reload failed, the old config stays) becomes
        the status note until a reload succeeds."""
        self.note = error
        if self.state != "reloading":
            return
        self.state = "ready"
        self.notifier.send("READY=1", self._status(error or "config reloaded"))
        self._poke.set()  # the figures follow at once

    def stopping(self, detail: str = "") -> None:
        if self.state == "stopping":
            return
        self.state = "stopping"
        self.notifier.send("STOPPING=1", self._status(f"stopping{': ' if detail else ''}{detail}"))

    async def report(self) -> NoReturn:
        """Send `STATUS=` whenever the figures (or the note) change, checking every `interval`
        seconds and whenever poked. Runs until cancelled; start it after `ready`."""
        while True:
            if self.state == "ready" and (text := await self._text()) != self._shown:
                self.notifier.send(self._status(text))
            with trio.move_on_after(self.interval):
                await self._poke.wait()
            self._poke = trio.Event()


# --- the watchdog ------------------------------------------------------------------------------


def watchdog_interval(
    environ: Environ | None = None, *, pid: int | None = None, unset: bool = True
) -> float | None:
    """sd_watchdog_enabled(3): seconds between WATCHDOG=1 pings (half of `WATCHDOG_USEC`), or
    None without a watchdog, or when `WATCHDOG_PID` names another process (we inherited it)."""
    env = _environ(environ)
    usec, wpid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if unset:
        for name in _WATCHDOG_VARS:
            env.pop(name, None)
    if not usec.isdigit() or int(usec) == 0:
        return None
    if wpid and (not wpid.isdigit() or int(wpid) != (os.getpid() if pid is None else pid)):
        return None
    return int(usec) / 2 / 1e6


async def keep_alive(notifier: Notifier, interval: float) -> NoReturn:
    """WATCHDOG=1 every `interval` seconds, from the event loop: if the loop wedges, the pings
    stop and systemd restarts us (WatchdogSec=)."""
    while True:
        notifier.send("WATCHDOG=1")
        await trio.sleep(interval)


# --- socket activation -------------------------------------------------------------------------


class ActivationError(Exception):
    """systemd passed sockets we cannot serve; the message is one line for the user."""


def _listen_fds(env: Environ, pid: int, first_fd: int) -> list[tuple[int, str]]:
    if env.get("LISTEN_PID", "") != str(pid):
        return []  # not for us: inherited from a parent that was activated
    count = env.get("LISTEN_FDS", "")
    if not count.isdigit():
        raise ActivationError(f"LISTEN_FDS={count!r} is not a number")
    fds = range(first_fd, first_fd + int(count))
    names = env.get("LISTEN_FDNAMES", "").split(":")
    if len(names) != len(fds):
        names = ["unknown"] * len(fds)  # as systemd says when no names were set
    for fd in fds:
        try:
            os.set_inheritable(fd, False)  # FD_CLOEXEC: no agent may hold our listener
        except OSError as exc:
            raise ActivationError(f"socket activation: fd {fd}: {exc.strerror}") from None
    return list(zip(fds, names, strict=True))


def _listening_unix_stream(fd: int) -> socket.socket | None:
    try:
        sock = socket.socket(fileno=fd)
    except OSError:  # not a socket
        return None
    try:
        ok = (
            sock.family == socket.AF_UNIX
            and sock.type == socket.SOCK_STREAM
            and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) != 0
        )
    except OSError:
        ok = False
    if not ok:
        sock.detach()  # leave the fd to the caller
        return None
    return sock


def take_activated_socket(
    environ: Environ | None = None,
    *,
    pid: int | None = None,
    first_fd: int = SD_LISTEN_FDS_START,
) -> socket.socket | None:
    """The listening unix socket systemd passed us (sd_listen_fds(3)), or None if none was.

    Only when `LISTEN_PID` is our pid. The fd named `api` is taken, else the one listening
    AF_UNIX stream socket; every passed fd is made close-on-exec, the ones we don't use are
    closed, and `LISTEN_*` is removed from the environment whatever happens.

    Raises `ActivationError` if sockets were passed but none fits.
    """
    env = _environ(environ)
    try:
        passed = _listen_fds(env, os.getpid() if pid is None else pid, first_fd)
    finally:
        for name in _LISTEN_VARS:
            env.pop(name, None)
    if not passed:
        return None
    socks = {fd: _listening_unix_stream(fd) for fd, _ in passed}
    named = [fd for fd, name in passed if name == API_FD_NAME]
    chosen: socket.socket | None = None
    problem = ""
    if len(named) > 1:
        problem = f"{len(named)} sockets are named {API_FD_NAME!r}"
    elif named:
        chosen = socks[named[0]]
        if chosen is None:
            problem = f"the fd named {API_FD_NAME!r} is not a listening unix stream socket"
    else:
        usable = [s for s in socks.values() if s is not None]
        if len(usable) == 1:
            chosen = usable[0]
        else:
            problem = (
                f"{len(usable)} of the {len(passed)} passed fds are listening unix stream "
                f"sockets and none is named {API_FD_NAME!r} (FileDescriptorName=)"
            )
    for fd, sock in socks.items():
        if sock is not None and sock is chosen:
            continue
        if sock is not None:
            sock.close()
        else:
            try:
                os.close(fd)
            except OSError:
                pass
    if chosen is None:
        raise ActivationError(f"socket activation: {problem}")
    if len(passed) > 1:
        log.warning("socket activation: using fd %d of %d passed", chosen.fileno(), len(passed))
    return chosen
