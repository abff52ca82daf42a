"""acpd's wire formats: JSON-RPC 2.0, ACP types and line framing. Sans-IO: never imports trio."""

from protocol.framing import DEFAULT_MAX_LINE as DEFAULT_MAX_LINE
from protocol.framing import LineSplitter as LineSplitter
from protocol.jsonrpc import Envelope as Envelope
from protocol.jsonrpc import InvalidResult as InvalidResult
from protocol.jsonrpc import RpcError as RpcError
from protocol.jsonrpc import RpcFailure as RpcFailure
