// Audit console: plain JS, no build step, no third-party code. Data is written with
// textContent only, and the token stays in sessionStorage (gone when the tab closes).
"use strict";

const TOKEN_KEY = "rg-audit-token";
const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
  "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const NOT_PROCESSED = "not processed";
const $ = (id) => document.getElementById(id);
const state = { cursors: [null], page: 0, next: null, listRun: 0, reportRun: 0 };
const changes = { cursors: [null], page: 0, next: null, run: 0 };

function token() { return sessionStorage.getItem(TOKEN_KEY); }

function say(text, kind = "info") {
  const box = $("message");
  box.textContent = text;
  box.className = kind;
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${token()}` } });
  if (!response.ok) {
    let message = `HTTP ${response.status}`;
    try { message = (await response.json()).error.message || message; } catch (_) { /* not JSON */ }
    if (response.status === 401) { signOut(); }
    throw new ApiError(response.status, message);
  }
  return response;
}

async function getJson(path) { return (await api(path)).json(); }

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

// -- filters --------------------------------------------------------------------------------

function filterParams(withPaging) {
  const form = $("filters");
  const params = new URLSearchParams();
  for (const name of ["tenant", "client_country", "jurisdiction", "data_class", "region", "outcome"]) {
    const value = form.elements[name].value.trim();
    if (value) params.set(name, value);
  }
  for (const name of ["since", "until"]) {
    const value = form.elements[name].value;
    if (value) params.set(name, `${value}Z`);  // the inputs are read as UTC
  }
  if (withPaging) {
    params.set("limit", form.elements.limit.value);
    const cursor = state.cursors[state.page];
    if (cursor) params.set("cursor", cursor);
  }
  return params;
}

// -- decision list ----------------------------------------------------------------------------

function row(record) {
  const tr = el("tr");
  tr.appendChild(el("td", String(record.decided_at).replace("T", " ").slice(0, 23)));
  const idCell = el("td");
  const link = el("a", record.decision_id);
  link.href = "#";
  link.dataset.id = record.decision_id;
  link.addEventListener("click", (event) => { event.preventDefault(); showDecision(record.decision_id); });
  idCell.appendChild(link);
  tr.appendChild(idCell);
  tr.appendChild(el("td", record.tenant_id || "–"));
  tr.appendChild(el("td", record.jurisdiction || "unknown"));
  tr.appendChild(el("td", record.client_country || "–"));
  tr.appendChild(el("td", record.data_class || "–"));
  const outcome = record.outcome_recorded === false ? "unknown: no outcome recorded" : record.outcome;
  const outcomeCell = el("td", outcome, `outcome ${record.outcome}`);
  if (record.outcome_note) outcomeCell.title = record.outcome_note;
  tr.appendChild(outcomeCell);
  tr.appendChild(el("td", record.served_region || record.chosen_region || "–"));
  tr.appendChild(el("td", record.status_code ?? "–"));
  return tr;
}

async function loadDecisions() {
  const run = ++state.listRun;
  const page = await getJson(`/audit/decisions?${filterParams(true)}`);
  if (run !== state.listRun) return;  // a newer search was started meanwhile: drop this answer
  const body = $("decisions").tBodies[0];
  body.replaceChildren(...page.decisions.map(row));
  if (!page.decisions.length) {
    const empty = el("tr");
    const cell = el("td", "No decisions match these filters.", "empty");
    cell.colSpan = 9;
    empty.appendChild(cell);
    body.appendChild(empty);
  }
  state.next = page.next_cursor;
  $("newer").disabled = state.page === 0;
  $("older").disabled = !state.next;
  $("page-info").textContent = `page ${state.page + 1} · ${page.decisions.length} shown`;
}

// -- one decision -----------------------------------------------------------------------------

async function showDecision(id) {
  try {
    const record = await getJson(`/audit/decisions/${encodeURIComponent(id)}`);
    $("detail-id").textContent = record.decision_id;
    $("detail-summary").textContent = record.summary;
    $("detail-trace").textContent = record.trace_id || "none recorded";
    $("detail-version").textContent = record.policy_version ?? "–";
    $("detail-chain").textContent = record.chain_seq ? `#${record.chain_seq} ${record.record_hash || ""}` : "–";
    $("detail-lines").replaceChildren(...record.explanation_text.map((line) => el("li", line)));
    $("detail-json").textContent = JSON.stringify(record, null, 2);
    $("detail").hidden = false;
    $("detail").scrollIntoView({ block: "nearest" });
  } catch (error) {
    say(`Cannot show decision ${id}: ${error.message}`, "error");
  }
}

