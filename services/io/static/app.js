/* IO console: tickets live over SSE, a ticket's story, approvals, the lab, and (for admins)
 * users and tokens. Plain JS, no CDN.
 *
 * Auth: a token from the sign-in form is kept in sessionStorage and sent as
 * "Authorization: Bearer". On loopback IO may trust token-less requests as the local operator,
 * in which case the form never shows. The stream is read with fetch() rather than EventSource
 * because EventSource cannot send an Authorization header.
 *
 * Everything from the API reaches the page through h() (text nodes and setAttribute), never
 * innerHTML. A token just issued lives only in state.issued until it is dismissed or the page
 * is left; it is never stored.
 */
"use strict";

const TOKEN_KEY = "cxm-io-token";
const TIERS = ["platinum", "gold", "silver", "bronze"];
const ROLES = ["viewer", "operator", "admin"];
const STATUSES = ["new", "detecting", "dampening", "assessing", "computing", "provisioning",
  "steering", "monitoring", "restoring", "waiting_approval", "escalated", "closed"];

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  me: null,
  config: {},
  tickets: new Map(),
  approvals: new Map(),
  stats: null,
  detail: null,
  topology: null,
  filters: { q: "", status: "open", severity: "", tier: "" },
  approvalFilter: "pending",
  lastEventId: null,
  streamAbort: null,
  users: [],
  issued: null,
  drafts: new Map(),
};

// --- small helpers ---------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// What an operator types or ticks survives the live re-renders (an approval arriving, one
// decided elsewhere): the value lives in state.drafts under a key, not only in the element.
function draftInput(key, attrs) {
  const el = h("input", { ...attrs, "data-draft": key });
  if (el.type === "checkbox") {
    el.checked = state.drafts.get(key) === true;
    el.addEventListener("change", () => state.drafts.set(key, el.checked));
  } else {
    el.value = state.drafts.get(key) || "";
    el.addEventListener("input", () => state.drafts.set(key, el.value));
  }
  return el;
}

