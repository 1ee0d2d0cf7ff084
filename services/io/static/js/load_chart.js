// A proactive ticket's chart: the congested link's load as the traffic agent measured it, its
// native load (what it would carry if the moved traffic came back), the forecast (dashed), and
// the threshold, target and release lines the orchestrator decides by. Drawn from the newest
// status_update whose details carry `load` (a LinkLoadForecast: link_id, threshold_pct,
// measured_pct, native_pct, predicted_pct, samples/native/forecast as [[epoch_s, pct]]), with
// details.target_pct and details.release_pct. Inline SVG, no chart library: the page re-renders
// on every update the stream brings, and so does the chart.

import { h, svg } from "./dom.js";

// predicted congestion, not a fault: the ticket list and the ticket's head say so
export const proactiveBadge = () => h("span", {
  class: "badge proactive", title: "Proactive: congestion forecast on the link, acted on before the SLA breaks",
}, "Proactive");

const W = 600, H = 230;
const PAD = { left: 62, right: 92, top: 12, bottom: 34 };

const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);
const points = (series) => (Array.isArray(series) ? series : [])
  .filter((p) => Array.isArray(p) && num(p[0]) !== null && num(p[1]) !== null)
  .map(([t, v]) => [t, v]);
export const pct = (v) => `${Math.round(v)} %`;

// The newest load report of the ticket: [{load, target, release}], one per link (the contract
// sends one LinkLoadForecast; a LinkForecastResult's {links: {...}} is drawn link by link too).
export function latestLoads(events) {
  for (let i = (events || []).length - 1; i >= 0; i--) {
    const e = events[i];
    if (e.task_type !== "status_update") continue;
    const d = (e.payload || {}).details || {};
    const load = d.load;
    if (!load || typeof load !== "object") continue;
    const target = num(d.target_pct), release = num(d.release_pct);
    const loads = load.link_id ? [load]
      : load.links && typeof load.links === "object" ? Object.entries(load.links).map(([id, l]) => ({ link_id: id, ...l })) : [];
    if (loads.length) return loads.map((l) => ({ load: l, target, release }));
  }
  return [];
}

// What the chart says in one line, for screen readers (aria-label, <title>) and as its caption.
export function summary({ load, target, release }) {
  const samples = points(load.samples);
  const now = num(load.measured_pct) ?? (samples.length ? samples[samples.length - 1][1] : null);
  const forecast = points(load.forecast);
  const predicted = num(load.predicted_pct) ?? (forecast.length ? forecast[forecast.length - 1][1] : null);
  const parts = [
    now !== null ? `${pct(now)} now` : "no measurement yet",
    predicted !== null ? `${pct(predicted)} forecast` : null,
    num(load.threshold_pct) !== null ? `threshold ${pct(load.threshold_pct)}` : null,
  ].filter(Boolean);
  const more = [
    // native differs from measured once traffic moved away; the same figure twice says nothing
    num(load.native_pct) !== null && (now === null || Math.round(load.native_pct) !== Math.round(now))
      ? `native ${pct(load.native_pct)}` : null,
    target !== null ? `target ${pct(target)}` : null,
    release !== null ? `release ${pct(release)}` : null,
  ].filter(Boolean);
  return `${load.link_id || "link"}: ${parts.join(", ")}${more.length ? `; ${more.join(", ")}` : ""}`;
}

// a step between time ticks a person reads at a glance: whole seconds, then whole minutes
const STEPS = [5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400];
const niceStep = (span) => STEPS.find((s) => s >= span / 6) || span / 6;

function relative(seconds) {
  const s = Math.round(seconds);
  if (s === 0) return "now";
  const sign = s < 0 ? "−" : "+";
  const a = Math.abs(s);
  return a % 60 === 0 ? `${sign}${a / 60} min` : a >= 60 ? `${sign}${Math.floor(a / 60)}m${a % 60}s` : `${sign}${a} s`;
}

