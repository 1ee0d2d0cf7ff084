// Building the page. Everything from the API reaches it through h() (text nodes and
// setAttribute), never innerHTML.

import { state } from "./state.js";

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// What an operator types or ticks survives the live re-renders (an approval arriving, one
// decided elsewhere): the value lives in state.drafts under a key, not only in the element.
export function draftInput(key, attrs) {
  const el = h("input", { ...attrs, "data-draft": key });
  if (el.type === "checkbox") {
    el.checked = state.drafts.get(key) === true;
    el.addEventListener("change", () => state.drafts.set(key, el.checked));
  } else {
    el.value = state.drafts.get(key) || "";
    el.addEventListener("input", () => state.drafts.set(key, el.value));
  }
  return el;
}

export function replaceKeepingFocus(container, ...children) {
  const key = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.draft : null;
  container.replaceChildren(...children);
  const again = key ? [...container.querySelectorAll("[data-draft]")].find((el) => el.dataset.draft === key) : null;
  if (again) {
    again.focus();
    if (again.type !== "checkbox") again.setSelectionRange(again.value.length, again.value.length);
  }
}

export function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) el.setAttribute(k, v);
  for (const c of children.flat()) if (c) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

export function age(iso) {
  if (!iso) return "";
  let s = Math.max(0, Math.floor((Date.now() - Date.parse(iso)) / 1000));
  const d = Math.floor(s / 86400); s %= 86400;
  const hh = Math.floor(s / 3600); s %= 3600;
  const m = Math.floor(s / 60); s %= 60;
  if (d) return `${d}d ${hh}h`;
  if (hh) return `${hh}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

export const time = (iso) => (iso ? new Date(iso).toLocaleString() : "");

export const badge = (cls, text) => h("span", { class: `badge ${cls}` }, text);

export const sev = (s) => badge(`sev-${s || "unknown"}`, s || "unknown");

export const st = (s) => badge(`st-${s}`, (s || "").replace("_", " "));

export const linkKey = (l) => String(l).split("-").sort().join("-");

export function kv(obj) {
  const entries = Object.entries(obj || {}).filter(([, v]) => v !== null && v !== undefined && v !== "");
  if (!entries.length) return null;
  return h("dl", { class: "kv" }, entries.map(([k, v]) => [
    h("dt", {}, k.replaceAll("_", " ")),
    h("dd", { class: typeof v === "object" ? "mono" : "" }, showValue(k, v)),
  ]));
}

export function showValue(key, v) {
  if (Array.isArray(v) && v.every((x) => typeof x !== "object")) return v.join(key === "path" ? " → " : ", ");
  if (v && typeof v === "object" && !Array.isArray(v) && Object.values(v).every((x) => typeof x !== "object")) {
    return Object.entries(v).map(([k, x]) => `${k} ${x}`).join(" · ");
  }
  return typeof v === "object" ? JSON.stringify(v) : String(v);
}

export function toast(message, bad = false) {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.className = bad ? "toast bad" : "toast";
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, bad ? 8000 : 4000);
}
