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
  if (detail && Array.isArray(detail.problems)) return detail.problems.map((p) => `${p.field}: ${p.message}`).join("; ");
  if (!Array.isArray(detail)) return JSON.stringify(detail);
  return detail.map((e) => {
    if (!e || !e.msg) return JSON.stringify(e);
    const field = (e.loc || []).filter((l) => l !== "body").join(".");
    return field && !e.msg.startsWith(field) ? `${field}: ${e.msg}` : e.msg;
  }).join("; ");
}

// FastAPI's detail, or the orchestrator's {code, message, problems: [{field, message}]} that IO
// passes through (a runbook's validation problems): the text reads it, `detail` keeps it whole.
export class ApiError extends Error {
  constructor(status, detail) {
    super(detail && typeof detail === "object" && !Array.isArray(detail) && detail.message ? detail.message : detailText(detail));
    this.status = status;
    this.detail = detail;
  }
}

// `body` is sent as JSON; `text` is sent as it is, with `contentType` (a runbook in YAML).
export async function api(path, options = {}) {
  const { text, contentType, ...rest } = options;
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  if (text !== undefined) headers["Content-Type"] = contentType || "application/json";
  const response = await fetch(path, {
    ...rest, headers, body: text !== undefined ? text : options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  if (response.status === 401) { unauthorized(); throw new ApiError(401, "sign in"); }
  const answer = await response.text();
  let data = null;
  try { data = answer ? JSON.parse(answer) : null; } catch { data = { detail: answer }; }
  if (!response.ok) throw new ApiError(response.status, (data && data.detail) || response.statusText);
  return data;
}