function replaceKeepingFocus(container, ...children) {
  const key = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.draft : null;
  container.replaceChildren(...children);
  const again = key ? [...container.querySelectorAll("[data-draft]")].find((el) => el.dataset.draft === key) : null;
  if (again) {
    again.focus();
    if (again.type !== "checkbox") again.setSelectionRange(again.value.length, again.value.length);
  }
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) el.setAttribute(k, v);
  for (const c of children.flat()) if (c) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function age(iso) {
  if (!iso) return "";
  let s = Math.max(0, Math.floor((Date.now() - Date.parse(iso)) / 1000));
  const d = Math.floor(s / 86400); s %= 86400;
  const hh = Math.floor(s / 3600); s %= 3600;
  const m = Math.floor(s / 60); s %= 60;
  if (d) return `${d}d ${hh}h`;
  if (hh) return `${hh}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

const time = (iso) => (iso ? new Date(iso).toLocaleString() : "");
const badge = (cls, text) => h("span", { class: `badge ${cls}` }, text);
const sev = (s) => badge(`sev-${s || "unknown"}`, s || "unknown");
const st = (s) => badge(`st-${s}`, (s || "").replace("_", " "));
const linkKey = (l) => String(l).split("-").sort().join("-");

function kv(obj) {
  const entries = Object.entries(obj || {}).filter(([, v]) => v !== null && v !== undefined && v !== "");
  if (!entries.length) return null;
  return h("dl", { class: "kv" }, entries.map(([k, v]) => [
    h("dt", {}, k.replaceAll("_", " ")),
    h("dd", { class: typeof v === "object" ? "mono" : "" }, showValue(k, v)),
  ]));
}

function showValue(key, v) {
  if (Array.isArray(v) && v.every((x) => typeof x !== "object")) return v.join(key === "path" ? " → " : ", ");
  if (v && typeof v === "object" && !Array.isArray(v) && Object.values(v).every((x) => typeof x !== "object")) {
    return Object.entries(v).map(([k, x]) => `${k} ${x}`).join(" · ");
  }
  return typeof v === "object" ? JSON.stringify(v) : String(v);
}

function toast(message, bad = false) {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.className = bad ? "toast bad" : "toast";
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, bad ? 8000 : 4000);
}

// FastAPI's validation errors are a list of {loc, msg}: "field: message" reads better.
function detailText(detail) {
  if (typeof detail === "string") return detail;
  if (!Array.isArray(detail)) return JSON.stringify(detail);
  return detail.map((e) => {
    if (!e || !e.msg) return JSON.stringify(e);
    const field = (e.loc || []).filter((l) => l !== "body").join(".");
    return field && !e.msg.startsWith(field) ? `${field}: ${e.msg}` : e.msg;
  }).join("; ");
}

class ApiError extends Error {
  constructor(status, detail) { super(detailText(detail)); this.status = status; }
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    ...options, headers, body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  if (response.status === 401) { refused(); throw new ApiError(401, "sign in"); }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { detail: text }; }
  if (!response.ok) throw new ApiError(response.status, (data && data.detail) || response.statusText);
  return data;
}

// --- sign-in ---------------------------------------------------------------------------------

function showSignIn(message) {
  stopStream();
  document.getElementById("signin").hidden = false;
  document.getElementById("signin-cancel").hidden = !(state.me && state.me.via === "loopback" && !state.token);
  const err = document.getElementById("signin-error");
  err.hidden = !message;
  err.textContent = message || "";
  document.getElementById("token").focus();
}

// A refused token is forgotten (it was wrong, revoked, or its user disabled) and the form shows.
function refused() {
  const had = Boolean(state.token);
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  showSignIn(had ? "Your token was not accepted; sign in again." : null);
}

document.getElementById("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = document.getElementById("token").value.trim();
  if (!token) return;
  state.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
  document.getElementById("signin").hidden = true;
  await boot();
});

// on loopback the console opens as the local operator; an admin signs in with a token on top
document.getElementById("signin-open").addEventListener("click", () => showSignIn());
document.getElementById("signin-cancel").addEventListener("click", () => {
  document.getElementById("signin").hidden = true;
  stream();
});

document.getElementById("signout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.me = null;
  location.hash = "#/";
  location.reload();
});

// --- the live stream -------------------------------------------------------------------------

function setLive(on) {
  const el = document.getElementById("live");
  el.className = on ? "live on" : "live off";
  el.textContent = on ? "live" : "reconnecting…";
}

function stopStream() {
  if (state.streamAbort) state.streamAbort.abort();
  state.streamAbort = null;
}

async function stream() {
  stopStream();
  const controller = new AbortController();
  state.streamAbort = controller;
  let delay = 500;
  while (!controller.signal.aborted) {
    try {
      const headers = { Accept: "text/event-stream" };
      if (state.token) headers.Authorization = `Bearer ${state.token}`;
      if (state.lastEventId) headers["Last-Event-ID"] = state.lastEventId;
      const response = await fetch("/api/v1/stream", { headers, signal: controller.signal, cache: "no-store" });
      if (response.status === 401) { refused(); return; }
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const message = { event: "message", data: "", id: null };
          for (const line of block.split("\n")) {
            if (line.startsWith(":")) continue;
            const i = line.indexOf(":");
            const field = i < 0 ? line : line.slice(0, i);
            const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
            if (field === "event") message.event = val;
            else if (field === "data") message.data += (message.data ? "\n" : "") + val;
            else if (field === "id") message.id = val;
          }
          if (message.id) state.lastEventId = message.id;
          if (message.event === "hello") { setLive(true); delay = 500; }
          if (message.data) onEvent(message.event, JSON.parse(message.data));
        }
      }
    } catch (err) {
      if (controller.signal.aborted) return;
    }
    setLive(false);
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 10000);
  }
}

let statsTimer = null;
function refreshStatsSoon() {
  clearTimeout(statsTimer);
  statsTimer = setTimeout(loadStats, 300);
}

function onEvent(kind, data) {
  if (kind === "ticket") {
    const t = data.ticket;
    const known = state.tickets.has(t.incident_id);
    state.tickets.set(t.incident_id, t);
    refreshStatsSoon();
    const route = currentRoute();
    if (route.name === "tickets") renderTickets(known ? null : t.incident_id, known ? t.incident_id : null);
    if (route.name === "ticket" && route.id === t.incident_id && state.detail) {
      state.detail = { ...state.detail, ...t, events: [...state.detail.events, data.event] };
      renderTicket();
    }
  } else if (kind === "approval") {
    const a = data.approval;
    state.approvals.set(a.approval_id, a);
    updateApprovalCount();
    refreshStatsSoon();
    const route = currentRoute();
    if (route.name === "approvals") renderApprovals();
    if (route.name === "ticket" && route.id === a.incident_id && state.detail) {
      const others = (state.detail.approvals || []).filter((x) => x.approval_id !== a.approval_id);
      state.detail.approvals = [a, ...others];
      renderTicket();
    }
  }
}

// --- figures ---------------------------------------------------------------------------------

async function loadStats() {
  try { state.stats = await api("/api/v1/stats"); } catch { return; }
  renderFigures();
}

function renderFigures() {
  const s = state.stats;
  const el = document.getElementById("figures");
  if (!s) { el.replaceChildren(); return; }
  el.replaceChildren(
    h("div", { class: "figure", "data-figure": "open" }, h("div", { class: "v" }, s.open), h("div", { class: "k" }, "open incidents")),
    h("div", { class: "figure" }, h("div", { class: "v" }, s.pending_approvals), h("div", { class: "k" }, "pending approvals")),
    h("div", { class: "figure" }, h("div", { class: "v" }, duration(s.mttr_seconds)), h("div", { class: "k" }, `MTTR (${s.closed} closed)`)),
    h("div", { class: "figure" }, h("div", { class: "v" }, s.escalated), h("div", { class: "k" }, "escalated")),
    h("div", { class: "figure" },
      h("div", { class: "tiers" }, TIERS.map((t) => h("span", { class: `tier-${t}` }, h("b", {}, s.by_tier[t] || 0), ` ${t}`))),
      h("div", { class: "k" }, "incidents by tier")),
  );
}

// --- tickets list ----------------------------------------------------------------------------

function matches(t) {
  const f = state.filters;
  if (f.status === "open" && t.status === "closed") return false;
  if (f.status && f.status !== "open" && f.status !== "all" && t.status !== f.status) return false;
  if (f.severity && t.severity !== f.severity) return false;
  if (f.tier && t.highest_tier !== f.tier) return false;
  if (f.q) {
    const hay = [t.incident_id, t.summary, t.message, (t.degraded_links || []).join(" "), t.status].join(" ").toLowerCase();
    if (!hay.includes(f.q.toLowerCase())) return false;
  }
  return true;
}

function filterBar() {
  const f = state.filters;
  const select = (name, options, label) => h("select", {
    name, "aria-label": label,
    onchange: (e) => { f[name] = e.target.value; renderTickets(); },
  }, options.map(([v, t]) => h("option", { value: v, selected: f[name] === v }, t)));
  return h("div", { class: "filters" },
    h("input", {
      type: "search", placeholder: "Search id, summary, link…", value: f.q, "aria-label": "search",
      oninput: (e) => { f.q = e.target.value; renderTickets(null, null, true); },
    }),
    select("status", [["open", "Open"], ["all", "All statuses"], ...STATUSES.map((s) => [s, s.replace("_", " ")])], "status"),
    select("severity", [["", "All severities"], ...["critical", "high", "medium", "low", "info"].map((s) => [s, s])], "severity"),
    select("tier", [["", "All tiers"], ...TIERS.map((t) => [t, t])], "tier"),
  );
}

function renderTickets(added = null, changed = null, keepFocus = false) {
  if (currentRoute().name !== "tickets") return;
  const view = document.getElementById("view");
  const rows = [...state.tickets.values()].filter(matches)
    .sort((a, b) => Date.parse(b.created_at) - Date.parse(a.created_at));
  const table = rows.length ? h("table", { id: "tickets" },
    h("thead", {}, h("tr", {}, ["Incident", "Severity", "Status", "Phase", "Summary", "Links", "Services", "Age"].map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.map((t) => h("tr", {
      class: `ticket${t.incident_id === added || t.incident_id === changed ? " flash" : ""}`,
      "data-incident": t.incident_id,
      onclick: () => { location.hash = `#/ticket/${encodeURIComponent(t.incident_id)}`; },
    },
      h("td", {}, h("a", { href: `#/ticket/${encodeURIComponent(t.incident_id)}` }, t.incident_id)),
      h("td", {}, sev(t.severity)),
      h("td", { class: "status" }, st(t.status)),
      h("td", {}, t.phase || "—"),
      h("td", {}, t.message && t.message !== t.summary ? [t.summary, h("div", { class: "muted" }, t.message)] : t.summary),
      h("td", { class: "mono" }, (t.degraded_links || []).join(", ")),
      h("td", {}, t.affected_services_count ?? "—", t.highest_tier ? h("span", { class: `tier-${t.highest_tier}` }, ` (${t.highest_tier})`) : null),
      h("td", { class: "age", "data-since": t.created_at, title: time(t.created_at) }, age(t.created_at)),
    )))) : h("div", { class: "empty" }, state.tickets.size ? "No ticket matches these filters." : "No tickets yet. They appear here the moment the correlator opens one.");
  const existing = document.getElementById("tickets-card");
  if (existing && keepFocus) {
    existing.replaceChild(table, existing.lastChild);
    return;
  }
  view.replaceChildren(h("div", { class: "card", id: "tickets-card" }, filterBar(), table));
}

