"""JSON-RPC 2.0 envelope, codec and error codes (sans-IO, msgspec).

Incoming messages are decoded in two passes (msgspec `Raw` docs): first the `Envelope`, with
`params`/`result` left as raw bytes, then the payload with a decoder chosen by method (or by
the waiter of a response, which alone knows the result type).
"""

from __future__ import annotations

from typing import Any, Final, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

__all__ = [
    "AGENT_START_FAILED",
    "AUTH_REQUIRED",
    "BUSY",
    "CONFLICT",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "NOT_FOUND",
    "NO_RAW",
    "PARSE_ERROR",
    "REQUEST_CANCELLED",
    "RESOURCE_NOT_FOUND",
    "STORAGE_UNAVAILABLE",
    "UNAUTHORIZED",
    "Envelope",
    "ErrorResponse",
    "InvalidResult",
    "Notification",
    "Request",
    "RequestId",
    "Response",
    "RpcError",
    "RpcFailure",
    "decode_envelope",
    "decode_params",
    "decode_result",
    "encode",
    "encode_line",
]

T = TypeVar("T")

RequestId = int | str | None

# Standard JSON-RPC codes.
PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
# ACP's own.
AUTH_REQUIRED: Final = -32000
RESOURCE_NOT_FOUND: Final = -32002
REQUEST_CANCELLED: Final = -32800
# acpd's API (CONTRACT.md).
NOT_FOUND: Final = -32001
AGENT_START_FAILED: Final = -32002
CONFLICT: Final = -32003
UNAUTHORIZED: Final = -32004
STORAGE_UNAVAILABLE: Final = -32005  # disk full, I/O error, the database deleted or replaced
BUSY: Final = -32006  # a limit was reached; the message names it

# An empty Raw is falsy: it marks "member absent" without a Raw | UNSET union (which msgspec
# would not honour).
NO_RAW: Final = msgspec.Raw()


class RpcError(msgspec.Struct, omit_defaults=True, frozen=True, gc=False):
    code: int
    message: str
    data: Any = UNSET


class Envelope(msgspec.Struct, frozen=True, gc=False):
    """Any incoming JSON-RPC message, first pass."""

    jsonrpc: str | UnsetType = UNSET
    id: int | str | None | UnsetType = UNSET
    method: str | UnsetType = UNSET
    params: msgspec.Raw = NO_RAW
    result: msgspec.Raw = NO_RAW
    error: RpcError | UnsetType = UNSET

    @property
    def is_request(self) -> bool:
        return self.method is not UNSET and self.id is not UNSET

    @property
    def is_notification(self) -> bool:
        return self.method is not UNSET and self.id is UNSET

    @property
    def is_response(self) -> bool:
        return self.method is UNSET and (bool(self.result) or self.error is not UNSET)


