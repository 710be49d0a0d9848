"""The in-Envoy decision's HTTP filters and the decision tables as route metadata.

Filter chain (static: changes only with releases): strip client-sent internal headers -> `geoip`
(our bundled country database; the client address is the connection's or the HCM's trusted
hops) -> `json_to_metadata` (the model from the body) -> the Lua decision -> router.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from importlib.resources import files
from typing import Any as AnyValue

from envoy_data_plane.envoy.config.common.mutation_rules.v3 import (
    HeaderMutation,
    HeaderMutationRemoveOnMatch,
)
from envoy_data_plane.envoy.config.core.v3 import DataSource, TypedExtensionConfig
from envoy_data_plane.envoy.extensions.filters.http.geoip.v3 import Geoip
from envoy_data_plane.envoy.extensions.filters.http.header_mutation.v3 import (
    HeaderMutation as HeaderMutationFilter,
)
from envoy_data_plane.envoy.extensions.filters.http.header_mutation.v3 import Mutations
from envoy_data_plane.envoy.extensions.filters.http.json_to_metadata.v3 import (
    JsonToMetadata,
    JsonToMetadataKeyValuePair,
    JsonToMetadataMatchRules,
    JsonToMetadataRule,
    JsonToMetadataSelector,
    JsonToMetadataValueType,
)
from envoy_data_plane.envoy.extensions.filters.http.lua.v3 import Lua, LuaPerRoute
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    HttpFilter,
)
from envoy_data_plane.envoy.extensions.geoip_providers.common.v3 import (
    CommonGeoipProviderConfig,
    CommonGeoipProviderConfigGeolocationFieldKeys,
)
from envoy_data_plane.envoy.extensions.geoip_providers.maxmind.v3 import MaxMindConfig
from envoy_data_plane.envoy.type.matcher.v3 import RegexMatcher, StringMatcher
from envoy_data_plane.google.protobuf import Any, Value

from gateway.envoy.tables import DecisionTables

LUA_FILTER = "envoy.filters.http.lua"
INTERNAL_PREFIX = "x-residency-"
GEO_HEADER = "x-residency-geo-country"
FACTS_NAMESPACE = "residency"
"""Dynamic metadata namespace json_to_metadata writes the model into."""


@cache
def lua_source() -> str:
    """The decision filter's Lua code (package data): the explanations, then the decision."""
    package = files("gateway.envoy")
    return "\n".join(
        package.joinpath(name).read_text("utf-8") for name in ("explain.lua", "decision.lua")
    )


def decision_filters(geoip_database: str) -> list[HttpFilter]:
    """The filters that run before the router, in order."""
    # Natively, before anything reads them: every client-sent internal header (the region
    # selector, the geo header the geoip filter is about to set, the decision id).
    strip_internal = HeaderMutationFilter(
        mutations=Mutations(
            request_mutations=[
                HeaderMutation(
                    remove_on_match=HeaderMutationRemoveOnMatch(
                        key_matcher=StringMatcher(prefix=INTERNAL_PREFIX)
                    )
                )
            ]
        )
    )
    geoip = Geoip(
        provider=TypedExtensionConfig(
            name="envoy.geoip_providers.maxmind",
            typed_config=Any.pack(
                MaxMindConfig(
                    country_db_path=geoip_database,
                    common_provider_config=CommonGeoipProviderConfig(
                        geo_field_keys=CommonGeoipProviderConfigGeolocationFieldKeys(
                            country=GEO_HEADER
                        )
                    ),
                )
            ),
        )
    )
    model = JsonToMetadata(
        request_rules=JsonToMetadataMatchRules(
            rules=[
                JsonToMetadataRule(
                    selectors=[JsonToMetadataSelector(key="model")],
                    on_present=JsonToMetadataKeyValuePair(
                        metadata_namespace=FACTS_NAMESPACE,
                        key="model",
                        type=JsonToMetadataValueType.PROTOBUF_VALUE,
                    ),
                    on_error=JsonToMetadataKeyValuePair(
                        metadata_namespace=FACTS_NAMESPACE,
                        key="invalid_json",
                        value=Value(bool_value=True),
                    ),
                )
            ],
            # Any content type, as the Python path: the body is JSON whatever the client says
            # (curl -d sends application/x-www-form-urlencoded).
            allow_content_types_regex=RegexMatcher(regex=".*"),
            allow_empty_content_type=True,
        )
    )
    lua = Lua(default_source_code=DataSource(inline_string=FALLBACK_LUA))
    return [
        HttpFilter(name="residency.strip_internal", typed_config=Any.pack(strip_internal)),
        HttpFilter(name="envoy.filters.http.geoip", typed_config=Any.pack(geoip)),
        HttpFilter(name="envoy.filters.http.json_to_metadata", typed_config=Any.pack(model)),
        HttpFilter(name=LUA_FILTER, typed_config=Any.pack(lua)),
    ]


FALLBACK_LUA = """
function envoy_on_request(h)
  h:respond({[":status"] = "503", ["content-type"] = "application/json"},
    '{"error":{"message":"no residency decision was made for this request",'
    .. '"type":"region_unavailable","param":null,"code":"no_healthy_region"}}')
end

function envoy_on_response(h)
  local decided = h:streamInfo():dynamicMetadata():get("envoy.filters.http.lua")
  local headers = h:headers()
  if headers:get("x-residency-local-reply") ~= nil then
    -- Envoy's own answer (no region answered: local_replies.py): it names no region.
    headers:remove("x-residency-local-reply")
    headers:remove("x-residency-region")
  elseif decided ~= nil and decided.region ~= nil then
    headers:replace("x-residency-decision", decided.decision)
    if headers:get("x-residency-region") == nil then -- failover routes set who answered
      headers:replace("x-residency-region", decided.region)
    end
  end
end
"""
"""The listener's Lua code. Requests: runs only where a route other than the decision route
matched before the selector was stripped (a client-chosen region), and fails closed. Responses:
Envoy runs the code of the route the request was sent on (a region's), so the response headers
naming the decision are added here, from what the decision stored in dynamic metadata."""


def lua_literal(value: AnyValue) -> str:
    """`value` (JSON-like data) as a Lua expression; lists become 1-indexed arrays."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = "".join(
            c if c.isascii() and c.isprintable() and c not in '"\\' else f"\\{ord(c)}"
            for c in value
        )
        return f'"{escaped}"'
    if isinstance(value, list):
        return "{" + ",".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, dict):
        return (
            "{" + ",".join(f"[{lua_literal(k)}]={lua_literal(v)}" for k, v in value.items()) + "}"
        )
    raise TypeError(f"no Lua literal for {type(value).__name__}")


def decision_route_config(
    tables: DecisionTables,
    orders: Iterable[tuple[str, ...]],
    max_attempts: int,
    explanation: dict[str, AnyValue],
) -> dict[str, Any]:
    """typed_per_filter_config of the decision route: the tables compiled into its Lua code.

    `orders` are the ordered failover lists that have a route (gateway.envoy.failover);
    `explanation` what the filter needs to explain itself (gateway.envoy.explain_tables)."""
    data = tables.to_dict() | explanation
    data["orders"] = {",".join(order): True for order in sorted(orders)}
    data["max_attempts"] = max_attempts
    code = f"local TABLES = {lua_literal(data)}\n{lua_source()}"
    return {LUA_FILTER: Any.pack(LuaPerRoute(source_code=DataSource(inline_string=code)))}
