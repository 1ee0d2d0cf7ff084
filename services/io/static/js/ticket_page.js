// A ticket's page: the map, the protection policies, services by tier, the decisions taken and
// why, the timeline, the audit trail, and removing the tunnels an escalation left up. What the
// policies are and which were left up are fields IO keeps on the ticket (tunnel, tunnels,
// protection_path, tunnels_left_up, unprotected_services); the rule lives once, in
// services/io/protection.py.

import { api } from "./api.js";
import { age, badge, draftInput, duration, h, kv, replaceKeepingFocus, sev, st, time, toast } from "./dom.js";
import { canDecide, currentRoute, state, TIERS } from "./state.js";
import { renderRunbookPanel, runbookPanel } from "./sessions.js";
import { briefLoad, latestLoads, loadCharts, proactiveBadge } from "./load_chart.js";
import { drawTopology, policyClass } from "./topology.js";

function lastDetails(events, test) {
  for (let i = events.length - 1; i >= 0; i--) {
    const e = events[i];
    if (test(e)) return e.payload.details || {};
  }
  return null;
}

export function tierBars(ticket) {
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

export function whyPanel(ticket) {
  const events = ticket.events || [];
  const sections = [];
  const add = (title, items) => { if (items.length) sections.push(h("h4", {}, title), ...items); };
  const item = (e, extra) => h("div", {}, h("div", {}, e.payload.message || e.payload.summary || ""), kv(briefLoad(extra)));
  // recovery checks come by the dozen (an SLA check every poll, four cutover steps): each says
  // what it found in one line, its figures one click away, so the decisions above stay in view
  const check = (e) => {
    const figures = kv(briefLoad(e.payload.details));
    return h("div", { class: "check" }, e.payload.message || "", figures ? h("details", {}, h("summary", {}, "figures"), figures) : null);
  };
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
  // several policies: their list is the Protection policies card; here, only their ids
  const brief = (d) => (Array.isArray((d || {}).tunnels) ? { ...d, tunnels: d.tunnels.map((x) => x.tunnel_id).join(", ") } : d);
  add("Protection tunnel", su((p) => p.phase === "4" || p.status === "provisioning" || p.status === "steering").map((e) => item(e, brief(e.payload.details))));
  add("Re-routes", su(rerouted).map((e) => item(e, brief(e.payload.details))));
  add("Recovery checks", su((p) => !rerouted(p) && (["monitoring", "restoring", "dampening"].includes(p.status) || ["6", "7"].includes(p.phase))).map(check));
  add("Escalation", su((p) => p.status === "escalated").map((e) => item(e, e.payload.details)));
  add("Approvals", (ticket.approvals || []).map((a) => h("div", {}, `${a.action}: `, st(a.status),
    a.decided_by ? ` by ${a.decided_by}` : "", a.notes ? ` — “${a.notes}”` : "")));
  add("Errors", events.filter((e) => e.task_type === "error").map((e) => h("div", { class: "error" }, `${e.payload.error_code}: ${e.payload.message}`)));
  const closed = events.filter((e) => e.task_type === "ticket_closed");
  add("Closure", closed.map((e) => item(e, { resolution: e.payload.resolution, duration: duration(e.payload.duration_seconds), ...brief(e.payload.details || {}) })));
  return h("div", { class: "why" }, sections.length ? sections : h("div", { class: "muted" }, "No decision yet."));
}

export function timeline(ticket) {
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
    if (rest.details) rest.details = briefLoad(rest.details);
    return h("li", { class: `t-${e.task_type}`, "data-task": e.task_type },
      h("div", { class: "when" }, time(e.received_at), " · ", e.task_type, p.source_agent ? ` from ${p.source_agent}` : ""),
      h("div", {}, title),
      h("details", {}, h("summary", {}, "details"), kv(rest)));
  }));
}

