// A host ticket's runbooks: the suggestions (the top three, each with its confidence, the
// factors it is made of and the explanation), Run (an operator starts a session), and the
// session live: its steps with status, exit code and output, polled every second while it
// runs (the stream's ticket news for the incident re-render the page too), with the approval a
// step waits for shown inline — the exact command, Approve and Reject.

import { api } from "./api.js";
import { age, badge, draftInput, h, replaceKeepingFocus, st, time, toast } from "./dom.js";
import { canDecide, currentRoute, state } from "./state.js";

const POLL_MS = 1000;
const FACTORS = ["semantic", "keyword", "history", "recency"];
const pct = (x) => `${Math.round((Number(x) || 0) * 100)}%`;

let watching = null;  // {sessionId} of the watch polling now

const onThisTicket = (incidentId) => {
  const r = currentRoute();
  return r.name === "ticket" && r.id === incidentId;
};

export async function loadMatches(incidentId) {
  try {
    state.matches = await api(`/api/v1/tickets/${encodeURIComponent(incidentId)}/runbook-matches`);
  } catch (err) {
    state.matches = { incident_id: incidentId, error: err.message, matches: [] };
  }
  renderRunbookPanel();
}

// Poll the session every second until it has ended (or the operator left the ticket). Each
// watch holds its own token: a newer watch (or a fresh page) ends the older one.
export async function watchSession(sessionId, incidentId) {
  if (watching && watching.sessionId === sessionId) return;
  const me = { sessionId };
  watching = me;
  try {
    while (watching === me && onThisTicket(incidentId)) {
      try {
        const view = await api(`/api/v1/runbook-sessions/${encodeURIComponent(sessionId)}`);
        if (watching !== me) return;
        state.session = view;
        const waiting = view.pending_approval && view.pending_approval.approval_id;
        if (waiting && !state.approvals.has(waiting)) await loadApproval(waiting);
        renderRunbookPanel();
        if (view.final) return;
      } catch (err) {
        if (watching !== me) return;
        state.session = { ...(state.session || { session_id: sessionId, steps: [] }), error: err.message };
        renderRunbookPanel();
        if (err.status === 404) return;
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  } finally {
    if (watching === me) watching = null;
  }
}

async function loadApproval(id) {
  try {
    const a = await api(`/api/v1/approvals/${encodeURIComponent(id)}`);
    state.approvals.set(a.approval_id, a);
  } catch { /* not at IO yet: the next poll asks again */ }
}

async function run(match, button) {
  const t = state.detail;
  button.disabled = true;
  try {
    const out = await api(`/api/v1/tickets/${encodeURIComponent(t.incident_id)}/runbook-sessions`, {
      method: "POST", body: { runbook_id: match.runbook_id },
    });
    toast(`Started ${match.runbook_id}: session ${out.session_id}`);
    state.session = { session_id: out.session_id, incident_id: t.incident_id, runbook_id: match.runbook_id, status: out.status || "running", steps: [] };
    renderRunbookPanel();
    watchSession(out.session_id, t.incident_id);
  } catch (err) {
    toast(`Not started: ${err.message}`, true);
    button.disabled = false;
  }
}

function suggestion(m, i, running) {
  const button = canDecide()
    ? h("button", { class: "primary run", "aria-label": `Run ${m.title}` }, "Run")
    : null;
  if (button) {
    button.disabled = running;
    button.addEventListener("click", () => run(m, button));
  }
  return h("li", { class: "suggestion", "data-runbook": m.runbook_id },
    h("div", { class: "row" },
      h("span", { class: "rank" }, `#${i + 1}`),
      h("a", { href: `#/runbooks/${encodeURIComponent(m.runbook_id)}` }, h("b", {}, m.title)),
      h("span", { class: "mono muted" }, m.runbook_id),
      h("span", { class: "confidence", title: "confidence" },
        h("meter", { min: 0, max: 1, value: m.confidence, "aria-label": `confidence of ${m.runbook_id}` }), ` ${pct(m.confidence)}`),
      button),
    h("dl", { class: "factors" }, FACTORS.map((f) => [h("dt", {}, f), h("dd", { "data-factor": f }, pct((m.factors || {})[f]))])),
    h("p", { class: "explanation muted" }, m.explanation || ""));
}

function suggestions() {
  const m = state.matches;
  if (!m) return h("div", { class: "muted" }, "Ranking the runbooks…");
  if (m.error) return h("div", { class: "error" }, `Suggestions unavailable: ${m.error}`);
  const list = (m.matches || []).slice(0, 3);
  const running = Boolean(state.session && !state.session.final && state.session.status !== "failed");
  return h("div", {},
    m.none_likely ? h("p", { class: "warn" }, "None of these really fits", m.none_reason ? `: ${m.none_reason}` : ".") : null,
    list.length ? h("ol", { class: "suggestions" }, list.map((x, i) => suggestion(x, i, running)))
      : h("div", { class: "muted" }, "No runbook in the library."),
    !canDecide() ? h("p", { class: "muted" }, "An operator can run one.") : null);
}

function inlineApproval(step, s) {
  const id = step.approval_id || (s.pending_approval || {}).approval_id;
  if (!id) return null;
  const a = state.approvals.get(id);
  const details = (a && a.details) || {};
  const command = details.command || step.command || "";
  const decided = a && a.status !== "pending";
  const box = h("div", { class: "inline-approval approval", "data-approval": id },
    h("div", { class: "row" }, h("b", {}, "Approval needed: "), `${step.phase} step “${step.name}”`,
      details.connection || step.connection ? h("span", { class: "muted" }, ` on ${details.connection || step.connection}`) : null,
      a && a.expires_at && !decided ? h("span", { class: "muted" }, ` · expires ${time(a.expires_at)}`) : null,
      decided ? st(a.status) : null),
    h("div", { class: "muted" }, "It will run exactly this:"),
    h("pre", { class: "command", "aria-label": "command to approve" }, command));
  if (decided || !canDecide()) {
    if (!canDecide()) box.append(h("p", { class: "muted" }, "Your role (viewer) can see approvals but not decide them."));
    return box;
  }
  const notes = draftInput(`notes:${id}`, { name: "notes", placeholder: "Notes (why)", "aria-label": "approval notes" });
  const decide = async (decision) => {
    box.querySelectorAll("button").forEach((b) => { b.disabled = true; });
    try {
      const row = await api(`/api/v1/approvals/${encodeURIComponent(id)}/${decision}`, { method: "POST", body: { notes: notes.value } });
      state.approvals.set(row.approval_id, row);
      state.drafts.delete(`notes:${id}`);
      toast(`${decision === "approve" ? "Approved" : "Rejected"}: ${step.name}`);
    } catch (err) {
      toast(err.status === 409 ? `Not pending any more: ${err.message}` : err.message, true);
    }
    renderRunbookPanel();
  };
  box.append(h("div", { class: "actions" }, notes,
    h("button", { class: "approve", onclick: () => decide("approve") }, "Approve"),
    h("button", { class: "reject", onclick: () => decide("reject") }, "Reject")));
  return box;
}

function sessionCard() {
  const s = state.session;
  if (!s) return null;
  const steps = s.steps || [];
  const v = s.verification;
  return h("div", { class: "card session", id: "session", "data-session": s.session_id, "data-status": s.status },
    h("div", { class: "row" }, h("h3", {}, "Session ", h("span", { class: "mono" }, s.session_id)),
      h("span", { class: "session-status" }, st(s.status)),
      h("a", { href: `#/runbooks/${encodeURIComponent(s.runbook_id)}` }, s.runbook_id, s.version ? ` v${s.version}` : ""),
      s.started_by ? h("span", { class: "muted" }, `started by ${s.started_by}`) : null,
      s.created_at ? h("span", { class: "muted", title: time(s.created_at) }, `${age(s.created_at)} ago`) : null,
      !s.final && s.status !== undefined ? h("span", { class: "muted live-dot" }, "updating every second") : null),
    s.error ? h("p", { class: "error" }, s.error) : null,
    s.reason ? h("p", { class: "muted" }, s.reason) : null,
    steps.length ? h("table", { class: "steps-table", id: "session-steps" },
      h("thead", {}, h("tr", {}, ["Phase", "Step", "Status", "Exit", "Output"].map((c) => h("th", {}, c)))),
      h("tbody", {}, steps.map((step) => [
        h("tr", { class: `step st-row-${step.status}`, "data-step": step.name, "data-status": step.status },
          h("td", { class: "muted" }, step.phase),
          h("td", {}, step.name, step.connection ? h("div", { class: "muted mono" }, step.connection) : null),
          h("td", {}, st(step.status), step.reason ? h("div", { class: "muted" }, step.reason) : null),
          h("td", { class: "mono exit" }, step.exit_code ?? "—"),
          h("td", {}, step.output ? h("pre", { class: "output" }, step.output) : h("span", { class: "muted" }, step.started_at ? "" : "not started"))),
        step.status === "waiting_approval"
          ? h("tr", { class: "approval-row" }, h("td", { colspan: 5 }, inlineApproval(step, s))) : null,
      ]))) : h("div", { class: "muted" }, "Starting…"),
    v ? h("div", { class: "verification" }, h("b", {}, "Verification: "), badge(`st-${v.outcome}`, v.outcome.replace("_", " ")),
      ` confidence ${pct(v.confidence)}`, (v.reasons || []).length ? h("ul", {}, v.reasons.map((r) => h("li", {}, r))) : null) : null);
}

// The panel of a host ticket's page; the ticket page keeps the element across its re-renders.
export function renderRunbookPanel() {
  const panel = document.getElementById("runbook-panel");
  const t = state.detail;
  if (!panel || !t) return;
  const session = sessionCard();
  replaceKeepingFocus(panel,
    h("div", { class: "card", id: "suggestions" }, h("h3", {}, "Suggested runbooks"), suggestions()),
    ...(session ? [session] : []));
}

// Called by renderTicket: a fresh panel loads the suggestions; the session the ticket names
// (one started here, by another operator, or by the orchestrator itself) is followed when it
// changes.
let followed = null;

export function runbookPanel(t) {
  let panel = document.getElementById("runbook-panel");
  if (!panel || panel.dataset.incident !== t.incident_id) {
    panel = h("div", { id: "runbook-panel", "data-incident": t.incident_id });
    state.matches = null;
    state.session = null;
    watching = null;
    followed = null;
    loadMatches(t.incident_id);
  }
  const sid = t.runbook_session_id;
  if (sid && sid !== followed) {
    followed = sid;
    if (!state.session || state.session.session_id !== sid) {
      state.session = { session_id: sid, incident_id: t.incident_id, runbook_id: "", steps: [] };
    }
    watchSession(sid, t.incident_id);
  }
  return panel;
}