// --- one ticket ------------------------------------------------------------------------------

function lastDetails(events, test) {
  for (let i = events.length - 1; i >= 0; i--) {
    const e = events[i];
    if (test(e)) return e.payload.details || {};
  }
  return null;
}

function drawTopology(ticket) {
  const box = h("div", { id: "topology" });
  const topo = state.topology;
  if (!topo) { box.append(h("div", { class: "muted" }, "Loading topology…")); return box; }
  if (!topo.available) {
    box.append(h("div", { class: "notice", id: "topology-unavailable" }, "Topology unavailable: ", topo.error || "CNC did not answer", ". The ticket's links are listed above."));
    return box;
  }
  const events = ticket.events || [];
  const degraded = new Set((ticket.degraded_links || []).map(linkKey));
  // the tunnel's newest path: provisioning, or a re-route; later updates that only name it
  // (steering, cutover) do not move it
  const tunnel = lastDetails(events, (e) => e.task_type === "status_update" && (e.payload.details || {}).tunnel_id && Array.isArray((e.payload.details || {}).path));
  const computed = lastDetails(events, (e) => e.task_type === "status_update" && e.payload.phase === "3");
  const pathEdges = (nodes) => {
    const out = new Set();
    for (let i = 0; nodes && i < nodes.length - 1; i++) out.add(linkKey(`${nodes[i]}-${nodes[i + 1]}`));
    return out;
  };
  const protection = pathEdges(tunnel && tunnel.path);
  const computedEdges = pathEdges(computed && computed.path);
  if (computed && Array.isArray(computed.links)) computed.links.forEach((l) => computedEdges.add(linkKey(l)));
  const ends = new Set([(tunnel || {}).head_end, (tunnel || {}).end_point, (computed || {}).head_end, (computed || {}).end_point,
    ...((tunnel && tunnel.path) || []).slice(0, 1), ...((tunnel && tunnel.path) || []).slice(-1)].filter(Boolean));
  const pos = new Map(topo.nodes.map((n) => [n.id, n]));
  const lines = topo.links.map((l) => {
    const a = pos.get(l.source), b = pos.get(l.destination);
    if (!a || !b) return null;
    const key = linkKey(`${l.source}-${l.destination}`);
    const cls = ["link"];
    if (l.oper_status && l.oper_status !== "up") cls.push("down");
    if (computedEdges.has(key) && !protection.size) cls.push("computed");
    if (protection.has(key)) cls.push("protection");
    if (degraded.has(key) || degraded.has(linkKey(l.id))) cls.push("degraded");
    return svg("line", { class: cls.join(" "), x1: a.x, y1: a.y, x2: b.x, y2: b.y, "data-link": l.id },
      svg("title", {}, `${l.id}${cls.includes("degraded") ? " (degraded)" : ""}${cls.includes("protection") ? " (protection tunnel)" : ""} · ${l.delay_ms} ms`));
  });
  const nodes = topo.nodes.map((n) => svg("g", { class: `node${ends.has(n.id) ? " endpoint" : ""}`, "data-node": n.id },
    svg("circle", { cx: n.x, cy: n.y, r: 18 }),
    svg("text", { x: n.x, y: n.y - 26 }, n.id)));
  box.append(svg("svg", { viewBox: `0 0 ${topo.width} ${topo.height}`, role: "img", "aria-label": "network topology" }, lines, nodes));
  box.append(h("div", { class: "legend" },
    h("span", {}, h("i", { style: "background:#ff6b6b" }), "degraded link (original path)"),
    protection.size ? h("span", {}, h("i", { style: "background:#46c28e" }), `protection tunnel ${(tunnel && tunnel.tunnel_id) || ""}`) : null,
    !protection.size && computedEdges.size ? h("span", {}, h("i", { style: "background:#4fb3ff" }), "computed alternate path") : null,
    topo.stale ? h("span", { class: "error" }, `stale: ${topo.error}`) : null,
  ));
  return box;
}

function tierBars(ticket) {
  const impact = lastDetails(ticket.events || [], (e) => e.task_type === "status_update" && (e.payload.details || {}).services_by_tier);
  const byTier = ticket.services_by_tier || (impact && impact.services_by_tier);
  if (!byTier) return h("div", { class: "muted" }, "Impact not assessed yet.");
  const max = Math.max(1, ...TIERS.map((t) => byTier[t] || 0));
  const services = (impact && (impact.affected_services || impact.services)) || [];
  return h("div", {},
    h("div", { class: "bars", id: "tiers" }, TIERS.map((t) => h("div", { class: "bar" },
      h("span", { class: `tier-${t}` }, t),
      h("div", {}, h("div", { class: "fill", style: `width:${((byTier[t] || 0) / max) * 100}%` })),
      h("b", {}, byTier[t] || 0)))),
    Array.isArray(services) && services.length ? h("details", {}, h("summary", {}, `${services.length} services`),
      h("table", {}, h("tbody", {}, services.map((s) => typeof s === "object"
        ? h("tr", {}, h("td", {}, s.name || s.service_id), h("td", { class: `tier-${s.tier}` }, s.tier || ""), h("td", { class: "mono" }, `${s.head_end || ""} → ${s.end_point || ""}`))
        : h("tr", {}, h("td", {}, String(s))))))) : null,
  );
}

