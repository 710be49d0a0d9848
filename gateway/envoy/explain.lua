-- How the in-Envoy decision explains itself, in decide()'s words: JSON and the applied regimes.
--
-- Prepended to decision.lua (after `TABLES`, see decision_filters.py). The regime facts come
-- from gateway/envoy/explain_tables.py: per regime its governed countries, per policy class and
-- data class the rules, waived rules and tenant-flag triggers compliance.evaluate() found.

local MEMO_LIMIT = 4096

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

local function json_or_null(value)
  return value and json_string(value) or "null"
end

local function json_strings(values)
  local out = {}
  for i, v in ipairs(values) do
    out[i] = json_string(v)
  end
  return "[" .. table.concat(out, ",") .. "]"
end

-- (names for messages, residency.regimes as JSON) per class, data class and countries: the
-- same few combinations recur, so each is worked out once per worker (bounded).
local regimes_memo, regimes_memo_size = {}, 0

local function applied_regimes(t, policy_class, data_class, countries)
  local memo_key = policy_class .. "|" .. data_class .. "|" .. table.concat(countries, ",")
  local found = regimes_memo[memo_key]
  if found ~= nil then
    return found[1], found[2]
  end
  local by_regime = t.applied[policy_class + 1][data_class]
  local names, entries = {}, {}
  for i, regime in ipairs(t.regimes) do
    local entry = by_regime[tostring(i)]
    local triggered, seen = {}, {}
    for _, c in ipairs(countries) do
      if regime.countries[c] and not seen[c] then
        seen[c] = true
        triggered[#triggered + 1] = c
      end
    end
    table.sort(triggered)
    if entry ~= nil then
      for _, flag in ipairs(entry.flags) do
        triggered[#triggered + 1] = flag
      end
    end
    if #triggered > 0 then
      local rules = entry and entry.rules or {}
      if #rules > 0 then
        names[#names + 1] = regime.name
      end
      entries[#entries + 1] = '{"id":' .. json_string(regime.id) .. ',"name":'
        .. json_string(regime.name) .. ',"triggered_by":' .. json_strings(triggered)
        .. ',"rules":' .. json_strings(rules) .. ',"waived_rules":'
        .. json_strings(entry and entry.waived or {}) .. "}"
    end
  end
  local governed_by = #names > 0 and table.concat(names, ", ") or "no residency regime"
  local regimes_json = "[" .. table.concat(entries, ",") .. "]"
  if regimes_memo_size >= MEMO_LIMIT then
    regimes_memo, regimes_memo_size = {}, 0
  end
  regimes_memo[memo_key] = { governed_by, regimes_json }
  regimes_memo_size = regimes_memo_size + 1
  return governed_by, regimes_json
end

-- `,"reasons":[...],"residency":{...}`: the members a refusal or failure body adds to the
-- error object, as Decision.to_dict() has them (no `candidates`: per-region verdicts are not
-- pushed). `choice` is nil unless a region was chosen.
local function explanation(t, f, geo, jurisdictions, outcome, status, reason, choice, regimes,
                           decision_id)
  local where = {}
  for i, j in ipairs(jurisdictions) do
    where[i] = '{"country":' .. json_string(j.country) .. ',"source":"' .. j.source .. '"}'
  end
  local reasons = json_strings({ reason })
  return ',"reasons":' .. reasons .. ',"residency":{"decision_id":' .. json_or_null(decision_id)
    .. ',"outcome":"' .. outcome .. '","status":' .. status
    .. ',"chosen_region":' .. json_or_null(choice and choice.region)
    .. ',"fallbacks":' .. json_strings(choice and choice.fallbacks or {})
    .. ',"policy_version":' .. t.version .. ',"reasons":' .. reasons
    .. ',"facts":{"tenant":' .. json_string(f.key.tenant)
    .. ',"client_country":' .. json_or_null(geo)
    .. ',"subject_country":' .. json_or_null(f.subject)
    .. ',"data_class":' .. json_string(f.data_class) .. ',"model":' .. json_string(f.model)
    .. ',"at":"' .. os.date("!%Y-%m-%dT%H:%M:%S+00:00") .. '"}'
    .. ',"jurisdictions":[' .. table.concat(where, ",") .. '],"regimes":' .. regimes .. "}"
end
