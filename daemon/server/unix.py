"""The unix-socket front-end: newline-delimited JSON-RPC for the CLI and scripts.

Only the user who runs the daemon may use it: the socket directory is ours and writable by no
one else (created 0700 if missing; an existing one is used as it is, or refused, never
changed), the socket 0600, and each connection's peer uid (SO_PEERCRED) is checked. A stale
socket left by a dead daemon is replaced; a live daemon on the same path is never displaced.

A connection we end with an error (wrong uid, line too long) is half-closed after the error
and its unread input discarded for a bounded time: closing a socket with unread input resets
it, and the client would see ECONNRESET instead of the reply that says why.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket as stdlib_socket
import stat
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Final, NoReturn

import trio

from daemon.paths import PrivateDirError, private_dir
from daemon.server._linger import linger
from daemon.server.connection import error_line
from daemon.server.dispatch import Dispatcher
from protocol.framing import LineSplitter
from protocol.jsonrpc import BUSY, INVALID_REQUEST, UNAUTHORIZED

__all__ = ["ListenError", "bind_unix_socket", "peer_uid", "serve_unix"]

log = logging.getLogger(__name__)

_SUN_PATH_MAX: Final = 107  # sizeof(sun_path) - 1 on Linux
_PROBE_TIMEOUT_S: Final = 2.0  # a daemon that does not even accept in this long is wedged
_READ_SIZE: Final = 64 * 1024
_BACKLOG: Final = 128
# Clients served at once (each holds a task, buffers and up to MAX_IN_FLIGHT requests). One
# more is told why and closed; the CLI, editors and scripts use a handful.
MAX_CONNECTIONS: Final = 256


class ListenError(Exception):
    """The socket cannot be served; the message is one line for the user."""


def peer_uid(sock: trio.socket.SocketType) -> int:
    """The uid of the process at the other end of a connected unix socket (SO_PEERCRED)."""
    creds = sock.getsockopt(
        stdlib_socket.SOL_SOCKET, stdlib_socket.SO_PEERCRED, struct.calcsize("3i")
    )
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def _prepare_dir(directory: Path) -> None:
    """Create the socket's directory 0700, or check that an existing one is ours and writable
    by no one else (someone who may write in it could swap our socket); a root-owned sticky
    one (/tmp) will do. Its mode is never changed."""
    try:
        private_dir(
            directory,
            what="socket directory",
            risk="replace the socket",
            follow_symlinks=False,
            sticky_root_ok=True,
        )
    except PrivateDirError as exc:
        raise ListenError(str(exc)) from None


async def _remove_if_stale(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ListenError(f"{path} exists and is not a socket; refusing to replace it")
    probe = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    with probe:
        try:
            with trio.fail_after(_PROBE_TIMEOUT_S):
                await probe.connect(str(path))
        except trio.TooSlowError:
            pass  # accepting nothing, yet listening: not ours to remove
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                raise ListenError(f"cannot probe {path}: {exc.strerror}") from None
            log.info("removing stale socket %s", path)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            return
    raise ListenError(f"another acpd is already serving {path}")


async def bind_unix_socket(path: Path) -> tuple[trio.socket.SocketType, tuple[int, int]]:
    """Bind and listen on `path` (0600, in a 0700 directory); returns the socket and its
    `(st_dev, st_ino)`, so the caller unlinks only its own socket file.

    Raises `ListenError` with a one-line message.
    """
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        raise ListenError(f"socket path too long (max {_SUN_PATH_MAX} bytes): {path}")
    _prepare_dir(path.parent)
    await _remove_if_stale(path)
    sock = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    try:
        old_umask = os.umask(0o177)  # never visible with wider permissions, not even briefly
        try:
            await sock.bind(str(path))
        finally:
            os.umask(old_umask)
        st = os.stat(path)
        sock.listen(_BACKLOG)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {path}: {exc.strerror}") from None
    except BaseException:
        sock.close()
        raise
    return sock, (st.st_dev, st.st_ino)


def _unlink_if_ours(path: Path, ident: tuple[int, int]) -> None:
    try:
        st = os.stat(path)
        if (st.st_dev, st.st_ino) == ident:
            os.unlink(path)
    except OSError:
        pass  # gone already, or replaced by a successor that now owns the path


async def serve_unix(
    path: Path | None,
    dispatcher: Dispatcher,
    *,
    adopt: stdlib_socket.socket | None = None,
    allowed_uid: int | None = None,
    get_peer_uid: Callable[[trio.socket.SocketType], int] = peer_uid,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve `dispatcher` on a unix socket at `path`, or on an `adopt`ed listening socket
    (socket activation: systemd bound it, so it is not ours to unlink).

    Only `allowed_uid` (default: our own) may connect; `get_peer_uid` is injectable for tests.
    `task_status.started()` is called once the socket accepts connections.

    Error handling: start-up problems raise `ListenError` (one line) from `nursery.start`;
    a broken connection ends only that connection.
    Resource handling: cancelling this task closes the listener and every connection, and
    unlinks the socket file if it is still the one we bound.
    """
    uid = os.getuid() if allowed_uid is None else allowed_uid
    ident: tuple[int, int] | None = None
    if adopt is not None:
        sock = trio.socket.from_stdlib_socket(adopt)
    elif path is not None:
        sock, ident = await bind_unix_socket(path)
    else:
        raise ValueError("serve_unix needs a path or a socket to adopt")

    open_connections = 0
    refused = 0

    async def handle(stream: trio.SocketStream) -> None:
        nonlocal open_connections, refused
        async with stream:
            if open_connections >= MAX_CONNECTIONS:
                refused += 1
                level = logging.WARNING if refused == 1 else logging.DEBUG  # once, not a flood
                log.log(level, "refused a connection: %d clients connected", MAX_CONNECTIONS)
                message = f"busy: {MAX_CONNECTIONS} clients are connected (the limit); try again"
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stream.send_all(error_line(BUSY, message))
                    await linger(stream)
                return
            open_connections += 1
            try:
                if await _serve_connection(stream, dispatcher, uid, get_peer_uid):
                    await linger(stream)
            except Exception:  # a bug here must cost one connection, not the listener
                log.exception("connection failed")
            finally:
                open_connections -= 1

    try:
        await trio.serve_listeners(handle, [trio.SocketListener(sock)], task_status=task_status)
    finally:
        if path is not None and ident is not None:
            _unlink_if_ours(path, ident)