function whyPanel(ticket) {
  const events = ticket.events || [];
  const sections = [];
  const add = (title, items) => { if (items.length) sections.push(h("h4", {}, title), ...items); };
  const item = (e, extra) => h("div", {}, h("div", {}, e.payload.message || e.payload.summary || ""), kv(extra));
  const created = events.find((e) => e.task_type === "new_ticket");
  if (created) {
    const p = created.payload;
    const triage = p.triage || (p.details || {}).triage || null;
    add("Triage", [h("div", {}, `Opened by ${p.source_agent || "correlator"}: ${p.summary}`),
      kv(typeof triage === "object" && triage ? triage : { triage: triage || "not reported", degraded_links: p.degraded_links })]);
  }
  const su = (test) => events.filter((e) => e.task_type === "status_update" && test(e.payload));
  add("Impact", su((p) => p.phase === "2").map((e) => item(e, e.payload.details)));
  add("Path chosen", su((p) => p.phase === "3" || p.status === "computing").map((e) => item(e, e.payload.details)));
  const rerouted = (p) => Boolean((p.details || {}).reroute || (p.details || {}).tunnel_degraded);
  add("Protection tunnel", su((p) => p.phase === "4" || p.status === "provisioning" || p.status === "steering").map((e) => item(e, e.payload.details)));
  add("Re-routes", su(rerouted).map((e) => item(e, e.payload.details)));
  add("Recovery checks", su((p) => !rerouted(p) && (["monitoring", "restoring", "dampening"].includes(p.status) || ["6", "7"].includes(p.phase))).map((e) => item(e, e.payload.details)));
  add("Escalation", su((p) => p.status === "escalated").map((e) => item(e, e.payload.details)));
  add("Approvals", (ticket.approvals || []).map((a) => h("div", {}, `${a.action}: `, st(a.status),
    a.decided_by ? ` by ${a.decided_by}` : "", a.notes ? ` — “${a.notes}”` : "")));
  add("Errors", events.filter((e) => e.task_type === "error").map((e) => h("div", { class: "error" }, `${e.payload.error_code}: ${e.payload.message}`)));
  const closed = events.filter((e) => e.task_type === "ticket_closed");
  add("Closure", closed.map((e) => item(e, { resolution: e.payload.resolution, duration: duration(e.payload.duration_seconds), ...(e.payload.details || {}) })));
  return h("div", { class: "why" }, sections.length ? sections : h("div", { class: "muted" }, "No decision yet."));
}

function timeline(ticket) {
  const events = ticket.events || [];
  return h("ol", { class: "timeline", id: "timeline" }, events.map((e) => {
    const p = e.payload || {};
    const title = e.task_type === "status_update" ? [st(p.status), p.phase ? ` phase ${p.phase}` : "", ` — ${p.message}`]
      : e.task_type === "new_ticket" ? ["new ticket — ", p.summary]
      : e.task_type === "ticket_closed" ? [st("closed"), ` ${p.resolution} — ${p.summary}`]
      : e.task_type === "error" ? [badge("sev-critical", "error"), ` ${p.error_code}: ${p.message}`]
      : e.task_type === "approval_required" ? [st("waiting_approval"), ` approval needed: ${p.action}`]
      : e.task_type === "tunnel_removed" ? [`tunnel ${p.tunnel_id} removed by `, h("b", {}, p.removed_by), p.notes ? ` — “${p.notes}”` : ""]
      : [e.task_type];
    const { incident_id, ...rest } = p;
    return h("li", { class: `t-${e.task_type}`, "data-task": e.task_type },
      h("div", { class: "when" }, time(e.received_at), " · ", e.task_type, p.source_agent ? ` from ${p.source_agent}` : ""),
      h("div", {}, title),
      h("details", {}, h("summary", {}, "details"), kv(rest)));
  }));
}

async function loadAudit(incidentId) {
  const box = document.getElementById("audit");
  if (!box) return;
  try {
    const audit = await api(`/api/v1/tickets/${encodeURIComponent(incidentId)}/audit`);
    if (!audit.available) { box.replaceChildren(h("div", { class: "muted" }, `Audit trail unavailable: ${audit.error}`)); return; }
    if (!audit.events.length) { box.replaceChildren(h("div", { class: "muted" }, "No audit events recorded yet.")); return; }
    box.replaceChildren(h("table", {}, h("thead", {}, h("tr", {}, ["When", "Event", "Agent", "Details"].map((c) => h("th", {}, c)))),
      h("tbody", {}, audit.events.map((ev) => h("tr", {},
        h("td", {}, time(ev.occurred_at || ev.recorded_at || ev.created_at)),
        h("td", {}, ev.event_type || ev.type || ""),
        h("td", {}, ev.source_agent || ""),
        h("td", {}, kv(ev.details || {})))))));
  } catch (err) {
    box.replaceChildren(h("div", { class: "muted" }, `Audit trail unavailable: ${err.message}`));
  }
}

async function showTicket(id) {
  const view = document.getElementById("view");
  view.replaceChildren(h("div", { class: "muted" }, "Loading…"));
  try {
    state.detail = await api(`/api/v1/tickets/${encodeURIComponent(id)}`);
  } catch (err) {
    view.replaceChildren(h("div", { class: "card error" }, err.status === 404 ? `No ticket ${id}.` : err.message));
    return;
  }
  renderTicket();
  loadAudit(id);
  if (!state.topology || !state.topology.available) {
    try { state.topology = await api("/api/v1/topology"); } catch (err) { state.topology = { available: false, error: err.message }; }
    if (currentRoute().name === "ticket") renderTicket();
  }
}

// The tunnel an escalation left carrying the protected traffic, unless removed since.
function leftUpTunnel(t) {
  let id = null;
  for (const e of t.events || []) {
    const d = (e.payload || {}).details || {};
    if (e.task_type === "ticket_closed" && String(d.tunnel || "").startsWith("left up")) id = d.tunnel_id || null;
    else if (e.task_type === "tunnel_removed") id = null;
  }
  return id;
}