export function loadChart(report) {
  const { load, target, release } = report;
  const samples = points(load.samples);
  const native = points(load.native);
  const forecast = points(load.forecast);
  const threshold = num(load.threshold_pct);
  const label = summary(report);
  const all = [...samples, ...native, ...forecast];
  if (!all.length) {
    return h("div", { class: "load-chart muted", "data-link": load.link_id, "aria-label": label }, `${label} (no samples yet)`);
  }
  const times = all.map((p) => p[0]);
  let t0 = Math.min(...times), t1 = Math.max(...times);
  if (t1 - t0 < 1) { t0 -= 30; t1 += 30; }
  const values = [...all.map((p) => p[1]), threshold, target, release].filter((v) => v !== null);
  const yMax = Math.max(100, Math.ceil((Math.max(...values) + 5) / 20) * 20);
  const x = (t) => PAD.left + ((t - t0) / (t1 - t0)) * (W - PAD.left - PAD.right);
  const y = (v) => PAD.top + (1 - Math.max(0, v) / yMax) * (H - PAD.top - PAD.bottom);
  const xy = (series) => series.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
  const right = W - PAD.right;

  // "now" is the newest measurement; the forecast runs on from the newest native point (the
  // forecast is of native load), else from the newest measurement
  const nowT = samples.length ? samples[samples.length - 1][0] : t0;
  const from = native.length ? native[native.length - 1] : samples.length ? samples[samples.length - 1] : null;
  const ahead = from && forecast.length && forecast[0][0] > from[0] ? [from, ...forecast] : forecast;

  const yTicks = [];
  for (let v = 0; v <= yMax; v += 20) {
    yTicks.push(svg("line", { class: "grid", x1: PAD.left, x2: right, y1: y(v), y2: y(v) }),
      svg("text", { class: "tick y", x: PAD.left - 6, y: y(v) + 4 }, `${v} %`));
  }
  const step = niceStep(t1 - t0);
  const xTicks = [];
  for (let k = Math.ceil((t0 - nowT) / step); nowT + k * step <= t1 + 1e-6; k++) {
    const t = nowT + k * step;
    xTicks.push(svg("line", { class: "tick-mark", x1: x(t), x2: x(t), y1: H - PAD.bottom, y2: H - PAD.bottom + 4 }),
      svg("text", { class: "tick x", x: x(t), y: H - PAD.bottom + 16 }, relative(t - nowT)));
  }
  const level = (cls, v, text) => (v === null ? null : svg("g", { class: `level ${cls}`, "data-pct": v },
    svg("line", { class: cls, "data-pct": v, x1: PAD.left, x2: right, y1: y(v), y2: y(v) }),
    svg("text", { x: right + 6, y: y(v) + 4 }, `${text} ${pct(v)}`)));
  const line = (cls, series) => (series.length ? svg("polyline", { class: cls, points: xy(series), "data-points": series.length }) : null);

  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label, class: "load-chart", "data-link": load.link_id },
    svg("title", {}, label),
    yTicks,
    svg("line", { class: "axis", x1: PAD.left, x2: PAD.left, y1: PAD.top, y2: H - PAD.bottom }),
    svg("line", { class: "axis", x1: PAD.left, x2: right, y1: H - PAD.bottom, y2: H - PAD.bottom }),
    xTicks,
    svg("text", { class: "axis-label", x: 12, y: PAD.top + (H - PAD.top - PAD.bottom) / 2, transform: `rotate(-90 12 ${PAD.top + (H - PAD.top - PAD.bottom) / 2})` }, "load (% of capacity)"),
    svg("text", { class: "axis-label", x: PAD.left + (right - PAD.left) / 2, y: H - 4 }, "time (relative to the newest sample)"),
    samples.length ? svg("line", { class: "now", x1: x(nowT), x2: x(nowT), y1: PAD.top, y2: H - PAD.bottom }) : null,
    level("release", release, "release"),
    level("target", target, "target"),
    level("threshold", threshold, "threshold"),
    line("native", native),
    line("forecast", ahead),
    line("measured", samples),
  );
  const key = (cls, text) => h("span", {}, h("i", { class: `key ${cls}` }), text);
  return h("figure", { class: "load-chart", "data-link": load.link_id },
    h("figcaption", {}, h("b", { class: "mono" }, load.link_id || "link"), " ", label.slice((load.link_id || "link").length + 2),
      num(load.capacity_mbps) !== null ? h("span", { class: "muted" }, ` · capacity ${load.capacity_mbps} Mb/s`) : null),
    chart,
    h("div", { class: "legend" },
      samples.length ? key("measured", "measured") : null,
      native.length ? key("native", "native (if the moved traffic came back)") : null,
      forecast.length ? key("forecast", "forecast") : null,
      threshold !== null ? key("threshold", "threshold") : null,
      target !== null ? key("target", "target") : null,
      release !== null ? key("release", "release") : null));
}

// The card's body: one chart per link of the newest report, or why there is none yet.
export function loadCharts(ticket) {
  const reports = latestLoads(ticket.events);
  if (!reports.length) return h("div", { class: "muted", id: "load-charts" }, "No load forecast reported yet.");
  return h("div", { id: "load-charts" }, reports.map(loadChart));
}

// In the timeline and the decisions a load report is one line, not hundreds of numbers.
// (`loads`, every link's when the orchestrator watches several, likewise.)
export function briefLoad(details) {
  if (!details || typeof details !== "object") return details;
  const target = num(details.target_pct), release = num(details.release_pct);
  const one = (load) => summary({ load, target, release });
  const out = { ...details };
  if (details.load && typeof details.load === "object") {
    const lines = latestLoads([{ task_type: "status_update", payload: { details } }]).map((r) => summary(r));
    out.load = lines.join(" | ") || "reported";
  }
  if (details.loads && typeof details.loads === "object" && !Array.isArray(details.loads)) {
    out.loads = Object.entries(details.loads)
      .map(([id, l]) => (l && typeof l === "object" ? one({ link_id: id, ...l }) : `${id}: —`)).join(" | ");
  }
  return out;
}
