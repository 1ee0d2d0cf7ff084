// IO console: tickets live over SSE, a ticket's story, approvals, the lab, and (for admins)
// users and tokens. Plain ES modules served by IO itself, no build step and no CDN:
//
//   state.js        the one shared state, constants, the current route
//   dom.js          h()/svg() and small formatting helpers (never innerHTML)
//   api.js          fetch with the token; a 401 goes to the sign-in form below
//   stream.js       the live stream (fetch, so it carries the Authorization header)
//   tickets.js      the ticket list and the figures
//   ticket_page.js  one ticket: map, tiers, why, timeline, audit trail, tunnel removal
//   topology.js     the map, drawn from the ticket's protection_path and tunnel
//   approvals.js    approvals: decide, delegate, batch
//   runbooks.js     the runbook library: search, read (steps by phase), versions, edit YAML/JSON
//   sessions.js     a host ticket's suggested runbooks, Run, the live session, inline approvals
//   connections.js  connections (test them) and credentials (admins; secrets write-only)
//   lab.js, users.js
//
// Auth: a token from the sign-in form is kept in sessionStorage and sent as
// "Authorization: Bearer". On loopback IO may trust token-less requests as the local operator,
// in which case the form never shows. This module signs in, routes, and boots.

import { api, onUnauthorized } from "./api.js";
import { loadApprovals, renderApprovals, updateApprovalCount } from "./approvals.js";
import { age, h } from "./dom.js";
import { renderConnections } from "./connections.js";
import { renderLab } from "./lab.js";
import { renderRunbooks, showRunbook } from "./runbooks.js";
import { currentRoute, isAdmin, state, TOKEN_KEY } from "./state.js";
import { stopStream, stream } from "./stream.js";
import { renderTicket, showTicket } from "./ticket_page.js";
import { loadStats, refreshStatsSoon, renderTickets } from "./tickets.js";
import { renderUsers } from "./users.js";

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
  listen();
});

document.getElementById("signout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.me = null;
  location.hash = "#/";
  location.reload();
});

// The stream's news: the ticket view (with its tunnel, protection path and tunnel left up, as
// IO computed them) replaces the one shown; the task that changed it joins the timeline.
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

const listen = () => stream(onEvent);
onUnauthorized(refused);

async function route() {
  const r = currentRoute();
  document.querySelectorAll("#nav a[data-nav]").forEach((a) => {
    const tab = r.name === "ticket" ? "tickets" : r.name === "runbook" ? "runbooks" : r.name;
    a.classList.toggle("active", a.dataset.nav === tab);
  });
  if (r.name !== "ticket") state.detail = null;
  if (r.name !== "runbook") state.runbook = null;
  if (r.name !== "users") state.issued = null;  // a new token is shown once, on this visit only
  if (r.name === "tickets") renderTickets();
  else if (r.name === "ticket") await showTicket(r.id);
  else if (r.name === "approvals") { renderApprovals(); await loadApprovals(); renderApprovals(); }
  else if (r.name === "runbooks") await renderRunbooks();
  else if (r.name === "runbook") await showRunbook(r.id);
  else if (r.name === "connections") await renderConnections();
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
  listen();
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