function removeTunnelBox(t, tunnelId) {
  const box = h("div", { class: "notice", id: "tunnel-left-up" },
    `Tunnel ${tunnelId} was left up carrying the protected services when this incident escalated. `);
  if (!canDecide()) {
    box.append(h("span", { class: "muted" }, "An operator can remove it here."));
    return box;
  }
  const notes = draftInput(`remove-notes:${t.incident_id}`, { name: "remove-notes", placeholder: "Notes (why)", "aria-label": "removal notes" });
  const go = h("button", {
    class: "reject", id: "remove-tunnel",
    onclick: async () => {
      if (go.dataset.armed !== "1") { // one more click: it moves customer traffic
        go.dataset.armed = "1";
        go.textContent = `Confirm: move the traffic back and delete ${tunnelId}`;
        return;
      }
      go.disabled = true;
      try {
        await api(`/api/v1/tickets/${encodeURIComponent(t.incident_id)}/tunnel/remove`, { method: "POST", body: { notes: notes.value } });
        state.drafts.delete(`remove-notes:${t.incident_id}`);
        toast(`Tunnel ${tunnelId} removed`);
      } catch (err) {
        toast(err.message, true);
        go.disabled = false;
      }
    },
  }, "Remove tunnel");
  box.append(notes, " ", go);
  return box;
}

function renderTicket() {
  const t = state.detail;
  if (!t || currentRoute().name !== "ticket") return;
  const auditBox = document.getElementById("audit");
  const pending = (t.approvals || []).filter((a) => a.status === "pending");
  replaceKeepingFocus(document.getElementById("view"),
    h("div", { class: "card" },
      h("div", { class: "ticket-head" },
        h("a", { href: "#/" }, "← Tickets"),
        h("h1", {}, t.incident_id), sev(t.severity), h("span", { class: "ticket-status", "data-status": t.status }, st(t.status)),
        t.phase ? h("span", { class: "muted" }, `phase ${t.phase}`) : null,
        h("span", { class: "muted", title: time(t.created_at) }, `opened ${age(t.created_at)} ago`),
        t.closed_at ? h("span", { class: "muted" }, `closed ${time(t.closed_at)}`) : null),
      h("p", {}, t.summary),
      t.message && t.message !== t.summary ? h("p", { class: "muted" }, t.message) : null,
      h("div", { class: "row" }, h("span", { class: "muted" }, "Degraded links:"), h("span", { class: "mono" }, (t.degraded_links || []).join(", ") || "—"),
        h("span", { class: "muted" }, "Affected services:"), h("b", {}, t.affected_services_count ?? "—")),
      pending.length ? h("p", {}, h("a", { href: "#/approvals" }, `${pending.length} approval(s) waiting`), " — ", pending.map((a) => a.action).join(", ")) : null,
      leftUpTunnel(t) ? removeTunnelBox(t, leftUpTunnel(t)) : null),
    h("div", { class: "grid" },
      h("div", {},
        h("div", { class: "card" }, h("h3", {}, "Topology"), drawTopology(t)),
        h("div", { class: "card" }, h("h3", {}, "Timeline"), timeline(t))),
      h("div", {},
        h("div", { class: "card" }, h("h3", {}, "Services affected by tier"), tierBars(t)),
        h("div", { class: "card" }, h("h3", {}, "Why: the decisions taken"), whyPanel(t)),
        h("div", { class: "card" }, h("h3", {}, "Audit trail"), auditBox || h("div", { id: "audit" }, h("div", { class: "muted" }, "Loading…"))))),
  );
}

// --- approvals -------------------------------------------------------------------------------

function updateApprovalCount() {
  const n = [...state.approvals.values()].filter((a) => a.status === "pending").length;
  const el = document.getElementById("approval-count");
  el.textContent = n;
  el.hidden = n === 0;
}

async function loadApprovals() {
  try {
    const list = await api(`/api/v1/approvals?status=${state.approvalFilter === "pending" ? "pending" : "all"}`);
    if (state.approvalFilter === "pending") {
      for (const [id, a] of state.approvals) if (a.status === "pending") state.approvals.delete(id);
    }
    for (const a of list) state.approvals.set(a.approval_id, a);
  } catch { /* shown as empty */ }
  updateApprovalCount();
}

const canDecide = () => state.me && (state.me.role === "operator" || state.me.role === "admin");

async function decide(a, decision, notes, card) {
  card.querySelectorAll("button").forEach((b) => { b.disabled = true; });
  try {
    const row = await api(`/api/v1/approvals/${encodeURIComponent(a.approval_id)}/${decision}`, { method: "POST", body: { notes } });
    state.approvals.set(row.approval_id, row);
    for (const what of ["notes", "delegate", "pick"]) state.drafts.delete(`${what}:${a.approval_id}`);
    toast(`${decision === "approve" ? "Approved" : "Rejected"}: ${a.action} (${a.incident_id})`);
  } catch (err) {
    toast(err.status === 409 ? `Not pending any more: ${err.message}` : err.status === 503 ? `Still pending — ${err.message}` : err.message, true);
    if (err.status === 409) await loadApprovals();
  }
  renderApprovals();
}

function approvalCard(a) {
  const pending = a.status === "pending";
  const card = h("div", { class: `card approval${pending ? "" : " decided"}`, "data-approval": a.approval_id });
  const notes = draftInput(`notes:${a.approval_id}`, { name: "notes", placeholder: "Notes (why)", "aria-label": "notes" });
  const delegateTo = draftInput(`delegate:${a.approval_id}`, { name: "delegate", placeholder: "username", size: 12, "aria-label": "delegate to" });
  const expires = Date.parse(a.expires_at) - Date.now();
  const ticket = state.tickets.get(a.incident_id);
  const parts = [
    h("div", { class: "row" },
      pending && canDecide() ? draftInput(`pick:${a.approval_id}`, { type: "checkbox", class: "pick", "aria-label": "select", value: a.approval_id }) : null,
      h("b", {}, a.action), st(a.status),
      h("a", { href: `#/ticket/${encodeURIComponent(a.incident_id)}` }, a.incident_id),
      h("span", { class: "muted" }, `requested ${age(a.requested_at)} ago by ${a.source_agent || "orchestrator"}`),
      pending ? h("span", { class: expires < 60000 ? "error" : "muted" }, expires > 0 ? `expires in ${duration(expires / 1000)}` : "expiring") : null,
      a.delegated_to ? h("span", {}, `delegated to `, h("b", {}, a.delegated_to), ` by ${a.delegated_by}`) : null),
    ticket ? h("p", { class: "context" }, sev(ticket.severity), " ", st(ticket.status), " ", ticket.summary,
      h("span", { class: "muted mono" }, ` · ${(ticket.degraded_links || []).join(", ")}`),
      ticket.affected_services_count ? h("span", { class: "muted" }, ` · ${ticket.affected_services_count} services`) : null,
      ticket.highest_tier ? h("span", { class: `tier-${ticket.highest_tier}` }, ` (${ticket.highest_tier})`) : null) : null,
    kv(a.details),
    !pending ? h("p", { class: "decision" },
      a.decided_by ? [`${a.status} by `, h("b", { class: "decided-by" }, a.decided_by)] : a.status,
      a.decided_at ? ` at ${time(a.decided_at)}` : "", a.notes ? ` — “${a.notes}”` : "",
      a.outcome && !a.decided_by ? h("span", { class: "muted" }, ` (${a.outcome})`) : null) : null,
    pending && canDecide() ? h("div", { class: "actions" },
      notes,
      h("button", { class: "approve", onclick: () => decide(a, "approve", notes.value, card) }, "Approve"),
      h("button", { class: "reject", onclick: () => decide(a, "reject", notes.value, card) }, "Reject"),
      h("span", { class: "muted" }, "or delegate to"), delegateTo,
      h("button", {
        onclick: async () => {
          try {
            const row = await api(`/api/v1/approvals/${encodeURIComponent(a.approval_id)}/delegate`, { method: "POST", body: { to: delegateTo.value.trim() } });
            state.approvals.set(row.approval_id, row);
            state.drafts.delete(`delegate:${a.approval_id}`);
            toast(`Delegated to ${row.delegated_to}`);
            renderApprovals();
          } catch (err) { toast(err.message, true); }
        },
      }, "Delegate")) : null,
    pending && !canDecide() ? h("p", { class: "muted" }, "Your role (viewer) can see approvals but not decide them.") : null,
  ];
  card.append(...parts.filter(Boolean));
  return card;
}

