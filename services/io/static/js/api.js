// The REST API: one fetch wrapper that sends the token, turns FastAPI's errors into readable
// text, and hands a 401 to whoever signs the user in (main.js, through onUnauthorized).

import { state } from "./state.js";

let unauthorizedHandler = () => {};

// main.js shows the sign-in form; kept as a hook so this module does not depend on the page.
export function onUnauthorized(handler) { unauthorizedHandler = handler; }
export function unauthorized() { unauthorizedHandler(); }

// FastAPI's validation errors are a list of {loc, msg}: "field: message" reads better.
export function detailText(detail) {
  if (typeof detail === "string") return detail;
  if (!Array.isArray(detail)) return JSON.stringify(detail);
  return detail.map((e) => {
    if (!e || !e.msg) return JSON.stringify(e);
    const field = (e.loc || []).filter((l) => l !== "body").join(".");
    return field && !e.msg.startsWith(field) ? `${field}: ${e.msg}` : e.msg;
  }).join("; ");
}

export class ApiError extends Error {
  constructor(status, detail) { super(detailText(detail)); this.status = status; }
}

export async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    ...options, headers, body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  if (response.status === 401) { unauthorized(); throw new ApiError(401, "sign in"); }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { detail: text }; }
  if (!response.ok) throw new ApiError(response.status, (data && data.detail) || response.statusText);
  return data;
}
