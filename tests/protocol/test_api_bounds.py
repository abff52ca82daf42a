"""Every integer a client may send is bounded by its decoder, so none reaches SQLite (64-bit)
or anything else that would overflow: out of range is -32602 at the door, whatever its size."""

from __future__ import annotations

from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import api
from protocol.jsonrpc import INVALID_PARAMS, RpcFailure, decode_params
from protocol.limits import MAX_SEQ

# A valid value for each required field, by name: enough to make any method's params valid.
_REQUIRED = {"id": "abc", "text": "hi", "request": "r1", "seq": 1}
_CANCELLED = {"cancelled": True}  # permissions/respond wants an option or this


def _int_type(t: mi.Type) -> mi.IntType | None:
    if isinstance(t, mi.UnionType):
        ints = [u for u in t.types if isinstance(u, mi.IntType)]
        return ints[0] if ints else None
    return t if isinstance(t, mi.IntType) else None


def _integer_fields() -> list[tuple[str, str, mi.IntType]]:
    found = []
    for method, spec in api.METHODS.items():
        info = mi.type_info(spec.params)
        assert isinstance(info, mi.StructType)
        for field in info.fields:
            t = _int_type(field.type)
            if t is not None:
                found.append((method, field.encode_name, t))
    return found


INTEGER_FIELDS = _integer_fields()


def _valid(method: str) -> dict[str, Any]:
    info = mi.type_info(api.METHODS[method].params)
    assert isinstance(info, mi.StructType)
    params = {f.encode_name: _REQUIRED[f.encode_name] for f in info.fields if f.required}
    if method == "permissions/respond":
        params.update(_CANCELLED)
    return params


def _decode(method: str, params: dict[str, Any]) -> object:
    decoder = api.params_decoder(method)
    assert decoder is not None
    return decode_params(decoder, msgspec.Raw(msgspec.json.encode(params)))


def test_there_are_integer_fields_and_each_is_bounded_on_both_sides() -> None:
    assert {(m, f) for m, f, _ in INTEGER_FIELDS} >= {
        ("conversations/events", "after_seq"),
        ("conversations/subscribe", "after_seq"),
        ("messages/remove", "seq"),
        ("conversations/list", "limit"),
    }
    for method, name, t in INTEGER_FIELDS:
        assert t.ge is not None, (method, name)
        assert t.le is not None, (method, name)
        assert t.le <= MAX_SEQ, (method, name)  # SQLite's INTEGER is 64-bit signed


HUGE = [2**63, 2**64, 2**64 + 1, 10**30, int("9" * 4000), -1, -(2**63) - 1, -(2**64), -(10**30)]


@pytest.mark.parametrize(("method", "name", "t"), INTEGER_FIELDS)
@pytest.mark.parametrize("value", HUGE)
def test_out_of_range_integers_are_invalid_params(
    method: str, name: str, t: mi.IntType, value: int
) -> None:
    with pytest.raises(RpcFailure) as caught:
        _decode(method, {**_valid(method), name: value})
    assert caught.value.code == INVALID_PARAMS


@given(st.data())
def test_any_integer_decodes_exactly_when_in_range(data: st.DataObject) -> None:
    method, name, t = data.draw(st.sampled_from(INTEGER_FIELDS))
    value = data.draw(
        st.one_of(
            st.integers(),
            st.integers(min_value=2**62),
            st.integers(max_value=-(2**62)),
            st.integers(min_value=(t.ge or 0) - 2, max_value=(t.ge or 0) + 2),
            st.integers(min_value=(t.le or 0) - 2, max_value=(t.le or 0) + 2),
        )
    )
    assert t.ge is not None
    assert t.le is not None
    params = {**_valid(method), name: value}
    if t.ge <= value <= t.le:
        assert getattr(_decode(method, params), name) == value
    else:
        with pytest.raises(RpcFailure) as caught:
            _decode(method, params)
        assert caught.value.code == INVALID_PARAMS