function renderApprovals() {
  if (currentRoute().name !== "approvals") return;
  updateApprovalCount();
  const list = [...state.approvals.values()]
    .filter((a) => state.approvalFilter === "all" || a.status === "pending")
    .sort((a, b) => Date.parse(b.requested_at) - Date.parse(a.requested_at));
  const batchNotes = draftInput("batch-notes", { placeholder: "Notes for the batch", "aria-label": "batch notes" });
  const tabs = h("div", { class: "row" },
    ["pending", "all"].map((f) => h("button", {
      class: state.approvalFilter === f ? "primary" : "",
      onclick: async () => { state.approvalFilter = f; await loadApprovals(); renderApprovals(); },
    }, f === "pending" ? "Pending" : "All")),
    canDecide() && state.approvalFilter === "pending" && list.length ? [
      h("span", { class: "muted" }, " | "), batchNotes,
      h("button", {
        class: "approve", id: "batch-approve",
        onclick: async () => {
          const ids = [...document.querySelectorAll("input.pick:checked")].map((c) => c.value);
          if (!ids.length) { toast("Tick the approvals to approve together.", true); return; }
          try {
            const out = await api("/api/v1/approvals/batch", { method: "POST", body: { ids, notes: batchNotes.value } });
            for (const id of ids) state.drafts.delete(`pick:${id}`);
            state.drafts.delete("batch-notes");
            toast(`Batch: ${out.decided} approved, ${out.failed} failed`, out.failed > 0);
          } catch (err) { toast(err.message, true); }
          await loadApprovals();
          renderApprovals();
        },
      }, "Approve selected")] : null);
  replaceKeepingFocus(document.getElementById("view"),
    h("div", { class: "card" }, h("h2", {}, "Approvals"), tabs),
    list.length ? h("div", { id: "approvals" }, list.map(approvalCard))
      : h("div", { class: "empty" }, state.approvalFilter === "pending" ? "Nothing waits for a decision." : "No approvals yet."),
  );
}

// --- lab -------------------------------------------------------------------------------------

async function renderLab() {
  const view = document.getElementById("view");
  if (!state.config.lab_enabled) { view.replaceChildren(h("div", { class: "card" }, "The lab is disabled on this deployment.")); return; }
  const log = h("div", { class: "lab-log mono", id: "lab-log" });
  const say = (text, bad) => log.prepend(h("div", { class: bad ? "error" : "" }, `${new Date().toLocaleTimeString()} ${text}`));
  const links = h("select", { "aria-label": "link" });
  const num = (name, value, label) => h("label", {}, `${label} `, h("input", { name, type: "number", value, min: 0, step: "any", style: "width:80px" }));
  const form = h("div", { class: "row" }, num("delay_ms", 80, "delay ms"), num("loss_pct", 2, "loss %"), num("jitter_ms", 10, "jitter ms"), num("duration_s", 0, "duration s (0 = until recovered)"));
  const call = async (path, body, what) => {
    if (!canDecide()) { say("operators only", true); return; }
    try {
      const out = await api(path, { method: "POST", body });
      say(`${what}: ${JSON.stringify(out)}`);
    } catch (err) { say(`${what}: ${err.message}`, true); }
  };
  const linkAction = (action) => {
    const body = {};
    if (action === "degrade") form.querySelectorAll("input").forEach((i) => { if (i.value !== "" && Number(i.value) > 0) body[i.name] = Number(i.value); });
    return call(`/api/v1/lab/links/${encodeURIComponent(links.value)}/${action}`, body, `${action} ${links.value}`);
  };
  const scenario = h("input", { value: "sla-degradation", "aria-label": "scenario" });
  view.replaceChildren(
    h("div", { class: "card" }, h("h2", {}, "Network lab"),
      h("p", { class: "muted" }, "Drive the built-in lab: its PCA alerts reach the correlator and open tickets like real ones."),
      h("div", { class: "row" }, h("b", {}, "Link"), links,
        h("button", { onclick: () => linkAction("degrade") }, "Degrade"),
        h("button", { onclick: () => linkAction("recover") }, "Recover"),
        h("button", { onclick: () => linkAction("flap") }, "Flap")),
      h("div", { style: "margin-top:10px" }, form)),
    h("div", { class: "card" }, h("h3", {}, "Scenario"),
      h("div", { class: "row" }, scenario, h("button", { class: "primary", onclick: () => call(`/api/v1/lab/scenarios/${encodeURIComponent(scenario.value)}`, {}, `scenario ${scenario.value}`) }, "Run"))),
    h("div", { class: "card" }, h("h3", {}, "Log"), log),
  );
  try {
    const topo = await api("/api/v1/lab/topology");
    const list = (topo.links || (topo.topology && topo.topology.links) || []).map((l) => l.id || l["link-id"] || l.link_id || `${l.source}-${l.destination}`);
    links.replaceChildren(...list.map((id) => h("option", { value: id }, id)));
    if (!list.length) say("the lab listed no links");
  } catch (err) {
    say(`lab topology: ${err.message}`, true);
    try {
      const t = state.topology || await api("/api/v1/topology");
      links.replaceChildren(...(t.links || []).map((l) => h("option", { value: l.id }, l.id)));
    } catch { /* nothing to list */ }
  }
}

