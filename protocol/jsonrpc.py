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
    "UNAUTHORIZED",
    "Envelope",
    "ErrorResponse",
    "Notification",
    "Request",
    "RequestId",
    "Response",
    "RpcError",
    "RpcFailure",
    "decode_envelope",
    "decode_params",
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

# An empty Raw is falsy: it marks "member absent" without a Raw | UNSET union (which msgspec
# would not honour).
NO_RAW: Final = msgspec.Raw()


class RpcError(msgspec.Struct, omit_defaults=True, frozen=True):
    code: int
    message: str
    data: Any = UNSET


class Envelope(msgspec.Struct, frozen=True):
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
# UNSET members are always omitted.
class Request(msgspec.Struct, frozen=True, kw_only=True):
    jsonrpc: str = "2.0"
    id: int | str
    method: str
    params: Any = UNSET


class Notification(msgspec.Struct, frozen=True, kw_only=True):
    jsonrpc: str = "2.0"
    method: str
    params: Any = UNSET


class Response(msgspec.Struct, frozen=True, kw_only=True):
    jsonrpc: str = "2.0"
    id: int | str | None
    result: Any


class ErrorResponse(msgspec.Struct, frozen=True, kw_only=True):
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
        return f"RpcFailure({self.code}, {self.message!r})"


_encoder = msgspec.json.Encoder()
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
    """First pass. Raises `RpcFailure` with PARSE_ERROR or INVALID_REQUEST."""
    try:
        return _envelope_decoder.decode(line)
    except msgspec.ValidationError as exc:
        raise RpcFailure(INVALID_REQUEST, f"invalid request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise RpcFailure(PARSE_ERROR, f"parse error: {exc}") from None


def decode_params(decoder: msgspec.json.Decoder[T], raw: msgspec.Raw) -> T:
    """Second pass. Absent params decode as `{}`. Raises `RpcFailure(INVALID_PARAMS)`."""
    try:
        return decoder.decode(raw if raw else b"{}")
    except msgspec.DecodeError as exc:  # ValidationError is a subclass: both mean bad params
        raise RpcFailure(INVALID_PARAMS, f"invalid params: {exc}") from None
