// The runbook library: search it, read a runbook (its steps by phase, which need an approval,
// its rollback), its versions, and edit it as YAML or JSON. The orchestrator validates every
// document; what it refuses comes back as problems ({field, message}, the field naming the
// phase, the step and its name) and is listed next to the editor.

import { api } from "./api.js";
import { age, badge, h, kv, time, toast } from "./dom.js";
import { canDecide, currentRoute, state } from "./state.js";

export const PHASES = ["prechecks", "main", "postchecks"];

// --- YAML out (JSON is YAML too, so reading needs nothing: the orchestrator parses) ---------

const PLAIN_KEY = /^[A-Za-z_][A-Za-z0-9_.-]*$/;
const PLAIN_VALUE = /^[A-Za-z_/][A-Za-z0-9_ ./{}()|"',=+-]*$/;
const YAML_WORDS = /^(true|false|yes|no|on|off|null|~|y|n)$/i;

function scalar(v) {
  if (v === null || v === undefined) return "null";
  if (typeof v === "number" || typeof v === "boolean") return String(v);
  const s = String(v);
  if (PLAIN_VALUE.test(s) && !YAML_WORDS.test(s) && !/: |\s#|\s$|\{\{/.test(s) && !s.includes("'")
    && !s.includes('"')) return s;
  return JSON.stringify(s);  // a JSON string is a YAML double-quoted scalar
}

const key = (k) => (PLAIN_KEY.test(k) && !YAML_WORDS.test(k) ? k : JSON.stringify(k));

// A multi-line string as a literal block (commands read as they were written); else quoted.
function block(s, indent) {
  const lines = s.replace(/\n$/, "").split("\n");
  if (s.endsWith("\n\n") || lines.some((l) => /[^\S ]/.test(l.replace(/\t/g, "")))) return null;
  const head = `|${/^\s/.test(lines[0]) ? "2" : ""}${s.endsWith("\n") ? "" : "-"}`;
  return [head, ...lines.map((l) => (l ? `${indent}${l}` : ""))].join("\n");
}

function emit(value, indent = "") {
  const inner = `${indent}  `;
  if (Array.isArray(value)) {
    if (!value.length) return "[]";
    return value.map((item) => {
      if (item && typeof item === "object" && !Array.isArray(item) && Object.keys(item).length) {
        const body = emit(item, inner);
        return `${indent}- ${body.slice(inner.length)}`;
      }
      return `${indent}- ${inlineValue(item, inner)}`;
    }).join("\n");
  }
  if (value && typeof value === "object") {
    const entries = Object.entries(value).filter(([, v]) => v !== undefined);
    if (!entries.length) return "{}";
    return entries.map(([k, v]) => {
      if (v && typeof v === "object" && (Array.isArray(v) ? v.length : Object.keys(v).length)) {
        return `${indent}${key(k)}:\n${emit(v, inner)}`;
      }
      return `${indent}${key(k)}: ${inlineValue(v, inner)}`;
    }).join("\n");
  }
  return scalar(value);
}

function inlineValue(v, indent) {
  if (Array.isArray(v)) return v.length ? `\n${emit(v, indent)}` : "[]";
  if (v && typeof v === "object") return Object.keys(v).length ? `\n${emit(v, indent)}` : "{}";
  if (typeof v === "string" && v.includes("\n")) return block(v, indent) || JSON.stringify(v);
  return scalar(v);
}

// A runbook document as YAML (block literals keep commands as they were written).
export const toYaml = (doc) => `${emit(doc)}\n`;

// --- the library -----------------------------------------------------------------------------

export async function loadRunbooks() {
  const out = await api("/api/v1/runbooks");
  state.runbooks = out.runbooks || [];
}

const text = (r) => {
  const d = r.document || {};
  return [r.runbook_id, d.title, d.description, ...(d.keywords || []), ...Object.values(d.labels || {})]
    .join(" ").toLowerCase();
};

const stepCount = (d) => PHASES.reduce((n, p) => n + ((d.steps || {})[p] || []).length, 0);

const approvals = (d) => PHASES.flatMap((p) => ((d.steps || {})[p] || [])).concat(d.rollback || [])
  .filter((s) => s.requires_approval).length;

export function renderRunbookList() {
  const table = document.getElementById("runbook-list");
  if (!table) return;
  const words = state.drafts.get("runbook-q") || "";
  const terms = words.toLowerCase().split(/\s+/).filter(Boolean);
  const shown = state.runbooks.filter((r) => terms.every((t) => text(r).includes(t)));
  document.getElementById("runbook-count").textContent = `${shown.length} of ${state.runbooks.length}`;
  table.replaceChildren(
    h("thead", {}, h("tr", {}, ["Runbook", "Title", "Keywords", "Steps", "Approvals", "Version", "Stored"].map((c) => h("th", {}, c)))),
    h("tbody", {}, shown.length ? shown.map((r) => {
      const d = r.document || {};
      return h("tr", {
        class: "ticket runbook", "data-runbook": r.runbook_id, tabindex: 0,
        onclick: () => { location.hash = `#/runbooks/${encodeURIComponent(r.runbook_id)}`; },
        onkeydown: (e) => { if (e.key === "Enter") location.hash = `#/runbooks/${encodeURIComponent(r.runbook_id)}`; },
      },
      h("td", { class: "mono" }, h("a", { href: `#/runbooks/${encodeURIComponent(r.runbook_id)}` }, r.runbook_id)),
      h("td", {}, d.title || "", h("div", { class: "muted clip" }, d.description || "")),
      h("td", { class: "muted" }, (d.keywords || []).slice(0, 4).join(", ")),
      h("td", {}, stepCount(d), (d.rollback || []).length ? h("span", { class: "muted" }, ` + ${d.rollback.length} rollback`) : null),
      h("td", {}, approvals(d) || h("span", { class: "muted" }, "none")),
      h("td", {}, `v${r.version}`),
      h("td", { class: "muted", title: time(r.created_at) }, `${r.source} · ${age(r.created_at)} ago`));
    }) : h("tr", {}, h("td", { colspan: 7, class: "empty" }, state.runbooks.length ? "No runbook matches the search." : "The library is empty."))));
}

export async function renderRunbooks() {
  const view = document.getElementById("view");
  const search = h("input", {
    type: "search", id: "runbook-search", placeholder: "Search title, description, keywords, labels",
    "aria-label": "search runbooks", value: state.drafts.get("runbook-q") || "",
    oninput: (e) => { state.drafts.set("runbook-q", e.target.value); renderRunbookList(); },
  });
  view.replaceChildren(h("div", { class: "card", id: "runbooks-card" },
    h("div", { class: "row" }, h("h2", {}, "Runbooks"), h("span", { class: "muted", id: "runbook-count" }),
      canDecide() ? h("a", { href: "#/runbooks/new", class: "button-link", id: "new-runbook" }, "New runbook") : null),
    h("div", { class: "filters" }, search),
    h("table", { id: "runbook-list" }, h("tbody", {}, h("tr", {}, h("td", { class: "muted" }, "Loading…"))))));
  try { await loadRunbooks(); } catch (err) {
    document.getElementById("runbook-list").replaceChildren(h("tbody", {}, h("tr", {}, h("td", { class: "error" }, `Runbooks unavailable: ${err.message}`))));
    return;
  }
  if (currentRoute().name === "runbooks") renderRunbookList();
}

// --- one runbook -----------------------------------------------------------------------------

function action(s) {
  if (s.command) return h("pre", { class: "command" }, s.command);
  if (s.query) return h("pre", { class: "command" }, s.query);
  if (s.request) return h("pre", { class: "command" }, `${s.request.method || "GET"} ${s.request.path || ""}${s.request.body ? `\n${JSON.stringify(s.request.body, null, 2)}` : ""}`);
  return null;
}

function stepItem(s) {
  return h("li", { class: "rb-step", "data-step": s.name },
    h("div", { class: "row" }, h("b", {}, s.name),
      badge("st-connector", s.connector),
      s.connection ? h("span", { class: "mono muted" }, `on ${s.connection}`) : null,
      s.requires_approval ? badge("st-waiting_approval", "needs approval") : null,
      s.idempotent ? h("span", { class: "muted" }, "idempotent") : null,
      s.timeout_s ? h("span", { class: "muted" }, `timeout ${s.timeout_s}s`) : null),
    action(s),
    s.expect && Object.keys(s.expect).length ? h("div", { class: "muted" }, "expects ", kv(s.expect)) : null);
}

function stepsOf(d) {
  const phase = (title, steps, id) => h("section", { class: "phase", "data-phase": id },
    h("h4", {}, `${title} (${steps.length})`),
    steps.length ? h("ol", { class: "rb-steps" }, steps.map(stepItem)) : h("div", { class: "muted" }, "none"));
  return [
    ...PHASES.map((p) => phase(p === "main" ? "Main" : p[0].toUpperCase() + p.slice(1), (d.steps || {})[p] || [], p)),
    phase("Rollback (on failure, last first)", d.rollback || [], "rollback"),
  ];
}

function problemsList(rb) {
  const box = h("div", { id: "runbook-problems", role: "alert" });
  if (!rb.error) return box;
  box.append(h("p", { class: "error" }, rb.error));
  if (rb.problems && rb.problems.length) {
    box.append(h("ul", { class: "problems" }, rb.problems.map((p) => h("li", { class: "problem" },
      h("code", { class: "field" }, p.field || "document"), " ", h("span", {}, p.message)))));
  }
  return box;
}

function editor(rb) {
  const format = h("select", { name: "format", "aria-label": "format", id: "runbook-format" },
    ["yaml", "json"].map((f) => h("option", { value: f, selected: rb.format === f }, f.toUpperCase())));
  const area = h("textarea", {
    id: "runbook-text", class: "mono editor", spellcheck: "false", rows: 28, "aria-label": "runbook document",
    "aria-describedby": "runbook-problems",
  });
  area.value = rb.text;
  area.addEventListener("input", () => { rb.text = area.value; });
  format.addEventListener("change", () => {
    let doc = null;
    try { doc = JSON.parse(rb.text); } catch { doc = rb.format === "json" ? null : undefined; }
    rb.format = format.value;
    // JSON converts both ways here; a YAML text the page cannot parse starts from the stored one
    const base = doc || (rb.view ? rb.view.document : null);
    if (base) rb.text = rb.format === "json" ? JSON.stringify(base, null, 2) : toYaml(base);
    area.value = rb.text;
  });
  const save = h("button", { class: "primary", id: "runbook-save", type: "submit" }, rb.isNew ? "Create" : "Save as a new version");
  const form = h("form", { class: "card", id: "runbook-editor" },
    h("div", { class: "row" }, h("h3", {}, rb.isNew ? "New runbook" : `Edit ${rb.id}`),
      h("label", {}, "Format ", format),
      h("span", { class: "hint" }, "The orchestrator checks the document; problems name the phase, step and field.")),
    h("div", { class: "editor-grid" }, area, problemsList(rb)),
    h("div", { class: "row" }, save,
      h("button", { type: "button", onclick: () => { rb.editing = false; rb.error = null; rb.problems = null; renderRunbook(); if (rb.isNew) location.hash = "#/runbooks"; } }, "Cancel")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    save.disabled = true;
    const contentType = rb.format === "yaml" ? "application/yaml" : "application/json";
    try {
      const out = rb.isNew
        ? await api("/api/v1/runbooks", { method: "POST", text: rb.text, contentType })
        : await api(`/api/v1/runbooks/${encodeURIComponent(rb.id)}`, { method: "PUT", text: rb.text, contentType });
      toast(`Saved ${out.runbook_id} version ${out.version}`);
      state.runbook = null;
      if (rb.isNew) { location.hash = `#/runbooks/${encodeURIComponent(out.runbook_id)}`; return; }
      await showRunbook(out.runbook_id);
    } catch (err) {
      rb.error = err.status === 422 ? `Not saved: ${err.message}` : `Not saved (${err.status}): ${err.message}`;
      rb.problems = err.detail && Array.isArray(err.detail.problems) ? err.detail.problems : null;
      save.disabled = false;
      const old = document.getElementById("runbook-problems");
      if (old) old.replaceWith(problemsList(rb));
    }
  });
  return form;
}

export function renderRunbook() {
  const rb = state.runbook;
  if (!rb || currentRoute().name !== "runbook") return;
  const view = document.getElementById("view");
  const back = h("a", { href: "#/runbooks" }, "← Runbooks");
  if (rb.isNew) { view.replaceChildren(h("div", { class: "card" }, back), editor(rb)); return; }
  const r = rb.view;
  const d = r.document || {};
  const versions = h("select", { id: "runbook-version", "aria-label": "version" },
    Array.from({ length: rb.latest }, (_, i) => rb.latest - i).map((v) => h("option", { value: v, selected: v === r.version }, `v${v}${v === rb.latest ? " (latest)" : ""}`)));
  versions.addEventListener("change", () => showRunbook(rb.id, Number(versions.value)));
  view.replaceChildren(
    h("div", { class: "card", id: "runbook", "data-runbook": r.runbook_id },
      h("div", { class: "ticket-head" }, back, h("h1", {}, d.title || r.runbook_id),
        h("span", { class: "mono muted" }, r.runbook_id),
        h("label", { class: "muted" }, "Version ", versions),
        h("span", { class: "muted", title: time(r.created_at) }, `stored ${age(r.created_at)} ago (${r.source})`),
        canDecide() && !rb.editing ? h("button", { id: "runbook-edit", onclick: () => { rb.editing = true; renderRunbook(); } }, "Edit") : null),
      r.version !== rb.latest ? h("p", { class: "warn" }, `An older version: v${rb.latest} is the one sessions run.`) : null,
      h("p", {}, d.description || ""),
      kv({ keywords: d.keywords, labels: d.labels, severities: d.severities })),
    rb.editing ? editor(rb) : null,
    h("div", { class: "card", id: "runbook-steps" }, h("h3", {}, "Steps"), stepsOf(d)));
}

export async function showRunbook(id, version) {
  const view = document.getElementById("view");
  if (id === "new") {
    state.runbook = { isNew: true, id: null, format: "yaml", text: NEW_RUNBOOK, editing: true };
    renderRunbook();
    return;
  }
  if (!state.runbook || state.runbook.id !== id) view.replaceChildren(h("div", { class: "muted" }, "Loading…"));
  try {
    const latest = await api(`/api/v1/runbooks/${encodeURIComponent(id)}`);
    const shown = version && version !== latest.version
      ? await api(`/api/v1/runbooks/${encodeURIComponent(id)}?version=${version}`) : latest;
    const format = state.runbook && state.runbook.id === id ? state.runbook.format : "yaml";
    state.runbook = {
      id, view: shown, latest: latest.version, format, editing: false, error: null, problems: null,
      text: format === "json" ? JSON.stringify(shown.document, null, 2) : toYaml(shown.document),
    };
  } catch (err) {
    view.replaceChildren(h("div", { class: "card error" }, err.status === 404 ? `No runbook ${id}.` : err.message));
    return;
  }
  renderRunbook();
}

const NEW_RUNBOOK = `id: my-runbook
title: What this runbook fixes
description: When to use it, what it does, how it is verified.
keywords:
  - disk full
severities: [high, medium]
steps:
  prechecks:
    - name: show usage
      connector: local
      command: df -h
      timeout_s: 30
      idempotent: true
  main: []
  postchecks: []
rollback: []
`;