// -- configuration changes -------------------------------------------------------------------

function changeParams() {
  const form = $("change-filters");
  const params = new URLSearchParams();
  for (const name of ["actor", "object_type", "object_id", "action"]) {
    const value = form.elements[name].value.trim();
    if (value) params.set(name, value);
  }
  for (const name of ["since", "until"]) {
    const value = form.elements[name].value;
    if (value) params.set(name, `${value}Z`);  // the inputs are read as UTC
  }
  params.set("limit", "50");
  const cursor = changes.cursors[changes.page];
  if (cursor) params.set("cursor", cursor);
  return params;
}

function whatChanged(change) {
  const fields = { create: "new", delete: "removed" }[change.action] || change.changed_fields.join(", ");
  return fields || "–";
}

function changeRow(change) {
  const tr = el("tr");
  tr.appendChild(el("td", String(change.changed_at).replace("T", " ").slice(0, 23)));
  const idCell = el("td");
  const link = el("a", change.change_id);
  link.href = "#";
  link.dataset.change = change.change_id;
  link.addEventListener("click", (event) => { event.preventDefault(); showChange(change.change_id); });
  idCell.appendChild(link);
  tr.appendChild(idCell);
  tr.appendChild(el("td", `#${change.chain_seq}`));
  tr.appendChild(el("td", change.actor));
  tr.appendChild(el("td", change.role));
  tr.appendChild(el("td", `${change.object_type} ${change.object_id}`));
  tr.appendChild(el("td", change.action));
  const what = el("td", whatChanged(change));
  for (const fact of change.legal_facts_changed || []) what.appendChild(el("div", `legal: ${fact}`, "legal"));
  tr.appendChild(what);
  return tr;
}

async function loadChanges() {
  const run = ++changes.run;
  const page = await getJson(`/audit/changes?${changeParams()}`);
  if (run !== changes.run) return;
  const body = $("changes").tBodies[0];
  body.replaceChildren(...page.changes.map(changeRow));
  if (!page.changes.length) {
    const empty = el("tr");
    const cell = el("td", "No configuration changes match these filters.", "empty");
    cell.colSpan = 8;
    empty.appendChild(cell);
    body.appendChild(empty);
  }
  changes.next = page.next_cursor;
  $("changes-newer").disabled = changes.page === 0;
  $("changes-older").disabled = !changes.next;
  $("changes-info").textContent = `page ${changes.page + 1} · ${page.changes.length} shown`;
}

function searchChanges() {
  changes.cursors = [null];
  changes.page = 0;
  $("change-detail").hidden = true;
  return loadChanges().catch((error) => say(error.message, "error"));
}

async function showChange(id) {
  try {
    const change = await getJson(`/audit/changes/${encodeURIComponent(id)}`);
    $("change-id").textContent = `${change.change_id} (chain #${change.chain_seq})`;
    $("change-summary").textContent = change.summary;
    $("change-lines").replaceChildren(...change.explanation_text.map((line) => el("li", line)));
    $("change-json").textContent = JSON.stringify(change, null, 2);
    $("change-detail").hidden = false;
    $("change-detail").scrollIntoView({ block: "nearest" });
  } catch (error) {
    say(`Cannot show configuration change ${id}: ${error.message}`, "error");
  }
}

// -- chain status -----------------------------------------------------------------------------

