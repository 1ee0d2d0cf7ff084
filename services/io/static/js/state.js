// Console state shared by every module, the constants of the domain, and the current route.
// A token from the sign-in form lives in sessionStorage (this tab only); a token just issued
// to a user lives only in state.issued until dismissed, and is never stored.

export const TOKEN_KEY = "cxm-io-token";
export const TIERS = ["platinum", "gold", "silver", "bronze"];
export const ROLES = ["viewer", "operator", "admin"];
export const STATUSES = ["new", "detecting", "dampening", "assessing", "computing", "provisioning",
  "steering", "monitoring", "restoring", "waiting_approval", "escalated", "closed"];

// The one mutable state of the page: what the API said last, the filters, the drafts an
// operator is typing. Modules read and write it; only main.js decides when to render.
export const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  me: null,
  config: {},
  tickets: new Map(),
  approvals: new Map(),
  stats: null,
  detail: null,
  topology: null,
  filters: { q: "", status: "open", severity: "", tier: "" },
  approvalFilter: "pending",
  lastEventId: null,
  streamAbort: null,
  users: [],
  issued: null,
  drafts: new Map(),
  runbooks: [],         // the library as GET /api/v1/runbooks answered (latest versions)
  runbook: null,        // the runbook open on #/runbooks/{id}: {view, editing, problems...}
  matches: null,        // the open host ticket's suggestions: {incident_id, matches, ...}
  session: null,        // the open host ticket's runbook session, as last polled
  connections: [],
  credentials: null,    // null when the role may not list them (admins only)
};

export const canDecide = () => state.me && (state.me.role === "operator" || state.me.role === "admin");

export const isAdmin = () => Boolean(state.me && state.me.role === "admin");

export function currentRoute() {
  const hash = location.hash || "#/";
  const m = hash.match(/^#\/ticket\/(.+)$/);
  if (m) return { name: "ticket", id: decodeURIComponent(m[1]) };
  const rb = hash.match(/^#\/runbooks\/(.+)$/);
  if (rb) return { name: "runbook", id: decodeURIComponent(rb[1]) };
  if (hash.startsWith("#/runbooks")) return { name: "runbooks" };
  if (hash.startsWith("#/connections")) return { name: "connections" };
  if (hash.startsWith("#/approvals")) return { name: "approvals" };
  if (hash.startsWith("#/lab")) return { name: "lab" };
  if (hash.startsWith("#/users")) return { name: "users" };
  return { name: "tickets" };
}
