"""Hypothesis strategies for acpd's ACP Structs, derived from their msgspec type info.

Values are generated to be schema-valid where the schema is stricter than our types (closed
enums, unsigned integers, untagged unions kept as one Struct), via `_OVERRIDES`, so that the
same strategies serve both round-trip and schema-validity properties.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import msgspec
import msgspec.inspect as mi
from hypothesis import strategies as st

from protocol import acp
from tests.protocol._schema import enum_values

MAX_INT = 2**32 - 1  # unsigned and fits uint32: valid for every integer in the schema

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
names = st.text(min_size=1, max_size=12)


def _to_builtins(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # Through JSON: msgspec.to_builtins cannot take a Raw.
    return strategy.map(lambda v: json.loads(msgspec.json.encode(v)))


def _opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def _lazy(tp: Any) -> st.SearchStrategy[Any]:
    # Deferred, so that building the override tables does not recurse into itself.
    return st.deferred(lambda: strategy(tp))


def _option_entry() -> st.SearchStrategy[Any]:
    return _lazy(acp.SessionConfigSelectOption).map(
        lambda o: acp.SessionConfigSelectEntry(**msgspec.structs.asdict(o))
    )


def _group_entry() -> st.SearchStrategy[Any]:
    return st.builds(
        lambda g, n, opts: acp.SessionConfigSelectEntry(group=g, name=n, options=opts),
        names,
        names,
        st.lists(_lazy(acp.SessionConfigSelectOption), max_size=2),
    )


@functools.cache
def _overrides() -> dict[tuple[type, str], st.SearchStrategy[Any]]:
    tool_kind = st.sampled_from(enum_values("ToolKind"))
    tool_status = st.sampled_from(enum_values("ToolCallStatus"))
    config_options = _to_builtins(st.lists(config_option(), max_size=2))
    mcp_servers = st.lists(
        _lazy(acp.McpServerStdio) | _lazy(acp.McpServerHttp) | _lazy(acp.McpServerSse),
        max_size=2,
    )
    option_entries = st.lists(_option_entry(), max_size=2)
    group_entries = st.lists(_group_entry(), max_size=2)
    return {
        (acp.Annotations, "audience"): _opt(st.lists(st.sampled_from(enum_values("Role")))),
        (acp.InitializeRequest, "protocol_version"): st.integers(0, 65535),
        (acp.InitializeResponse, "protocol_version"): st.integers(0, 65535),
        (acp.ToolCall, "kind"): tool_kind,  # not nullable in the schema's ToolCall
        (acp.ToolCall, "status"): tool_status,
        (acp.ToolCall, "content"): st.lists(_lazy(acp.ToolCallContent), max_size=2),
        (acp.ToolCall, "locations"): st.lists(_lazy(acp.ToolCallLocation), max_size=2),
        (acp.ToolCallFields, "kind"): _opt(tool_kind),
        (acp.ToolCallFields, "status"): _opt(tool_status),
        (acp.ToolCallUpdate, "kind"): _opt(tool_kind),
        (acp.ToolCallUpdate, "status"): _opt(tool_status),
        (acp.PlanEntry, "priority"): st.sampled_from(enum_values("PlanEntryPriority")),
        (acp.PlanEntry, "status"): st.sampled_from(enum_values("PlanEntryStatus")),
        (acp.PermissionOption, "kind"): st.sampled_from(enum_values("PermissionOptionKind")),
        (acp.PromptResponse, "stop_reason"): st.sampled_from(enum_values("StopReason")),
        (acp.Notice, "title"): names,  # minLength 1
        (acp.NewSessionResponse, "config_options"): _opt(config_options),
        (acp.LoadSessionResponse, "config_options"): _opt(config_options),
        (acp.ResumeSessionResponse, "config_options"): _opt(config_options),
        (acp.SetSessionConfigOptionResponse, "config_options"): config_options,
        (acp.ConfigOptionUpdate, "config_options"): config_options,
        # One select lists options or groups, never a mix.
        (acp.SessionConfigSelect, "options"): option_entries | group_entries,
        (acp.NewSessionRequest, "mcp_servers"): mcp_servers,
        (acp.LoadSessionRequest, "mcp_servers"): mcp_servers,
        (acp.ResumeSessionRequest, "mcp_servers"): mcp_servers,
        (acp.RequestPermissionRequest, "tool_call"): _to_builtins(_lazy(acp.ToolCallFields)),
        (acp.CancelRequestNotification, "request_id"): st.none()
        | st.integers(-(2**63), 2**63 - 1)
        | st.text(max_size=8),
    }


@functools.cache
def _whole_overrides() -> dict[type, st.SearchStrategy[Any]]:
    return {
        acp.ResourceContents: st.builds(acp.TextResourceContents, uri=names, text=st.text())
        | st.builds(acp.BlobResourceContents, uri=names, blob=st.text()),
        acp.CurrentModeUpdate: st.builds(acp.CurrentModeUpdate, current_mode_id=names),
        # The flat Struct cannot be schema-valid by construction: build a real variant.
        acp.McpServer: _lazy(acp.McpServerStdio) | _lazy(acp.McpServerHttp),
        acp.SetSessionConfigOptionRequest: st.builds(
            acp.SetSessionConfigOptionRequest.boolean, names, names, st.booleans()
        )
        | st.builds(
            acp.SetSessionConfigOptionRequest, session_id=names, config_id=names, value=names
        ),
        acp.SessionConfigSelectEntry: _option_entry() | _group_entry(),
        acp.McpServerHttp: st.builds(
            acp.McpServerHttp, name=names, url=names, headers=st.lists(_lazy(acp.HttpHeader))
        ),
        acp.McpServerSse: st.builds(
            acp.McpServerSse, name=names, url=names, headers=st.lists(_lazy(acp.HttpHeader))
        ),
        acp.McpServerStdio: st.builds(
            acp.McpServerStdio,
            name=names,
            command=names,
            args=st.lists(st.text(max_size=5), max_size=2),
            env=st.lists(_lazy(acp.EnvVariable), max_size=2),
        ),
    }


def _from_info(t: mi.Type, owner: type | None = None) -> st.SearchStrategy[Any]:
    if isinstance(t, mi.StrType):
        return st.text(max_size=12)
    if isinstance(t, mi.BoolType):
        return st.booleans()
    if isinstance(t, mi.IntType):
        return st.integers(0, MAX_INT)
    if isinstance(t, mi.FloatType):
        return st.floats(allow_nan=False, allow_infinity=False)
    if isinstance(t, mi.NoneType):
        return st.none()
    if isinstance(t, mi.AnyType):
        return json_values
    if isinstance(t, mi.RawType):
        return json_values.map(lambda v: msgspec.Raw(msgspec.json.encode(v)))
    if isinstance(t, mi.LiteralType):
        return st.sampled_from(t.values)
    if isinstance(t, mi.ListType):
        return st.lists(_from_info(t.item_type), max_size=2)
    if isinstance(t, mi.DictType):
        # No `_meta` key: in a capability marker (a plain dict here) it must be an object.
        keys = st.text(max_size=8).filter(lambda k: k != "_meta")
        return st.dictionaries(keys, _from_info(t.value_type), max_size=2)
    if isinstance(t, mi.UnionType):
        return st.one_of([_from_info(x) for x in t.types])
    if isinstance(t, mi.StructType):
        return strategy(t.cls)
    raise NotImplementedError(t)


def _deferred(t: mi.Type) -> st.SearchStrategy[Any]:
    return st.deferred(lambda: _from_info(t))


@functools.cache
def strategy(tp: Any) -> st.SearchStrategy[Any]:
    """Instances of a Struct type (or union of them) from `protocol.acp`."""
    if tp in _whole_overrides():
        return _whole_overrides()[tp]
    info = mi.type_info(tp)
    if not isinstance(info, mi.StructType):
        return _from_info(info)
    overrides = _overrides()
    required: dict[str, st.SearchStrategy[Any]] = {}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for f in info.fields:
        key = (tp, f.name)
        s = overrides[key] if key in overrides else _deferred(f.type)
        (required if f.required else optional)[f.name] = s
    return st.fixed_dictionaries(required, optional=optional).map(lambda kw: tp(**kw))


def config_option() -> st.SearchStrategy[Any]:
    return _lazy(acp.SessionConfigSelect) | _lazy(acp.SessionConfigBoolean)
