"""A stand-in for the Gemini API on localhost, so the real gemini-cli can finish a turn offline.

gemini-cli sends its model calls to `$GOOGLE_GEMINI_BASE_URL` when set (its `gemini-api-key`
login; read from its 0.61.0 bundle). Without a model, its prompts retry for about a minute and
its session store keeps nothing a `session/load` could bring back (a session needs a user
message, which it writes only once a call came back). This server answers every
`streamGenerateContent` with one short reply (`REPLY`), `generateContent` (the model router's
question) with a choice of model, `countTokens` with a count; anything else 404. It records the
paths asked for. A plain thread: the tests that use it run real processes in real time.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

__all__ = ["REPLY", "GeminiApi", "gemini_api"]

REPLY: Final = "Hello from the stand-in model."


class GeminiApi:
    def __init__(self, server: http.server.ThreadingHTTPServer) -> None:
        self.server = server
        self.paths: list[str] = []

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"


def _handler(api: list[GeminiApi]) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            api[0].paths.append(self.path)
            if ":streamGenerateContent" in self.path:
                chunk = {
                    "candidates": [{
                        "content": {"role": "model", "parts": [{"text": REPLY}]},
                        "finishReason": "STOP", "index": 0,
                    }],
                    "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5,
                                      "totalTokenCount": 15},
                }  # fmt: skip
                body = b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n"
                self._send(200, body, "text/event-stream")
            elif ":generateContent" in self.path:
                choice = json.dumps({"reasoning": "short", "model_choice": "flash"})
                reply = {
                    "candidates": [{
                        "content": {"role": "model", "parts": [{"text": choice}]},
                        "finishReason": "STOP", "index": 0,
                    }],
                }  # fmt: skip
                self._send(200, json.dumps(reply).encode(), "application/json")
            elif ":countTokens" in self.path:
                self._send(200, b'{"totalTokens": 10}', "application/json")
            else:
                self._send(404, b"{}", "application/json")

        def do_GET(self) -> None:
            api[0].paths.append(self.path)
            self._send(404, b"{}", "application/json")

    return Handler


@contextmanager
def gemini_api() -> Iterator[GeminiApi]:
    holder: list[GeminiApi] = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(holder))
    server.daemon_threads = True
    holder.append(GeminiApi(server))
    thread = threading.Thread(target=server.serve_forever, name="gemini-api", daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