async def _serve_connection(
    stream: trio.SocketStream,
    dispatcher: Dispatcher,
    uid: int,
    get_peer_uid: Callable[[trio.socket.SocketType], int],
) -> bool:
    """Serve one connection; True if we end it with an error (the caller lingers)."""
    try:
        peer = get_peer_uid(stream.socket)
    except OSError:
        peer = -1
    if peer != uid:
        log.warning("refused a connection from uid %d", peer)
        try:
            await stream.send_all(error_line(UNAUTHORIZED, "unauthorized: wrong user"))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True
    max_line = dispatcher.max_message_bytes
    splitter = LineSplitter(max_line)
    async with dispatcher.open_connection(stream.send_all, coalesce=True) as conn:
        while True:
            try:
                data = await stream.receive_some(_READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                break  # reset by the client: finish what is in flight, if it can still be sent
            if not data:
                if (tail := splitter.flush()) is not None:  # a last line without its newline
                    await conn.handle(tail)
                break
            for line in splitter.feed(data):
                await conn.handle(line)
            if splitter.oversized:
                # We cannot know where the next message starts: say why, then hang up (after
                # the replies in flight and the error are flushed, when the block ends).
                await conn.send_error(INVALID_REQUEST, f"line too long (limit {max_line} bytes)")
                return True
    return False
