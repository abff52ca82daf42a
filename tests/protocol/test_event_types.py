"""`protocol.events.EVENT_BODIES`: the one list of stored event types (what the dashboard's
test walks to prove each has a rendering of its own). It must name every body the module
defines, match the ACP translator's table, and cover every type the daemon writes."""

from __future__ import annotations

import re
from pathlib import Path

from protocol import events as ev
from protocol import translate as tr

DAEMON = Path(__file__).resolve().parents[2] / "daemon"

# Where the daemon names the type of an event it stores: `durable("plan", ...)`,
# `_event("error", ...)`, and a type next to its body: `("mode", ev.ModeEvent(...))`,
# `return "error", ev.encode_body(...)`.
_CALLED = re.compile(r'\b(?:durable|_event)\(\s*"([a-z_]+)"')
_PAIRED = re.compile(r'"([a-z_]+)",\s*ev\.([A-Za-z_]+)\b')


def test_every_body_has_its_type() -> None:
    bodies = [
        cls
        for name, cls in vars(ev).items()
        if isinstance(cls, type) and issubclass(cls, ev._Body) and not name.startswith("_")
    ]
    listed = ev.EVENT_BODIES.values()
    assert sorted(c.__name__ for c in bodies) == sorted(c.__name__ for c in listed)
    assert len(set(ev.EVENT_BODIES.values())) == len(ev.EVENT_BODIES)
    assert set(ev.STATE_TYPES) <= ev.EVENT_BODIES.keys()
    assert set(ev.TEXT_EVENT_TYPES.values()) <= ev.EVENT_BODIES.keys()


def test_the_translator_knows_the_same_types() -> None:
    assert ev.EVENT_BODIES.keys() == tr.EVENT_TYPES.keys()


def test_every_type_the_daemon_writes_is_listed_with_its_body() -> None:
    written: set[str] = set()
    for path in DAEMON.rglob("*.py"):
        source = path.read_text()
        for type_ in _CALLED.findall(source):
            assert type_ in ev.EVENT_BODIES, f"{path.name} writes {type_!r}: not in EVENT_BODIES"
            written.add(type_)
        for type_, body in _PAIRED.findall(source):
            assert type_ in ev.EVENT_BODIES, f"{path.name} writes {type_!r}: not in EVENT_BODIES"
            written.add(type_)
            if body != "encode_body":
                assert ev.EVENT_BODIES[type_] is getattr(ev, body), (path.name, type_, body)
    # The scan sees the writes (it cannot pass by finding nothing).
    assert len(written) >= 15, sorted(written)
