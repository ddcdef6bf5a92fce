// The gateway's own REST API, called with the master key the operator typed in. The key lives
// in this tab's sessionStorage only (gone when the tab closes; never in a URL or a cookie) and
// is sent as the Authorization header, exactly as curl would: no other way in.

const STORE = "saas-llm-gateway.master-key";

export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : `HTTP ${status}`);
    this.status = status;
    const info = body && Array.isArray(body.details) ? body.details[0] : null;
    this.reason = info && info.reason ? info.reason : "";
  }
}

export function masterKey() {
  return sessionStorage.getItem(STORE) || "";
}

export function signOut() {
  sessionStorage.removeItem(STORE);
}

export async function call(method, path, body, key = masterKey()) {
  const init = {
    method,
    headers: { Authorization: `Bearer ${key}`, Accept: "application/json" },
    cache: "no-store",
    credentials: "omit",
    redirect: "error",
  };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  let data = null;
  try {
    data = await resp.json();
  } catch {
    data = null;
  }
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}

/** Checks a key with an admin-only read; stores it only when it is the master key. */
export async function signIn(key) {
  try {
    await call("GET", "/api/organizations?limit=1", undefined, key);
  } catch (err) {
    if (err instanceof ApiError && err.status === 403) {
      throw new Error("This is a team key: the dashboard needs the admin master key.");
    }
    if (err instanceof ApiError && err.status === 401) {
      throw new Error("This master key was refused.");
    }
    throw err;
  }
  sessionStorage.setItem(STORE, key);
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body ?? {});
export const put = (path, body) => call("PUT", path, body);
export const patch = (path, body) => call("PATCH", path, body);
export const seg = encodeURIComponent;

/** The last `n` UTC months as "YYYY-MM", oldest first. */
export function lastMonths(n, now = new Date()) {
  const out = [];
  for (let i = n - 1; i >= 0; i--) {
    const d = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - i, 1));
    out.push(d.toISOString().slice(0, 7));
  }
  return out;
}
