// Users and tokens, for admins. A token just issued is shown once, from state.issued, and is
// never stored in the browser.

import { api } from "./api.js";
import { age, badge, h, time, toast } from "./dom.js";
import { currentRoute, isAdmin, ROLES, state } from "./state.js";

// A button that asks before it acts: "Revoke" → "Revoke token #3 of alice? [Yes, revoke] [Cancel]".
export function confirmButton(label, question, action, cls = "") {
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

export async function refreshUsers() {
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
export async function userAction(request, done) {
  try { done(await request()); } catch (err) { toast(err.message, true); }
  await refreshUsers();
}

export function showIssued(out) {
  state.issued = { username: out.username, id: out.id, label: out.label, token: out.token };
  renderIssued();
}

export function renderIssued() {
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

export function createUserForm() {
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

export function tokenList(u) {
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

export function userRow(u) {
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

export function renderUserTable() {
  const card = document.getElementById("users-card");
  if (!card || currentRoute().name !== "users") return;
  card.replaceChildren(h("h3", {}, `Users (${state.users.length})`),
    h("table", { id: "users" },
      h("thead", {}, h("tr", {}, ["User", "Role", "Created", "Tokens", "Actions"].map((c) => h("th", {}, c)))),
      h("tbody", {}, state.users.map(userRow))));
}

export async function renderUsers() {
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
