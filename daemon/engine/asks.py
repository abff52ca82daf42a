"""What an agent asks of people: permission requests and questions, routed from its requests.

The agent's requests to acpd arrive here from its read loop (each in its own task, at most
`serving.MAX_SERVING` at once): `session/request_permission` (`permissions.py`) and
`elicitation/create` (`questions.py`). Either must name this conversation's session. Asked
during a turn, it belongs to that turn: the turn's idle timeout is off while people think,
and a cancelled or ended turn answers it `cancelled`. A permission request outside a turn is
answered `cancelled` at once (nothing runs that could use it); a question outside a turn (an
agent setting itself up, say) is shown all the same. fs/* and terminal/* are not offered
(acpd advertises neither capability), so they get -32601.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import msgspec

from daemon.engine.permissions import Permissions
from daemon.engine.questions import Questions
from daemon.engine.turn import Turn
from protocol import acp
from protocol.jsonrpc import INVALID_PARAMS, METHOD_NOT_FOUND, RpcFailure, decode_params

__all__ = ["Asks"]

_permission_params = msgspec.json.Decoder(acp.RequestPermissionRequest)
_elicitation_params = msgspec.json.Decoder(acp.CreateElicitationRequest)


@attrs.define(eq=False)
class Asks:
    permissions: Permissions
    questions: Questions
    # The conversation's agent session and running turn, as of the request.
    _session_id: Callable[[], str | None]
    _turn: Callable[[], Turn | None]

    @property
    def waiting(self) -> int:
        """Requests waiting for a person's answer, of either kind."""
        return self.permissions.waiting + self.questions.waiting

    def cancel_turn(self, prompt_seq: int, by: str = "cancel") -> None:
        """The turn is cancelled (or over): its open requests are answered cancelled."""
        self.permissions.cancel_all(by)
        self.questions.cancel_all(by, prompt_seq=prompt_seq)

    async def serve(self, method: str, raw: msgspec.Raw) -> object:
        if method == acp.REQUEST_PERMISSION:
            return await self._permission(decode_params(_permission_params, raw))
        if method == acp.ELICITATION_CREATE:
            return await self._question(decode_params(_elicitation_params, raw))
        raise RpcFailure(METHOD_NOT_FOUND, f"method not found: {method}")

    def _check_session(self, session_id: str) -> None:
        if session_id != self._session_id():
            raise RpcFailure(INVALID_PARAMS, f"no such session: {session_id[:100]}")

    async def _permission(self, params: acp.RequestPermissionRequest) -> object:
        self._check_session(params.session_id)
        if not params.options:
            raise RpcFailure(INVALID_PARAMS, "a permission request needs at least one option")
        turn = self._turn()
        if turn is None or not turn.takes_requests():
            return acp.RequestPermissionResponse(outcome=acp.CancelledOutcome())
        return await turn.wait_for_person(lambda seq: self.permissions.ask(params, seq))

    async def _question(self, params: acp.CreateElicitationRequest) -> object:
        if isinstance(params.session_id, str):
            self._check_session(params.session_id)
        elif params.request_id is msgspec.UNSET:
            raise RpcFailure(INVALID_PARAMS, "an elicitation needs a sessionId or a requestId")
        turn = self._turn()
        if turn is not None and turn.takes_requests():
            return await turn.wait_for_person(lambda seq: self.questions.ask(params, seq))
        return await self.questions.ask(params, None)