// --- users and tokens (admins) ---------------------------------------------------------------

const isAdmin = () => Boolean(state.me && state.me.role === "admin");

// A button that asks before it acts: "Revoke" → "Revoke token #3 of alice? [Yes, revoke] [Cancel]".
function confirmButton(label, question, action, cls = "") {
  const box = h("span", { class: "confirm" });
  function reset() { box.replaceChildren(h("button", { class: cls, onclick: ask }, label)); }
  function ask() {
    box.replaceChildren(h("span", { class: "muted" }, question, " "),
      h("button", { class: "reject confirm-yes", onclick: (e) => { e.target.disabled = true; action(); } }, `Yes, ${label.toLowerCase()}`),
      h("button", { class: "confirm-no", onclick: reset }, "Cancel"));
  }
  reset();
  return box;
}

let usersAsked = 0;
async function refreshUsers() {
  const asked = ++usersAsked;
  let users;
  try { users = await api("/api/v1/users"); } catch (err) {
    const card = document.getElementById("users-card");
    if (card) card.replaceChildren(h("div", { class: "error" }, `Users unavailable: ${err.message}`));
    return;
  }
  if (asked !== usersAsked) return;  // a later answer is on its way; an older one must not win
  state.users = users;
  renderUserTable();
}

// Send one change, say how it went, and show the list as it now is.
async function userAction(request, done) {
  try { done(await request()); } catch (err) { toast(err.message, true); }
  await refreshUsers();
}

function showIssued(out) {
  state.issued = { username: out.username, id: out.id, label: out.label, token: out.token };
  renderIssued();
}

function renderIssued() {
  const box = document.getElementById("issued");
  if (!box) return;
  const it = state.issued;
  if (!it) { box.replaceChildren(); return; }
  const field = h("input", { id: "issued-token", class: "mono", readonly: true, value: it.token, "aria-label": "the new token", onfocus: (e) => e.target.select() });
  const copy = async () => {
    field.select();
    try { await navigator.clipboard.writeText(it.token); toast("Token copied to the clipboard."); } catch {
      const ok = document.execCommand("copy");  // plain http off loopback has no clipboard API
      toast(ok ? "Token copied." : "Select the token and copy it (Ctrl+C).", !ok);
    }
  };
  box.replaceChildren(h("div", { class: "card secret", role: "status" },
    h("h3", {}, `New token #${it.id} for `, h("b", {}, it.username), it.label ? ` (${it.label})` : ""),
    h("div", { class: "row" }, field, h("button", { class: "primary", id: "copy-token", onclick: copy }, "Copy")),
    h("p", { class: "warn" }, h("b", {}, "This token will not be shown again."),
      ` Copy it now and hand it to ${it.username} over a safe channel; IO keeps only its SHA-256.`,
      " If it is lost, issue another and revoke this one."),
    h("button", { id: "issued-done", onclick: () => { state.issued = null; renderIssued(); } }, "Done, I have copied it")));
}

function createUserForm() {
  const error = h("p", { class: "error", id: "new-user-error", role: "alert", hidden: true });
  const submit = h("button", { type: "submit", class: "primary" }, "Create user");
  const form = h("form", { class: "card", id: "new-user" },
    h("h3", {}, "Create a user"),
    h("div", { class: "row" },
      h("input", { name: "username", placeholder: "username", "aria-label": "username", maxlength: 64, required: true, autocomplete: "off" }),
      h("select", { name: "role", "aria-label": "role" }, ROLES.map((r) => h("option", { value: r, selected: r === "operator" }, r))),
      h("input", { name: "label", placeholder: "token label (optional)", "aria-label": "token label", maxlength: 100 }),
      submit),
    error,
    h("p", { class: "hint" }, "The user's first token is issued with it and shown once, above."));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const body = { username: String(data.get("username")).trim(), role: data.get("role"), token_label: String(data.get("label")).trim() };
    error.hidden = true;
    submit.disabled = true;
    try {
      const out = await api("/api/v1/users", { method: "POST", body });
      form.reset();
      showIssued(out);
      toast(`Created ${out.username} (${out.role})`);
      await refreshUsers();
    } catch (err) {
      error.textContent = err.message;  // shown next to the form: "user 'alice' already exists"
      error.hidden = false;
    } finally { submit.disabled = false; }
  });
  return form;
}

function tokenList(u) {
  if (!u.tokens.length) return h("span", { class: "muted" }, "no token");
  return h("table", { class: "tokens" }, h("tbody", {}, u.tokens.map((t) => h("tr", { class: t.revoked ? "revoked" : "", "data-token": t.id },
    h("td", { class: "mono" }, `#${t.id}`),
    h("td", {}, t.label || h("span", { class: "muted" }, "no label"), h("div", { class: "muted mono" }, t.hint)),
    h("td", { class: "muted" },
      h("div", { title: time(t.created_at) }, `issued ${age(t.created_at)} ago`, t.created_by ? ` by ${t.created_by}` : ""),
      h("div", { title: time(t.last_used_at) }, t.last_used_at ? `last used ${age(t.last_used_at)} ago` : "never used")),
    h("td", { class: "token-state" }, t.revoked
      ? [badge("st-revoked", "revoked"), h("div", { class: "muted", title: time(t.revoked_at) }, `${age(t.revoked_at)} ago`, t.revoked_by ? ` by ${t.revoked_by}` : "")]
      : [badge("st-active", "active"), " ", confirmButton("Revoke", `Revoke token #${t.id} of ${u.username}? It stops working at once.`, () => userAction(
        () => api(`/api/v1/tokens/${encodeURIComponent(t.id)}`, { method: "DELETE" }),
        () => {
          toast(`Revoked token #${t.id} of ${u.username}`);
          if (state.issued && state.issued.id === t.id) { state.issued = null; renderIssued(); }
        }))])))));
}

