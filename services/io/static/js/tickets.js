// The ticket list and the figures above it.

import { api } from "./api.js";
import { age, duration, h, sev, st, time } from "./dom.js";
import { proactiveBadge } from "./load_chart.js";
import { currentRoute, state, STATUSES, TIERS } from "./state.js";

let statsTimer = null;

export function refreshStatsSoon() {
  clearTimeout(statsTimer);
  statsTimer = setTimeout(loadStats, 300);
}

export async function loadStats() {
  try { state.stats = await api("/api/v1/stats"); } catch { return; }
  renderFigures();
}

export function renderFigures() {
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

export function matches(t) {
  const f = state.filters;
  if (f.status === "open" && t.status === "closed") return false;
  if (f.status && f.status !== "open" && f.status !== "all" && t.status !== f.status) return false;
  if (f.severity && t.severity !== f.severity) return false;
  if (f.tier && t.highest_tier !== f.tier) return false;
  if (f.q) {
    const hay = [t.incident_id, t.summary, t.message, (t.degraded_links || []).join(" "), t.status, t.proactive ? "proactive" : ""].join(" ").toLowerCase();
    if (!hay.includes(f.q.toLowerCase())) return false;
  }
  return true;
}

export function filterBar() {
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

export function renderTickets(added = null, changed = null, keepFocus = false) {
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
      h("td", {}, h("a", { href: `#/ticket/${encodeURIComponent(t.incident_id)}` }, t.incident_id),
        t.proactive ? [" ", proactiveBadge()] : null),
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