// The audit agent's events. Their details are often long JSON: each sits collapsed in a row of
// its own as wide as the card, so a column squeezed by the table never wraps it one character
// per line (the seed incident's page was ~11,000 px tall that way).
export async function loadAudit(incidentId) {
  const box = document.getElementById("audit");
  if (!box) return;
  try {
    const audit = await api(`/api/v1/tickets/${encodeURIComponent(incidentId)}/audit`);
    if (!audit.available) { box.replaceChildren(h("div", { class: "muted" }, `Audit trail unavailable: ${audit.error}`)); return; }
    if (!audit.events.length) { box.replaceChildren(h("div", { class: "muted" }, "No audit events recorded yet.")); return; }
    box.replaceChildren(h("table", { class: "audit" },
      h("thead", {}, h("tr", {}, ["When", "Event", "Agent"].map((c) => h("th", {}, c)))),
      audit.events.map((ev) => {
        const details = ev.details || {};
        const keys = Object.keys(details);
        return h("tbody", { class: "audit-event" },
          h("tr", {},
            h("td", { class: "when" }, time(ev.occurred_at || ev.recorded_at || ev.created_at)),
            h("td", {}, ev.event_type || ev.type || ""),
            h("td", {}, ev.source_agent || "")),
          keys.length ? h("tr", { class: "audit-details" }, h("td", { colspan: 3 },
            h("details", {}, h("summary", {}, `details: ${keys.map((k) => k.replaceAll("_", " ")).join(" · ")}`), kv(details)))) : null);
      })));
  } catch (err) {
    box.replaceChildren(h("div", { class: "muted" }, `Audit trail unavailable: ${err.message}`));
  }
}

