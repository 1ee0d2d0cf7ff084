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
};

export const canDecide = () => state.me && (state.me.role === "operator" || state.me.role === "admin");

export const isAdmin = () => Boolean(state.me && state.me.role === "admin");

export function currentRoute() {
  const hash = location.hash || "#/";
  const m = hash.match(/^#\/ticket\/(.+)$/);
  if (m) return { name: "ticket", id: decodeURIComponent(m[1]) };
  if (hash.startsWith("#/approvals")) return { name: "approvals" };
  if (hash.startsWith("#/lab")) return { name: "lab" };
  if (hash.startsWith("#/users")) return { name: "users" };
  return { name: "tickets" };
}