async function loadChain(fresh = false) {
  const status = $("chain-status");
  status.textContent = "verifying…";
  status.className = "pending";
  try {
    // "Verify again" verifies now; otherwise a result up to a minute old is reused.
    const chain = await getJson(`/audit/chain/status${fresh ? "?max_age=0" : ""}`);
    if (chain.ok) {
      // What the two tables list adds up to the record count (checkpoints sign, not count).
      const parts = chain.breakdown ? ` (${chain.breakdown})` : "";
      status.textContent = `Verified: ${chain.summary || `chain intact, ${chain.records} records`}${parts}`;
      status.className = "ok";
    } else {
      const first = chain.first_break;
      const where = first ? ` First break: ${first.problem} at #${first.seq} (${first.entry || "?"}): ${first.detail}` : "";
      status.textContent = `BROKEN: ${chain.summary || "verification failed"}.${where}`;
      status.className = "bad";
    }
  } catch (error) {
    status.textContent = error.status === 404
      ? "Chain status is not available on this gateway (no /audit/chain/status endpoint)."
      : `Chain status unavailable: ${error.message}`;
    status.className = "pending";
  }
}

// -- report -----------------------------------------------------------------------------------

function svg(tag, attributes, text) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function drawMatrix(matrix) {
  const box = $("matrix-chart");
  const regions = [...matrix.regions, NOT_PROCESSED];
  const rows = matrix.jurisdictions.map((j) => {
    const counts = { ...(matrix.counts[j] || {}), [NOT_PROCESSED]: matrix.not_processed[j] || 0 };
    return { jurisdiction: j, counts, total: regions.reduce((sum, r) => sum + (counts[r] || 0), 0) };
  });
  if (!rows.length) { box.replaceChildren(el("p", "No decisions in this period.", "empty")); return; }
  const max = Math.max(...rows.map((r) => r.total));
  const barHeight = 22, left = 90, width = 640, top = 10;
  const legendTop = top + rows.length * (barHeight + 6) + 10;
  const chart = svg("svg", { width: width + left + 80, height: legendTop + 24 * Math.ceil(regions.length / 4) + 10,
    role: "img", id: "matrix-svg" });
  chart.appendChild(svg("title", {}, "Decisions by subject jurisdiction and processing region"));
  rows.forEach((r, i) => {
    const y = top + i * (barHeight + 6);
    chart.appendChild(svg("text", { x: left - 8, y: y + barHeight * 0.7, "text-anchor": "end", class: "axis" }, r.jurisdiction));
    let x = left;
    regions.forEach((region, k) => {
      const n = r.counts[region] || 0;
      if (!n) return;
      const w = Math.max(1, (n / max) * width);
      const rect = svg("rect", { x, y, width: w, height: barHeight,
        fill: region === NOT_PROCESSED ? "#c7c7c7" : COLOURS[k % COLOURS.length], class: "segment" });
      rect.appendChild(svg("title", {}, `${r.jurisdiction} → ${region}: ${n}`));
      chart.appendChild(rect);
      x += w;
    });
    chart.appendChild(svg("text", { x: x + 6, y: y + barHeight * 0.7, class: "axis" }, r.total));
  });
  regions.forEach((region, k) => {
    const x = left + (k % 4) * 170, y = legendTop + Math.floor(k / 4) * 24;
    chart.appendChild(svg("rect", { x, y, width: 14, height: 14,
      fill: region === NOT_PROCESSED ? "#c7c7c7" : COLOURS[k % COLOURS.length] }));
    chart.appendChild(svg("text", { x: x + 20, y: y + 12, class: "legend" }, region));
  });
  box.replaceChildren(chart);
}

async function loadReport() {
  const run = ++state.reportRun;
  const report = await getJson(`/audit/reports?${filterParams(false)}`);
  if (run !== state.reportRun) return;
  const outcomes = Object.entries(report.outcomes).map(([k, v]) => `${k} ${v}`).join(", ");
  $("report-totals").textContent = `${report.total} decisions${outcomes ? ` (${outcomes})` : ""}.`;
  const re = report.reevaluation;
  const verdict = $("reevaluation");
  if (re.violations === 0) {
    verdict.textContent = `Re-evaluation: 0 violations — ${re.checked} routed records replayed against the policy version they were decided under (${re.groups_evaluated} distinct cases)` +
      (re.unverifiable ? `; ${re.unverifiable} could not be checked (${re.unverifiable_reasons.map((u) => u.reason).join("; ")}).` : ".");
    verdict.className = re.unverifiable ? "pending" : "ok";
  } else {
    const first = re.violating[0];
    verdict.textContent = `Re-evaluation: ${re.violations} records went to a region their policy did not allow. ` +
      `First: ${first.region} (${first.why}), e.g. ${first.sample_decision_ids.join(", ")}.`;
    verdict.className = "bad";
  }
  drawMatrix(report.matrix);
  const body = $("refusals").tBodies[0];
  body.replaceChildren(...report.refusals.map((r) => {
    const tr = el("tr");
    tr.appendChild(el("td", r.count));
    tr.appendChild(el("td", r.reason));
    return tr;
  }));
  $("definitions").textContent = `Subject jurisdiction: ${report.definitions.subject_jurisdiction}. ` +
    `Processing region: ${report.definitions.processing_region}.`;
}

