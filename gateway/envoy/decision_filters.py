"""The in-Envoy decision's HTTP filters and the decision tables as route metadata.

Filter chain (static: changes only with releases): strip a client-sent geo header -> `geoip`
(our bundled country database; the client address is the connection's or the HCM's trusted
hops) -> `json_to_metadata` (the model from the body) -> the Lua decision -> router.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from importlib.resources import files

from envoy_data_plane.envoy.config.common.mutation_rules.v3 import HeaderMutation
from envoy_data_plane.envoy.config.core.v3 import DataSource, Metadata, TypedExtensionConfig
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
from envoy_data_plane.envoy.extensions.filters.http.lua.v3 import Lua
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    HttpFilter,
)
from envoy_data_plane.envoy.extensions.geoip_providers.common.v3 import (
    CommonGeoipProviderConfig,
    CommonGeoipProviderConfigGeolocationFieldKeys,
)
from envoy_data_plane.envoy.extensions.geoip_providers.maxmind.v3 import MaxMindConfig
from envoy_data_plane.google.protobuf import Any, Struct, Value

from gateway.envoy.tables import DecisionTables

LUA_FILTER = "envoy.filters.http.lua"
"""The Lua filter's name: also the route metadata namespace the tables are pushed under."""
GEO_HEADER = "x-residency-geo-country"
FACTS_NAMESPACE = "residency"
"""Dynamic metadata namespace json_to_metadata writes the model into."""


@cache
def lua_source() -> str:
    """The decision filter's Lua code (package data)."""
    return files("gateway.envoy").joinpath("decision.lua").read_text("utf-8")


def decision_filters(geoip_database: str) -> list[HttpFilter]:
    """The filters that run before the router, in order."""
    strip_geo = HeaderMutationFilter(
        mutations=Mutations(request_mutations=[HeaderMutation(remove=GEO_HEADER)])
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
            allow_empty_content_type=True,
        )
    )
    lua = Lua(default_source_code=DataSource(inline_string=lua_source()))
    return [
        HttpFilter(name="residency.strip_geo", typed_config=Any.pack(strip_geo)),
        HttpFilter(name="envoy.filters.http.geoip", typed_config=Any.pack(geoip)),
        HttpFilter(name="envoy.filters.http.json_to_metadata", typed_config=Any.pack(model)),
        HttpFilter(name=LUA_FILTER, typed_config=Any.pack(lua)),
    ]


def tables_metadata(tables: DecisionTables) -> Metadata:
    """The tables as route metadata; `version` (a digest) keys the per-worker converted copy."""
    data = tables.to_dict()
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
    fields = {"version": f"{tables.policy_version}-{digest}", "tables": data}
    return Metadata(filter_metadata={LUA_FILTER: Struct.from_dict(fields)})
