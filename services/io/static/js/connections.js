// Connections (the inventory runbook steps name) and credentials (admins only). A secret is
// typed into a password field, sent once, and cleared: no answer carries it and the page never
// shows it again. Testing a connection says ok or what failed (its kind), with the latency.

import { api } from "./api.js";
import { age, badge, h, time, toast } from "./dom.js";
import { canDecide, currentRoute, isAdmin, state } from "./state.js";
import { confirmButton } from "./users.js";

const ENVIRONMENTS = ["prod", "staging", "dev"];
const CONNECTORS = ["ssh", "database", "http", "local"];
const KINDS = ["ssh_key", "password", "token"];
const tested = new Map();  // connection name → its last test's answer, for this page only

async function refresh() {
  const [connections, credentials] = await Promise.all([
    api("/api/v1/connections").then((out) => out.connections).catch((err) => ({ error: err.message })),
    isAdmin() ? api("/api/v1/credentials").then((out) => out.credentials).catch((err) => ({ error: err.message })) : null,
  ]);
  state.connections = connections;
  state.credentials = credentials;
  if (currentRoute().name === "connections") renderTables();
}

function testResult(name) {
  const r = tested.get(name);
  if (!r) return h("span", { class: "muted" }, "not tested");
  if (r.pending) return h("span", { class: "muted" }, "testing…");
  return h("span", { class: `test-result ${r.ok ? "ok" : "bad"}`, role: "status" },
    badge(r.ok ? "st-approved" : "st-escalated", r.ok ? "ok" : (r.kind || "failed")),
    " ", h("span", { class: "detail" }, r.detail), h("span", { class: "muted" }, ` · ${Math.round(r.latency_ms)} ms`));
}

async function test(name) {
  tested.set(name, { pending: true });
  renderTables();
  try {
    tested.set(name, await api(`/api/v1/connections/${encodeURIComponent(name)}/test`, { method: "POST" }));
  } catch (err) {
    tested.set(name, { ok: false, kind: `HTTP ${err.status}`, detail: err.message, latency_ms: 0 });
  }
  renderTables();
}

const target = (c) => c.url || (c.host ? `${c.host}${c.port ? `:${c.port}` : ""}` : c.connector === "local" ? "this orchestrator" : "");

