-- How the in-Envoy decision explains itself, in decide()'s words: JSON and the applied regimes.
--
-- Prepended to decision.lua (after `TABLES`, see decision_filters.py). The regime facts come
-- from gateway/envoy/explain_tables.py: per regime its governed countries, per policy class and
-- data class the rules, waived rules and tenant-flag triggers compliance.evaluate() found.

local MEMO_LIMIT = 4096

local function json_string(value)
  if not value:find('[%c"\\]') then
    return '"' .. value .. '"'
  end
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

-- The time for `facts.at`, formatted once a second.
local at_second, at_text = -1, ""

local function now_text()
  local now = os.time()
  if now ~= at_second then
    at_second, at_text = now, os.date("!%Y-%m-%dT%H:%M:%S+00:00", now)
  end
  return at_text
end

-- The decision's law in decide()'s words ("<class> data governed by ... (jurisdictions: ...)")
-- and its residency.regimes JSON.
local function law_of(t, f, jurisdictions, countries)
  local governed_by, regimes = applied_regimes(t, f.key.class, f.data_class, countries)
  local where = {}
  for i, j in ipairs(jurisdictions) do
    where[i] = j.country .. " (" .. j.source .. ")"
  end
  return f.data_class .. " data governed by " .. governed_by .. " (jurisdictions: "
    .. table.concat(where, ", ") .. ")", regimes
end

-- `,"reasons":[...],"residency":{...}`: the members a refusal or failure body adds to the
-- error object, as Decision.to_dict() has them (no `candidates`: per-region verdicts are not
-- pushed), in three parts around the decision id and the time. `choice` is nil unless a
-- region was chosen.
local function explanation_parts(t, f, geo, jurisdictions, outcome, status, reason, choice,
                                 regimes)
  local where = {}
  for i, j in ipairs(jurisdictions) do
    where[i] = '{"country":' .. json_string(j.country) .. ',"source":"' .. j.source .. '"}'
  end
  local reasons = json_strings({ reason })
  return ',"reasons":' .. reasons .. ',"residency":{"decision_id":',
    ',"outcome":"' .. outcome .. '","status":' .. status
    .. ',"chosen_region":' .. json_or_null(choice and choice.region)
    .. ',"fallbacks":' .. json_strings(choice and choice.fallbacks or {})
    .. ',"policy_version":' .. t.version .. ',"reasons":' .. reasons
    .. ',"facts":{"tenant":' .. json_string(f.key.tenant)
    .. ',"client_country":' .. json_or_null(geo)
    .. ',"subject_country":' .. json_or_null(f.subject)
    .. ',"data_class":' .. json_string(f.data_class) .. ',"model":' .. json_string(f.model)
    .. ',"at":"',
    '"},"jurisdictions":[' .. table.concat(where, ",") .. '],"regimes":' .. regimes .. "}"
end

local function explanation(t, f, geo, jurisdictions, outcome, status, reason, choice, regimes,
                           decision_id)
  local before_id, before_at, rest = explanation_parts(t, f, geo, jurisdictions, outcome,
    status, reason, choice, regimes)
  return before_id .. json_or_null(decision_id) .. before_at .. now_text() .. rest
end

-- A routed decision's explanation (kept for Envoy's own answer should no region answer): the
-- same facts and choice recur, so their parts are worked out once per worker (bounded).
local routed_memo, routed_memo_size = {}, 0

local function routed_explanation(t, f, geo, jurisdictions, countries, choice, decision_id)
  local memo_key = f.key.tenant .. "|" .. f.data_class .. "|" .. (geo or "") .. "|"
    .. (f.subject or "") .. "|" .. choice.region .. "|" .. f.model
  local parts = routed_memo[memo_key]
  if parts == nil then
    local law, regimes = law_of(t, f, jurisdictions, countries)
    parts = { explanation_parts(t, f, geo, jurisdictions, "routed", 200,
      law .. "; " .. choice.region .. " is " .. choice.why, choice, regimes) }
    if routed_memo_size >= MEMO_LIMIT then
      routed_memo, routed_memo_size = {}, 0
    end
    routed_memo[memo_key] = parts
    routed_memo_size = routed_memo_size + 1
  end
  return parts[1] .. json_or_null(decision_id) .. parts[2] .. now_text() .. parts[3]
end
