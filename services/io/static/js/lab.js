// The lab panel: degrade, recover or flap a link and run a scenario, through IO's proxy.

import { api } from "./api.js";
import { h } from "./dom.js";
import { canDecide, state } from "./state.js";

export async function renderLab() {
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
