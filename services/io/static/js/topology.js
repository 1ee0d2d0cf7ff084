// The ticket's map: CNC's topology laid out by IO, with the incident drawn on it from the fields
// IO keeps on the ticket (protection_path, tunnel, tunnels): IO decides which paths protect the
// traffic, the map only draws them. The first policy is drawn as it always was (green, on the
// link itself); each other policy of a multi-policy incident gets its own colour and dash,
// drawn beside the link (offset), so two policies over one link both stay visible.

import { h, linkKey, svg } from "./dom.js";
import { state } from "./state.js";

const POLICY_STYLES = 5;
// the class of the i-th policy's colour, shared with the policies table's swatches
export const policyClass = (i) => `policy-${i % POLICY_STYLES}`;

function policyLines(ticket, pos) {
  const tunnels = ticket.tunnels || [];
  const lines = [];
  tunnels.forEach((p, i) => {
    if (i === 0 || !p.path) return; // the first is protection_path, drawn on the link itself
    const shift = 7 * (((i - 1) % 3) + 1) * (i % 2 ? 1 : -1);
    for (let k = 0; k + 1 < p.path.length; k++) {
      const a = pos.get(p.path[k]), b = pos.get(p.path[k + 1]);
      if (!a || !b) continue;
      const len = Math.hypot(b.x - a.x, b.y - a.y) || 1;
      const dx = (-(b.y - a.y) / len) * shift, dy = ((b.x - a.x) / len) * shift;
      lines.push(svg("line", {
        class: `policy ${policyClass(i)}`, "data-tunnel": p.tunnel_id, "data-link": `${p.path[k]}-${p.path[k + 1]}`,
        x1: a.x + dx, y1: a.y + dy, x2: b.x + dx, y2: b.y + dy,
      }, svg("title", {}, `${p.path[k]}-${p.path[k + 1]} (protection policy ${p.tunnel_id})`)));
    }
  });
  return lines;
}

export function drawTopology(ticket) {
  const box = h("div", { id: "topology" });
  const topo = state.topology;
  if (!topo) { box.append(h("div", { class: "muted" }, "Loading topology…")); return box; }
  if (!topo.available) {
    box.append(h("div", { class: "notice", id: "topology-unavailable" }, "Topology unavailable: ", topo.error || "CNC did not answer", ". The ticket's links are listed above."));
    return box;
  }
  const degraded = new Set((ticket.degraded_links || []).map(linkKey));
  // the tunnel's newest path once there is a tunnel (green), else the computed alternate (blue)
  const route = ticket.protection_path;
  const edges = new Set(((route && route.links) || []).map(linkKey));
  const onTunnel = Boolean(route && route.kind === "tunnel");
  const protection = onTunnel ? edges : new Set();
  const computedEdges = onTunnel ? new Set() : edges;
  const ends = new Set(route ? [route.head_end, route.end_point].filter(Boolean) : []);
  const tunnels = ticket.tunnels || [];
  for (const p of tunnels.slice(1)) {
    for (const end of [p.head_end || (p.path || [])[0], p.end_point || (p.path || []).slice(-1)[0]]) if (end) ends.add(end);
  }
  const pos = new Map(topo.nodes.map((n) => [n.id, n]));
  const lines = topo.links.map((l) => {
    const a = pos.get(l.source), b = pos.get(l.destination);
    if (!a || !b) return null;
    const key = linkKey(`${l.source}-${l.destination}`);
    const cls = ["link"];
    if (l.oper_status && l.oper_status !== "up") cls.push("down");
    if (computedEdges.has(key)) cls.push("computed");
    if (protection.has(key)) cls.push("protection");
    if (degraded.has(key) || degraded.has(linkKey(l.id))) cls.push("degraded");
    return svg("line", { class: cls.join(" "), x1: a.x, y1: a.y, x2: b.x, y2: b.y, "data-link": l.id },
      svg("title", {}, `${l.id}${cls.includes("degraded") ? " (degraded)" : ""}${cls.includes("protection") ? " (protection tunnel)" : ""} · ${l.delay_ms} ms`));
  });
  const nodes = topo.nodes.map((n) => svg("g", { class: `node${ends.has(n.id) ? " endpoint" : ""}`, "data-node": n.id },
    svg("circle", { cx: n.x, cy: n.y, r: 18 }),
    svg("text", { x: n.x, y: n.y - 26 }, n.id)));
  box.append(svg("svg", { viewBox: `0 0 ${topo.width} ${topo.height}`, role: "img", "aria-label": "network topology" }, lines, policyLines(ticket, pos), nodes));
  box.append(h("div", { class: "legend" },
    h("span", {}, h("i", { style: "background:#ff6b6b" }), ticket.proactive ? "congested link (forecast)" : "degraded link (original path)"),
    protection.size ? h("span", {}, h("i", { style: "background:#46c28e" }), `protection tunnel ${(ticket.tunnel && ticket.tunnel.tunnel_id) || ""}`) : null,
    tunnels.slice(1).map((p, i) => p.path ? h("span", { "data-tunnel": p.tunnel_id }, h("i", { class: `swatch ${policyClass(i + 1)}` }), `protection tunnel ${p.tunnel_id}`) : null),
    computedEdges.size ? h("span", {}, h("i", { style: "background:#4fb3ff" }), "computed alternate path") : null,
    topo.stale ? h("span", { class: "error" }, `stale: ${topo.error}`) : null,
  ));
  return box;
}
