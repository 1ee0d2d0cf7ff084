// The ticket's map: CNC's topology laid out by IO, with the incident drawn on it from the fields
// IO keeps on the ticket (protection_path, tunnel): IO decides which path protects the traffic,
// the map only draws it.

import { h, linkKey, svg } from "./dom.js";
import { state } from "./state.js";

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
  box.append(svg("svg", { viewBox: `0 0 ${topo.width} ${topo.height}`, role: "img", "aria-label": "network topology" }, lines, nodes));
  box.append(h("div", { class: "legend" },
    h("span", {}, h("i", { style: "background:#ff6b6b" }), "degraded link (original path)"),
    protection.size ? h("span", {}, h("i", { style: "background:#46c28e" }), `protection tunnel ${(ticket.tunnel && ticket.tunnel.tunnel_id) || ""}`) : null,
    computedEdges.size ? h("span", {}, h("i", { style: "background:#4fb3ff" }), "computed alternate path") : null,
    topo.stale ? h("span", { class: "error" }, `stale: ${topo.error}`) : null,
  ));
  return box;
}