// -- export -----------------------------------------------------------------------------------

async function exportLog(format) {
  const params = filterParams(false);
  const only = new URLSearchParams({ format });
  for (const name of ["since", "until"]) if (params.get(name)) only.set(name, params.get(name));
  try {
    say(`Preparing ${format.toUpperCase()} export…`);
    const response = await api(`/audit/export?${only}`);
    const blob = await response.blob();
    const disposition = response.headers.get("content-disposition") || "";
    const match = /filename="?([^";]+)"?/.exec(disposition);
    const link = el("a");
    link.href = URL.createObjectURL(blob);
    link.download = match ? match[1] : `routing-log.${format}`;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    say(`Export downloaded (${blob.size} bytes).`);
  } catch (error) {
    say(error.status === 404 ? "Export is not available on this gateway." : `Export failed: ${error.message}`, "error");
  }
}

// -- wiring -----------------------------------------------------------------------------------

async function refresh() {
  try {
    await Promise.all([loadDecisions(), loadReport()]);
    say("");
  } catch (error) {
    say(error.message, "error");
  }
}

function search() {
  state.cursors = [null];
  state.page = 0;
  $("detail").hidden = true;
  return refresh();
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  $("app").hidden = true;
  $("session").hidden = true;
  $("login").hidden = false;
  $("login-hint").hidden = false;
}

async function signIn(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
  try {
    await getJson("/audit/decisions?limit=1");
  } catch (error) {
    signOut();
    say(`Sign-in refused: ${error.message}`, "error");
    return;
  }
  $("login").hidden = true;
  $("login-hint").hidden = true;
  $("session").hidden = false;
  $("app").hidden = false;
  say("");
  loadChain();
  searchChanges();
  await search();
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    $("token").value = "";
    if (value) signIn(value);
  });
  $("logout").addEventListener("click", () => { signOut(); say("Signed out."); });
  $("filters").addEventListener("submit", (event) => { event.preventDefault(); search(); });
  $("filters").addEventListener("reset", () => setTimeout(search, 0));
  $("older").addEventListener("click", () => {
    state.cursors[state.page + 1] = state.next;
    state.page += 1;
    loadDecisions().catch((error) => say(error.message, "error"));
  });
  $("newer").addEventListener("click", () => {
    state.page = Math.max(0, state.page - 1);
    loadDecisions().catch((error) => say(error.message, "error"));
  });
  $("detail-close").addEventListener("click", () => { $("detail").hidden = true; });
  $("change-filters").addEventListener("submit", (event) => { event.preventDefault(); searchChanges(); });
  $("change-filters").addEventListener("reset", () => setTimeout(searchChanges, 0));
  $("changes-older").addEventListener("click", () => {
    changes.cursors[changes.page + 1] = changes.next;
    changes.page += 1;
    loadChanges().catch((error) => say(error.message, "error"));
  });
  $("changes-newer").addEventListener("click", () => {
    changes.page = Math.max(0, changes.page - 1);
    loadChanges().catch((error) => say(error.message, "error"));
  });
  $("change-close").addEventListener("click", () => { $("change-detail").hidden = true; });
  $("chain-refresh").addEventListener("click", () => { loadChain(true); searchChanges(); });
  $("export-csv").addEventListener("click", () => exportLog("csv"));
  $("export-jsonl").addEventListener("click", () => exportLog("jsonl"));
  if (token()) signIn(token());
});