# Outgoing messages. No omit_defaults here: "jsonrpc": "2.0" is a default and must stay.
# UNSET members are always omitted. gc=False (here and above): messages hold no reference
# cycles, and untracked Structs are cheaper to create on the hot path (msgspec perf tips).
class Request(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    jsonrpc: str = "2.0"
    id: int | str
    method: str
    params: Any = UNSET


class Notification(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    jsonrpc: str = "2.0"
    method: str
    params: Any = UNSET


class Response(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    jsonrpc: str = "2.0"
    id: int | str | None
    result: Any


class ErrorResponse(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    jsonrpc: str = "2.0"
    id: int | str | None
    error: RpcError


class RpcFailure(Exception):
    """A JSON-RPC error, raised by handlers and by `request()` when the peer answered one."""

    def __init__(self, code: int, message: str, data: Any = UNSET) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_error(self) -> RpcError:
        return RpcError(self.code, self.message, self.data)

    @classmethod
    def from_error(cls, err: RpcError) -> RpcFailure:
        return cls(err.code, err.message, err.data)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code}, {self.message!r})"


_encoder = msgspec.json.Encoder()
# msgspec decodes nested arrays and objects recursively and raises RecursionError (a
# RuntimeError, not a DecodeError) past the interpreter's limit, some hundreds of levels deep.
_TOO_DEEP: Final = "invalid {}: nested too deeply"
_envelope_decoder = msgspec.json.Decoder(Envelope)


def encode(msg: object) -> bytes:
    return _encoder.encode(msg)


def encode_line(msg: object, buf: bytearray | None = None) -> bytes | bytearray:
    """Encode one NDJSON line. With `buf`, append to it (for batching writes) and return it."""
    if buf is None:
        out = bytearray()
        _encoder.encode_into(msg, out)
        out += b"\n"
        return out
    _encoder.encode_into(msg, buf, len(buf))
    buf += b"\n"
    return buf


def decode_envelope(line: bytes | bytearray | memoryview) -> Envelope:
    """First pass. Raises `RpcFailure` with PARSE_ERROR (not JSON) or INVALID_REQUEST (not an
    object, or a member of the wrong type).

    Classification is the caller's, with `is_request`/`is_notification`/`is_response`: it
    knows the id to answer with. A message that is none of them (`{"id": 1}`) is an invalid
    request; a response without an `id` (codex-acp sends one, ACP.md §16) is to be dropped;
    whether to insist on `"jsonrpc": "2.0"` is its policy too (agents are tolerated, clients
    are not).
    """
    try:
        return _envelope_decoder.decode(line)
    except msgspec.ValidationError as exc:
        raise RpcFailure(INVALID_REQUEST, f"invalid request: {exc}") from None
    except RecursionError:  # msgspec's answer to nesting deeper than the interpreter's limit
        raise RpcFailure(INVALID_REQUEST, _TOO_DEEP.format("request")) from None
    # msgspec raises UnicodeDecodeError, not DecodeError, for invalid UTF-8 in a string.
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise RpcFailure(PARSE_ERROR, f"parse error: {exc}") from None


_NULL: Final = msgspec.Raw(b"null")


def decode_params(decoder: msgspec.json.Decoder[T], raw: msgspec.Raw) -> T:
    """Second pass. Absent or `null` params decode as `{}`. Raises `RpcFailure(INVALID_PARAMS)`."""
    try:
        return decoder.decode(raw if raw and raw != _NULL else b"{}")
    # ValidationError is a DecodeError. `Raw` skips UTF-8 checks, so bad UTF-8 shows up here.
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise RpcFailure(INVALID_PARAMS, f"invalid params: {exc}") from None
    except RecursionError:
        raise RpcFailure(INVALID_PARAMS, _TOO_DEEP.format("params")) from None


class InvalidResult(RpcFailure):
    """The peer answered our request with a `result` we cannot decode: a protocol violation on
    its side (code INTERNAL_ERROR), told apart from an error the peer itself sent."""

    def __init__(self, message: str) -> None:
        super().__init__(INTERNAL_ERROR, message)


_result_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}
_null_defaults: dict[Any, Any] = {}


def decode_result(tp: type[T], raw: msgspec.Raw | bytes) -> T:
    """Decode a response's `result` as `tp` (the waiter's job: only it knows the type).

    A `null` (or absent) result decodes as `tp()` when every field of `tp` has a default: the
    ACP docs show `null` where the schema has an all-optional object (`session/load`,
    `fs/write_text_file`, ACP.md §18). Raises `InvalidResult`.
    """
    dec = _result_decoders.get(tp)
    if dec is None:
        dec = _result_decoders[tp] = msgspec.json.Decoder(tp)
        try:
            _null_defaults[tp] = tp()
        except TypeError:  # a required field, or not a class at all: null stays an error
            pass
    if not raw or raw == _NULL or raw == b"null":
        default = _null_defaults.get(tp, _MISSING)
        if default is not _MISSING:
            return default  # type: ignore[no-any-return]
        raw = _NULL
    try:
        return dec.decode(raw)  # type: ignore[no-any-return]
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise InvalidResult(f"invalid result: {exc}") from None
    except RecursionError:
        raise InvalidResult(_TOO_DEEP.format("result")) from None


_MISSING: Final = object()
