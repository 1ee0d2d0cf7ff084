// Pending approvals: approve, reject, delegate, batch. What an operator types or ticks is kept
// in state.drafts so it survives the live re-renders.

import { api } from "./api.js";
import { age, draftInput, duration, h, kv, replaceKeepingFocus, sev, st, time, toast } from "./dom.js";
import { canDecide, currentRoute, state } from "./state.js";

export function updateApprovalCount() {
  const n = [...state.approvals.values()].filter((a) => a.status === "pending").length;
  const el = document.getElementById("approval-count");
  el.textContent = n;
  el.hidden = n === 0;
}

export async function loadApprovals() {
  try {
    const list = await api(`/api/v1/approvals?status=${state.approvalFilter === "pending" ? "pending" : "all"}`);
    if (state.approvalFilter === "pending") {
      for (const [id, a] of state.approvals) if (a.status === "pending") state.approvals.delete(id);
    }
    for (const a of list) state.approvals.set(a.approval_id, a);
  } catch { /* shown as empty */ }
  updateApprovalCount();
}

export async function decide(a, decision, notes, card) {
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

export function approvalCard(a) {
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

export function renderApprovals() {
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