function userRow(u) {
  const self = u.username === state.me.username;
  const path = `/api/v1/users/${encodeURIComponent(u.username)}`;
  const change = (body, said) => userAction(() => api(path, { method: "PATCH", body }), () => toast(said));
  const label = h("input", { name: "label", placeholder: "label, e.g. laptop", "aria-label": `label for a new token of ${u.username}`, maxlength: 100, size: 16 });
  return h("tr", { class: `user${u.disabled ? " disabled" : ""}`, "data-user": u.username },
    h("td", {}, h("b", { class: "username" }, u.username), self ? h("span", { class: "muted" }, " (you)") : null,
      u.disabled ? h("div", {}, badge("st-disabled", "disabled")) : null),
    h("td", {}, h("select", {
      name: "role", "aria-label": `role of ${u.username}`, disabled: self, title: self ? "another admin can change your role" : null,
      onchange: (e) => change({ role: e.target.value }, `${u.username} is now ${e.target.value}`),
    }, ROLES.map((r) => h("option", { value: r, selected: r === u.role }, r)))),
    h("td", { title: time(u.created_at) }, `${age(u.created_at)} ago`, u.created_by ? h("div", { class: "muted" }, `by ${u.created_by}`) : null),
    h("td", {}, tokenList(u)),
    h("td", {},
      h("div", { class: "row" }, label, h("button", {
        class: "issue",
        onclick: () => userAction(() => api(`${path}/tokens`, { method: "POST", body: { label: label.value.trim() } }), showIssued),
      }, "Issue token")),
      self ? null : h("div", { class: "row", style: "margin-top:6px" }, u.disabled
        ? h("button", { onclick: () => change({ disabled: false }, `${u.username} enabled`) }, "Enable")
        : confirmButton("Disable", `Disable ${u.username}? All their tokens stop working.`, () => change({ disabled: true }, `${u.username} disabled`)))));
}

function renderUserTable() {
  const card = document.getElementById("users-card");
  if (!card || currentRoute().name !== "users") return;
  card.replaceChildren(h("h3", {}, `Users (${state.users.length})`),
    h("table", { id: "users" },
      h("thead", {}, h("tr", {}, ["User", "Role", "Created", "Tokens", "Actions"].map((c) => h("th", {}, c)))),
      h("tbody", {}, state.users.map(userRow))));
}

async function renderUsers() {
  const view = document.getElementById("view");
  if (!isAdmin()) {
    view.replaceChildren(h("div", { class: "card" }, h("h2", {}, "Users"),
      h("p", {}, "Only an admin manages users and tokens."),
      h("p", { class: "hint" }, "Sign in with an admin token: the first one is in ", h("code", {}, "var/io-admin-token"), " on the machine running CXM.")));
    return;
  }
  view.replaceChildren(
    h("div", { class: "card" }, h("h2", {}, "Users and tokens"),
      h("p", { class: "muted" }, "Everyone signs in with an API token. Create the user with a role — ",
        h("b", {}, "viewer"), " reads, ", h("b", {}, "operator"), " also decides approvals and drives the lab, ",
        h("b", {}, "admin"), " also manages this page — then copy the token shown once and hand it over; they paste it into the sign-in form",
        " or send it as ", h("code", {}, "Authorization: Bearer"), ". Revoke a token to cut it off at once; disable a user to stop all their tokens.")),
    h("div", { id: "issued" }),
    createUserForm(),
    h("div", { class: "card", id: "users-card" }, h("div", { class: "muted" }, "Loading…")));
  renderIssued();
  await refreshUsers();
}

// --- routing and boot ------------------------------------------------------------------------

function currentRoute() {
  const hash = location.hash || "#/";
  const m = hash.match(/^#\/ticket\/(.+)$/);
  if (m) return { name: "ticket", id: decodeURIComponent(m[1]) };
  if (hash.startsWith("#/approvals")) return { name: "approvals" };
  if (hash.startsWith("#/lab")) return { name: "lab" };
  if (hash.startsWith("#/users")) return { name: "users" };
  return { name: "tickets" };
}

async function route() {
  const r = currentRoute();
  document.querySelectorAll("#nav a[data-nav]").forEach((a) => {
    a.classList.toggle("active", a.dataset.nav === (r.name === "ticket" ? "tickets" : r.name));
  });
  if (r.name !== "ticket") state.detail = null;
  if (r.name !== "users") state.issued = null;  // a new token is shown once, on this visit only
  if (r.name === "tickets") renderTickets();
  else if (r.name === "ticket") await showTicket(r.id);
  else if (r.name === "approvals") { renderApprovals(); await loadApprovals(); renderApprovals(); }
  else if (r.name === "lab") await renderLab();
  else if (r.name === "users") await renderUsers();
}

async function boot() {
  try {
    state.config = await (await fetch("/api/v1/console/config")).json();
  } catch { state.config = {}; }
  document.getElementById("nav-lab").hidden = !state.config.lab_enabled;
  if (state.config.loopback_trust === false) {
    document.getElementById("signin-loopback").replaceChildren(h("b", {}, "No token on the machine itself:"),
      " not here — this IO runs with CXM_IO_LOOPBACK_TRUST=false, so every browser signs in with a token.");
  }
  try {
    state.me = await api("/api/v1/auth/me");
  } catch (err) {
    if (err.status !== 401) showSignIn(`IO did not answer: ${err.message}`);
    return;
  }
  document.getElementById("signin").hidden = true;
  document.getElementById("whoami").textContent = `${state.me.username} · ${state.me.role}${state.me.via === "loopback" ? " (loopback)" : ""}`;
  document.getElementById("signout").hidden = !state.token;
  document.getElementById("signin-open").hidden = state.me.via !== "loopback";
  document.getElementById("nav-users").hidden = !isAdmin();
  stream();
  const [tickets] = await Promise.all([api("/api/v1/tickets?limit=1000"), loadApprovals(), loadStats()]);
  for (const t of tickets) {
    const seen = state.tickets.get(t.incident_id);  // the stream may already have newer news
    if (!seen || seen.updated_at <= t.updated_at) state.tickets.set(t.incident_id, t);
  }
  await route();
}

window.addEventListener("hashchange", route);
setInterval(() => {
  document.querySelectorAll("td.age[data-since]").forEach((td) => { td.textContent = age(td.dataset.since); });
}, 5000);
boot();