export async function showTicket(id) {
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

const names = (ids) => (ids.length > 1 ? `${ids.slice(0, -1).join(", ")} and ${ids[ids.length - 1]}` : ids[0]);

// Every policy left up, named: removing them moves customer traffic, so the operator sees
// exactly which tunnels the one button takes down (IO deletes them one by one).
export function removeTunnelBox(t, tunnelIds) {
  const many = tunnelIds.length > 1;
  const box = h("div", { class: "notice", id: "tunnel-left-up" },
    many
      ? `Tunnels ${names(tunnelIds)} were left up carrying the protected services when this incident escalated. `
      : `Tunnel ${tunnelIds[0]} was left up carrying the protected services when this incident escalated. `);
  if (!canDecide()) {
    box.append(h("span", { class: "muted" }, many ? "An operator can remove them here." : "An operator can remove it here."));
    return box;
  }
  const notes = draftInput(`remove-notes:${t.incident_id}`, { name: "remove-notes", placeholder: "Notes (why)", "aria-label": "removal notes" });
  const go = h("button", {
    class: "reject", id: "remove-tunnel",
    onclick: async () => {
      if (go.dataset.armed !== "1") { // one more click: it moves customer traffic
        go.dataset.armed = "1";
        go.textContent = `Confirm: move the traffic back and delete ${names(tunnelIds)}`;
        return;
      }
      go.disabled = true;
      try {
        const done = await api(`/api/v1/tickets/${encodeURIComponent(t.incident_id)}/tunnel/remove`, { method: "POST", body: { notes: notes.value } });
        state.drafts.delete(`remove-notes:${t.incident_id}`);
        const gone = done.tunnel_ids || tunnelIds;
        toast(gone.length > 1 ? `Tunnels ${names(gone)} removed` : `Tunnel ${gone[0]} removed`);
      } catch (err) {
        toast(err.message, true);
        go.disabled = false;
      }
    },
  }, many ? `Remove ${tunnelIds.length} tunnels` : "Remove tunnel");
  box.append(notes, " ", go);
  return box;
}

// Services the orchestrator could not protect are still hurting: said in the ticket's head,
// in the warning colour, so nobody reads "protected" off the policies below and moves on.
export function unprotectedBox(t) {
  const ids = t.unprotected_services || [];
  if (!ids.length) return null;
  return h("div", { class: "unprotected", id: "unprotected-services" },
    h("b", {}, `${ids.length} service${ids.length > 1 ? "s" : ""} left unprotected`),
    " — no protection policy carries ", ids.length > 1 ? "them" : "it", ": ",
    h("span", { class: "mono" }, ids.join(", ")));
}

// One row per policy (one per group of services with the same ends), with the map's colour for
// it. A single-tunnel incident keeps the page it always had: its tunnel is in the decisions.
export function policiesCard(t) {
  const tunnels = t.tunnels || [];
  if (tunnels.length < 2) return null;
  return h("div", { class: "card" }, h("h3", {}, `Protection policies (${tunnels.length})`),
    h("table", { class: "policies", id: "policies" },
      h("thead", {}, h("tr", {}, ["", "Policy", "Ends", "TE", "Path", "Services", "State"].map((c) => h("th", {}, c)))),
      h("tbody", {}, tunnels.map((p, i) => {
        const services = p.service_ids || [];
        return h("tr", { "data-tunnel": p.tunnel_id },
          h("td", {}, h("i", { class: `swatch ${policyClass(i)}` })),
          h("td", { class: "mono" }, p.tunnel_id, p.binding_sid != null ? h("div", { class: "muted" }, `BSID ${p.binding_sid}`) : null),
          h("td", { class: "mono" }, `${p.head_end || (p.path || [])[0] || "?"} → ${p.end_point || (p.path || []).slice(-1)[0] || "?"}`),
          h("td", {}, p.te_type || "—"),
          h("td", { class: "mono" }, p.path ? `${p.path.join(" → ")} (${p.hops} hops)` : "—"),
          h("td", {}, services.length
            ? h("details", {}, h("summary", {}, `${services.length} service${services.length > 1 ? "s" : ""}`), h("span", { class: "mono" }, services.join(", ")))
            : h("span", { class: "muted" }, "—")),
          h("td", {}, badge(`st-tunnel-${p.state}`, (p.state || "").replace("_", " "))));
      }))));
}

const leftUp = (t) => (t.tunnels_left_up && t.tunnels_left_up.length ? t.tunnels_left_up : t.tunnel_left_up ? [t.tunnel_left_up] : []);

export function renderTicket() {
  const t = state.detail;
  if (!t || currentRoute().name !== "ticket") return;
  const auditBox = document.getElementById("audit");
  const pending = (t.approvals || []).filter((a) => a.status === "pending");
  // a ticket about a host, service or database: no links to draw, runbooks to run instead
  const host = t.kind === "host" || Boolean(t.runbook_session_id) || (t.runbook_matches || []).length > 0;
  const opened = ((t.events || []).find((e) => e.task_type === "new_ticket") || {}).payload || {};
  replaceKeepingFocus(document.getElementById("view"),
    h("div", { class: "card" },
      h("div", { class: "ticket-head" },
        h("a", { href: "#/" }, "← Tickets"),
        h("h1", {}, t.incident_id), sev(t.severity), h("span", { class: "ticket-status", "data-status": t.status }, st(t.status)),
        t.proactive ? proactiveBadge() : null,
        t.phase ? h("span", { class: "muted" }, `phase ${t.phase}`) : null,
        h("span", { class: "muted", title: time(t.created_at) }, `opened ${age(t.created_at)} ago`),
        t.closed_at ? h("span", { class: "muted" }, `closed ${time(t.closed_at)}`) : null),
      h("p", {}, t.summary),
      t.message && t.message !== t.summary ? h("p", { class: "muted" }, t.message) : null,
      host ? h("div", { class: "row" }, h("span", { class: "muted" }, "Host:"), h("span", { class: "mono", id: "ticket-host" }, opened.host || "—"),
        opened.labels ? h("span", { class: "muted mono" }, Object.entries(opened.labels).map(([k, v]) => `${k}=${v}`).join(" ")) : null)
        : h("div", { class: "row" }, h("span", { class: "muted" }, t.proactive ? "Congested links:" : "Degraded links:"), h("span", { class: "mono" }, (t.degraded_links || []).join(", ") || "—"),
          h("span", { class: "muted" }, "Affected services:"), h("b", {}, t.affected_services_count ?? "—")),
      pending.length ? h("p", {}, h("a", { href: "#/approvals" }, `${pending.length} approval(s) waiting`), " — ", pending.map((a) => a.action).join(", ")) : null,
      unprotectedBox(t),
      leftUp(t).length ? removeTunnelBox(t, leftUp(t)) : null),
    h("div", { class: "grid" },
      host ? h("div", {},
        runbookPanel(t),
        h("div", { class: "card" }, h("h3", {}, "Timeline"), timeline(t))) : h("div", {},
        t.proactive || latestLoads(t.events).length
          ? h("div", { class: "card", id: "load-card" }, h("h3", {}, "Link load and forecast"), loadCharts(t)) : null,
        h("div", { class: "card" }, h("h3", {}, "Topology"), drawTopology(t)),
        policiesCard(t),
        h("div", { class: "card" }, h("h3", {}, "Timeline"), timeline(t))),
      h("div", {},
        host ? null : h("div", { class: "card" }, h("h3", {}, "Services affected by tier"), tierBars(t)),
        h("div", { class: "card" }, h("h3", {}, "Why: the decisions taken"), whyPanel(t)),
        h("div", { class: "card" }, h("h3", {}, "Audit trail"), auditBox || h("div", { id: "audit" }, h("div", { class: "muted" }, "Loading…"))))),
  );
  if (host) renderRunbookPanel();
}
