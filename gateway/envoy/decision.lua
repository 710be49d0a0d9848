-- The residency decision inside Envoy: look up, intersect, rank. No policy logic lives here.
--
-- The control plane (gateway/envoy/tables.py) evaluates the policy and pushes the results as a
-- Lua table literal, `TABLES`, prepended to this code in the per-route Lua configuration of the
-- fail-closed catch-all route (RDS): Envoy compiles it once per worker and policy version. (As
-- route metadata instead, Envoy converted the whole tables on every request: 2x the cost.)
-- The header_mutation filter in front strips client-sent internal headers; this one validates the routing headers like
-- gateway/intake.py, finds the tenant by the SHA-256 of its API key (native OpenSSL through
-- LuaJIT's FFI: nothing hand-written), intersects the pushed masks, ranks the allowed regions
-- by distance and sets the selector header the region routes match on.

local ffi = require("ffi")
ffi.cdef([[unsigned char *SHA256(const unsigned char *d, size_t n, unsigned char *md);]])

local NAMESPACE = "envoy.filters.http.lua"
local SELECTOR = "x-residency-region"
local GEO_HEADER = "x-residency-geo-country"
local EARTH_RADIUS_KM = 6371.0088
local NEAR_TIER_KM = 100.0
local WORD_BITS = 31
local MAX_MODEL_CHARS = 256
local SHOWN_CHARS = 64
local DATA_CLASSES = "public, personal, special, health, payment, financial_securities, insurance"
local UNKNOWN_ORIGIN = "the client's country is unknown (private, loopback or unlisted address) "
  .. "and no jurisdiction was declared: send the header 'X-Data-Subject-Country: <ISO 3166-1 "
  .. "alpha-2 code>' or set a home jurisdiction on the tenant"

-- The system's libcrypto (OpenSSL); without it every request fails closed with a 503.
local crypto = nil
for _, name in ipairs({ "libcrypto.so.3", "crypto", "libcrypto.so.1.1" }) do
  local ok, lib = pcall(ffi.load, name)
  if ok then
    crypto = lib
    break
  end
end
local digest = ffi.new("unsigned char[32]")
local HEX = {}
for i = 0, 255 do
  HEX[i] = string.format("%02x", i)
end
local hex_parts = {}

local function sha256_hex(text)
  crypto.SHA256(text, #text, digest)
  for i = 0, 31 do
    hex_parts[i + 1] = HEX[digest[i]]
  end
  return table.concat(hex_parts, "", 1, 32)
end

-- Python's repr() of a plain value, as gateway.intake._shown quotes it (ASCII-safe values).
local function shown(value)
  local quoted
  if value:find("'", 1, true) and not value:find('"', 1, true) then
    quoted = '"' .. value .. '"'
  else
    quoted = "'" .. value:gsub("\\", "\\\\"):gsub("'", "\\'") .. "'"
  end
  if #value <= SHOWN_CHARS then
    return quoted
  end
  return "'" .. value:sub(1, SHOWN_CHARS) .. "'... (" .. #value .. " characters)"
end

local function json_string(value)
  local escaped = value:gsub('[%c"\\]', function(c)
    if c == '"' then
      return '\\"'
    elseif c == "\\" then
      return "\\\\"
    end
    return string.format("\\u%04x", c:byte())
  end)
  return '"' .. escaped .. '"'
end

local function reply(h, status, message, error_type, code, param, decision_id)
  local body = '{"error":{"message":' .. json_string(message) .. ',"type":' .. json_string(error_type)
    .. ',"param":' .. (param and json_string(param) or "null") .. ',"code":' .. json_string(code)
  local headers = { [":status"] = tostring(status), ["content-type"] = "application/json" }
  if decision_id ~= nil then
    body = body .. ',"decision_id":' .. json_string(decision_id)
    headers["x-residency-decision"] = decision_id
  end
  h:respond(headers, body .. "}}")
end

local function invalid(h, status, message, code, param)
  reply(h, status, message, "invalid_request_error", code, param, nil)
end

-- One value of a routing header, or nil; false after answering 400 (repeated or a list).
local function single(h, headers, name, display, no_list)
  local count = headers:getNumValues(name)
  if count == 0 then
    return nil
  end
  if count > 1 then
    invalid(h, 400, display .. ": sent " .. count .. " times; send it once, with one value",
      "repeated_header", display)
    return false
  end
  local value = headers:getAtIndex(name, 0)
  if no_list and value:find(",", 1, true) then
    invalid(h, 400, display .. ": " .. shown(value) .. " is a list; send exactly one value",
      "repeated_header", display)
    return false
  end
  return value
end

local function strip_http_space(value)
  return (value:gsub("^[ \t]+", ""):gsub("[ \t]+$", ""))
end

local function bearer(value)
  local scheme, token = value:match("^([^ ]*) (.*)$")
  if scheme == nil or scheme:lower() ~= "bearer" then
    return nil
  end
  token = token:gsub("^%s+", ""):gsub("%s+$", "")
  return token ~= "" and token or nil
end

local function intersect(a, b)
  local out = {}
  for i = 1, #a do
    out[i] = bit.band(a[i], b[i])
  end
  return out
end

local function empty(mask)
  for i = 1, #mask do
    if mask[i] ~= 0 then
      return false
    end
  end
  return true
end

local function has(mask, index)
  local word = math.floor(index / WORD_BITS) + 1
  return bit.band(mask[word], bit.lshift(1, index % WORD_BITS)) ~= 0
end

-- The routing record's facts, for the access log (gateway/envoy/access_log.py reads them).
local RECORD = "residency"

local function note(h, key, value)
  if value ~= nil then
    h:streamInfo():dynamicMetadata():set(RECORD, key, value)
  end
end

local function ids(t, mask)
  local out = {}
  for i = 0, #t.regions - 1 do
    if has(mask, i) then
      out[#out + 1] = t.regions[i + 1]
    end
  end
  return table.concat(out, ",")
end

-- Jurisdictions as "DE:client_ip,IN:declared_subject" (the sources gateway/routing/locate names).
local function noted_facts(h, t, f, geo)
  local found = {}
  for _, j in ipairs({ { geo, "client_ip" }, { f.subject, "declared_subject" },
    { f.key.home, "tenant_home" } }) do
    if j[1] then
      found[#found + 1] = j[1] .. ":" .. j[2]
    end
  end
  note(h, "tenant", f.key.tenant)
  note(h, "data_class", f.data_class)
  note(h, "client_country", geo)
  note(h, "subject_country", f.subject)
  note(h, "jurisdictions", table.concat(found, ","))
  note(h, "policy_version", t.version)
end

local function haversine_km(lat1, lon1, lat2, lon2)
  local phi1, phi2 = math.rad(lat1), math.rad(lat2)
  local dphi, dlambda = phi2 - phi1, math.rad(lon2 - lon1)
  local a = math.sin(dphi / 2) ^ 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ^ 2
  return 2 * EARTH_RADIUS_KM * math.asin(math.min(1.0, math.sqrt(a)))
end

-- Usable regions nearest first (ties by id), a weighted pick in the <= 100 km tier, then the
-- selector: the failover list if it has a route, else the chosen region alone.
-- The pick draws a random number, not Python's crc32(request id): same weights, other draw.
local function choose(t, usable, origin)
  local ranked = {}
  for i = 0, #t.regions - 1 do
    if has(usable, i) then
      local c = t.coordinates[i + 1]
      ranked[#ranked + 1] = { i = i, d = haversine_km(origin[1], origin[2], c[1], c[2]) }
    end
  end
  table.sort(ranked, function(x, y)
    if x.d ~= y.d then
      return x.d < y.d
    end
    return x.i < y.i
  end)
  local nearest, total, tier = ranked[1].d, 0, {}
  for _, r in ipairs(ranked) do
    local weight = t.weights[r.i + 1]
    if r.d - nearest <= NEAR_TIER_KM and weight > 0 then
      tier[#tier + 1] = r
      total = total + weight
    end
  end
  local chosen = ranked[1].i
  if total > 0 then
    local point = math.random(0, total - 1)
    chosen = tier[#tier].i
    for _, r in ipairs(tier) do
      local weight = t.weights[r.i + 1]
      if point < weight then
        chosen = r.i
        break
      end
      point = point - weight
    end
  end
  -- The failover list: the chosen region, then the others nearest first (as decide() orders).
  local order = { t.regions[chosen + 1] }
  for _, r in ipairs(ranked) do
    if #order >= t.max_attempts then
      break
    end
    if r.i ~= chosen then
      order[#order + 1] = t.regions[r.i + 1]
    end
  end
  local key = table.concat(order, ",")
  if t.orders[key] then
    return key, order[1], key
  end
  return order[1], order[1], order[1] -- no aggregate for this list: the chosen region alone
end

local function model_of(h)
  local facts = h:streamInfo():dynamicMetadata():get("residency") or {}
  local model = facts.model
  if facts.invalid_json ~= nil then
    invalid(h, 400, "request body is not valid JSON", "invalid_json", nil)
  elseif model == nil then
    invalid(h, 400, "missing required field 'model'", "missing_model", "model")
  elseif type(model) ~= "string" or model == "" then
    invalid(h, 400, "'model' must be a non-empty string", "invalid_model", "model")
  elseif #model > MAX_MODEL_CHARS then
    invalid(h, 400, "'model' is " .. #model .. " characters long; the limit is "
      .. MAX_MODEL_CHARS, "model_too_long", "model")
  else
    return model
  end
  return nil
end

-- The validated request facts, or nil after answering 4xx (the order gateway/proxy.py uses).
local function facts_of(h, t, headers)
  if headers:get(":method") ~= "POST" then
    return invalid(h, 405, headers:get(":path") .. " accepts POST only", "method_not_allowed")
  end
  local authorization = single(h, headers, "authorization", "Authorization", false)
  if authorization == false then
    return nil
  end
  local token = authorization and bearer(authorization)
  if token == nil then
    return invalid(h, 401, "missing API key: send 'Authorization: Bearer <key>'",
      "missing_api_key")
  end
  local key = t.keys[sha256_hex(token)]
  if key == nil then
    return invalid(h, 401, "invalid API key", "invalid_api_key")
  end
  headers:remove("authorization") -- the tenant's key never reaches a region
  local model = model_of(h)
  if model == nil then
    return nil
  end
  local subject = single(h, headers, "x-data-subject-country", "X-Data-Subject-Country", true)
  if subject == false then
    return nil
  elseif subject ~= nil then
    local stripped = strip_http_space(subject)
    local code = stripped:match("^[A-Za-z][A-Za-z]$") and stripped:upper() or ""
    if t.centroids[code] == nil then
      return invalid(h, 400, "X-Data-Subject-Country: " .. shown(subject)
        .. " is not an ISO 3166-1 alpha-2 country code", "invalid_subject_country",
        "X-Data-Subject-Country")
    end
    subject = code
  end
  local data_class = single(h, headers, "x-data-class", "X-Data-Class", true)
  if data_class == false then
    return nil
  end
  local class_name = "personal"
  if data_class ~= nil then
    local stripped = strip_http_space(data_class)
    class_name = stripped:match("^[A-Za-z_]+$") and stripped:lower() or ""
    if t.allow[key.class + 1][class_name] == nil then
      return invalid(h, 400, "X-Data-Class: unknown data class " .. shown(data_class)
        .. "; expected one of: " .. DATA_CLASSES, "invalid_data_class", "X-Data-Class")
    end
  end
  return { key = key, subject = subject, data_class = class_name, model = model }
end

local function refuse(h, status, message, decision_id)
  local kinds = {
    [451] = { "residency_violation", "no_allowed_region" },
    [503] = { "region_unavailable", "no_healthy_region" },
    [404] = { "invalid_request_error", "model_not_found" },
  }
  local kind = kinds[status]
  note(h, "refusal", kind[2])
  reply(h, status, message, kind[1], kind[2], nil, decision_id)
end

-- Intersect the pushed masks for these facts and pick the region; nil after a refusal.
local function decide(h, t, f, geo, decision_id)
  local countries = {}
  for _, c in ipairs({ geo or false, f.subject or false, f.key.home or false }) do
    if c then
      countries[#countries + 1] = c
    end
  end
  if #countries == 0 then
    return refuse(h, 451, UNKNOWN_ORIGIN, decision_id)
  end
  local by_country = t.allow[f.key.class + 1][f.data_class]
  local allowed = by_country["*"]
  for _, c in ipairs(countries) do
    allowed = intersect(allowed, by_country[c] or by_country["*"])
  end
  local where = table.concat(countries, ", ")
  note(h, "allowed", ids(t, allowed))
  if empty(allowed) then
    return refuse(h, 451, "no region may process " .. f.data_class
      .. " data here (jurisdictions: " .. where .. ")", decision_id)
  end
  local serving = t.models[f.model]
  local usable = serving and intersect(intersect(allowed, t.active), serving) or nil
  if usable == nil or empty(usable) then
    if serving == nil then
      return refuse(h, 404, "no region serves model '" .. f.model .. "'", decision_id)
    elseif empty(intersect(allowed, serving)) then
      return refuse(h, 451, "model '" .. f.model .. "' is served only in regions that may not "
        .. "process " .. f.data_class .. " data (jurisdictions: " .. where .. ")", decision_id)
    end
    return refuse(h, 503, "every allowed region is unavailable", decision_id)
  end
  local origin = nil
  for _, c in ipairs(countries) do
    origin = t.centroids[c]
    if origin ~= nil then
      break
    end
  end
  return choose(t, usable, origin or { 0, 0 })
end

function envoy_on_request(h)
  local headers = h:headers()
  -- The header_mutation filter already removed every client-sent x-residency-* header (this
  -- one was set by the geoip filter since); the route may have been matched before that.
  local geo = headers:get(GEO_HEADER)
  headers:remove(GEO_HEADER)
  local decision_id = headers:get("x-request-id")
  local t = TABLES
  if crypto == nil then
    return reply(h, 503, "no SHA-256 (libcrypto) for API keys in this Envoy",
      "region_unavailable", "decision_unavailable", nil, decision_id)
  end
  local f = facts_of(h, t, headers)
  if f == nil then
    return
  end
  noted_facts(h, t, f, geo)
  local selector, region, order = decide(h, t, f, geo, decision_id)
  if selector == nil then
    return
  end
  note(h, "order", order)
  headers:replace(SELECTOR, selector)
  h:clearRouteCache()
  local metadata = h:streamInfo():dynamicMetadata()
  metadata:set(NAMESPACE, "region", region)
  metadata:set(NAMESPACE, "decision", decision_id)
end

-- The response headers naming the decision are added by the listener's code (FALLBACK_LUA in
-- decision_filters.py): Envoy runs the code of the route the request was finally sent on.