function renderTables() {
  const conns = document.getElementById("connections");
  if (conns) {
    const list = state.connections;
    conns.replaceChildren(Array.isArray(list) ? h("table", { id: "connection-list" },
      h("thead", {}, h("tr", {}, ["Name", "Environment", "Connector", "Target", "Credential", "Test"].map((c) => h("th", {}, c)))),
      h("tbody", {}, list.length ? list.map((c) => h("tr", { "data-connection": c.name },
        h("td", { class: "mono" }, c.name),
        h("td", {}, c.environment),
        h("td", {}, c.connector),
        h("td", { class: "mono" }, target(c), c.database ? h("div", { class: "muted" }, c.database) : null),
        h("td", { class: "mono" }, c.credential || h("span", { class: "muted" }, "none")),
        h("td", {}, canDecide() ? h("button", { class: "test", "aria-label": `Test ${c.name}`, onclick: () => test(c.name) }, "Test") : null, " ", testResult(c.name))))
        : h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No connection yet."))))
      : h("div", { class: "error" }, `Connections unavailable: ${list ? list.error : ""}`));
  }
  const names = document.getElementById("credential-names");
  if (names && Array.isArray(state.credentials)) names.replaceChildren(...state.credentials.map((c) => h("option", { value: c.name })));
  const creds = document.getElementById("credentials");
  if (creds) {
    const list = state.credentials;
    creds.replaceChildren(Array.isArray(list) ? h("table", { id: "credential-list" },
      h("thead", {}, h("tr", {}, ["Name", "Kind", "Username", "Created", "Updated", ""].map((c) => h("th", {}, c)))),
      h("tbody", {}, list.length ? list.map((c) => h("tr", { "data-credential": c.name },
        h("td", { class: "mono" }, c.name), h("td", {}, c.kind), h("td", {}, c.username || h("span", { class: "muted" }, "—")),
        h("td", { class: "muted", title: time(c.created_at) }, `${age(c.created_at)} ago`),
        h("td", { class: "muted", title: time(c.updated_at) }, `${age(c.updated_at)} ago`),
        h("td", {}, confirmButton("Delete", `Delete credential ${c.name}? Connections naming it stop working.`, async () => {
          try { await api(`/api/v1/credentials/${encodeURIComponent(c.name)}`, { method: "DELETE" }); toast(`Deleted credential ${c.name}`); } catch (err) { toast(err.message, true); }
          await refresh();
        }))))
        : h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No credential yet."))))
      : h("div", { class: "error" }, `Credentials unavailable: ${list ? list.error : ""}`));
  }
}

const field = (label, input) => h("label", { class: "field" }, h("span", { class: "muted" }, label), input);

function errorBox(id) { return h("p", { class: "error", id, role: "alert", hidden: true }); }

function showError(box, err) {
  box.textContent = err.message;
  box.hidden = false;
}

function credentialForm() {
  const error = errorBox("new-credential-error");
  const secret = h("input", { name: "secret", type: "password", autocomplete: "new-password", "aria-label": "secret", required: true, placeholder: "secret" });
  const form = h("form", { class: "card", id: "new-credential" },
    h("h3", {}, "Add a credential"),
    h("div", { class: "row" },
      field("Name", h("input", { name: "name", "aria-label": "credential name", required: true, autocomplete: "off", placeholder: "web-root" })),
      field("Kind", h("select", { name: "kind", "aria-label": "credential kind" }, KINDS.map((k) => h("option", { value: k }, k)))),
      field("Username", h("input", { name: "username", "aria-label": "credential username", autocomplete: "off", placeholder: "(ssh_key, password)" })),
      field("Secret", secret),
      h("button", { type: "submit", class: "primary" }, "Save credential")),
    error,
    h("p", { class: "hint" }, "The secret is encrypted by the orchestrator and never shown again, here or by the API. A private key: paste it whole."));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const body = { name: String(data.get("name")).trim(), kind: data.get("kind"), secret: String(data.get("secret")) };
    const username = String(data.get("username")).trim();
    if (username) body.username = username;
    error.hidden = true;
    try {
      const out = await api("/api/v1/credentials", { method: "POST", body });
      toast(`Saved credential ${out.name} (${out.kind})`);
      form.reset();
    } catch (err) { showError(error, err); }
    secret.value = "";  // saved or not, the secret leaves the page
    await refresh();
  });
  return form;
}

function connectionForm() {
  const error = errorBox("new-connection-error");
  const credentials = Array.isArray(state.credentials) ? state.credentials.map((c) => c.name) : [];
  const form = h("form", { class: "card", id: "new-connection" },
    h("h3", {}, "Add a connection"),
    h("div", { class: "row" },
      field("Name", h("input", { name: "name", "aria-label": "connection name", required: true, autocomplete: "off", placeholder: "web-03" })),
      field("Environment", h("select", { name: "environment", "aria-label": "environment" }, ENVIRONMENTS.map((e) => h("option", { value: e }, e)))),
      field("Connector", h("select", { name: "connector", "aria-label": "connector" }, CONNECTORS.map((c) => h("option", { value: c }, c)))),
      field("Host", h("input", { name: "host", "aria-label": "host", autocomplete: "off", placeholder: "ssh: host name" })),
      field("Port", h("input", { name: "port", "aria-label": "port", type: "number", min: 1, max: 65535, size: 6 })),
      field("URL", h("input", { name: "url", "aria-label": "url", autocomplete: "off", placeholder: "http / database" })),
      field("Database", h("input", { name: "database", "aria-label": "database", autocomplete: "off" })),
      field("Credential", h("input", { name: "credential", "aria-label": "credential", list: "credential-names", autocomplete: "off" })),
      h("datalist", { id: "credential-names" }, credentials.map((c) => h("option", { value: c })))),
    h("div", { class: "row" },
      field("Host key (known_hosts line, ssh)", h("input", { name: "host_key", "aria-label": "host key", class: "mono wide", autocomplete: "off" })),
      h("button", { type: "submit", class: "primary" }, "Save connection")),
    error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const body = {};
    for (const [k, v] of data.entries()) {
      const s = String(v).trim();
      if (s) body[k] = k === "port" ? Number(s) : s;
    }
    error.hidden = true;
    try {
      const out = await api("/api/v1/connections", { method: "POST", body });
      toast(`Saved connection ${out.name}`);
      form.reset();
    } catch (err) { showError(error, err); }
    await refresh();
  });
  return form;
}

function rotateBox() {
  return h("div", { class: "row", id: "rotate-key" },
    confirmButton("Rotate key", "Re-encrypt every secret under a new key? The old key is retired.", async () => {
      try {
        const out = await api("/api/v1/credentials/rotate-key", { method: "POST" });
        toast(`Key rotated: ${out.rotated} secrets re-encrypted, key ${out.key_id}`);
        document.getElementById("rotated").textContent = `Last rotation: ${out.rotated} secrets under key ${out.key_id} (${out.retired_keys} retired).`;
      } catch (err) { toast(err.message, true); }
      renderConnections();
    }),
    h("span", { class: "muted", id: "rotated" }));
}

export async function renderConnections() {
  const view = document.getElementById("view");
  const rotated = document.getElementById("rotated");
  const last = rotated ? rotated.textContent : "";
  view.replaceChildren(
    h("div", { class: "card" }, h("h2", {}, "Connections"),
      h("p", { class: "hint" }, "The targets runbook steps name. Test one to reach it with its credential."),
      h("div", { id: "connections" }, h("div", { class: "muted" }, "Loading…"))),
    canDecide() ? connectionForm() : null,
    h("div", { class: "card" }, h("div", { class: "row" }, h("h2", {}, "Credentials"), isAdmin() ? rotateBox() : null),
      isAdmin() ? h("div", { id: "credentials" }, h("div", { class: "muted" }, "Loading…"))
        : h("p", { class: "muted" }, "Only an admin sees and adds credentials (sign in with an admin token).")),
    isAdmin() ? credentialForm() : null);
  if (last && document.getElementById("rotated")) document.getElementById("rotated").textContent = last;
  await refresh();
}
