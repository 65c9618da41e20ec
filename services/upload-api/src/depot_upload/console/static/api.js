// Depot's public HTTP APIs as the console calls them: the bearer token, the three base
// URLs, and errors turned into sentences a person can act on.

const TOKEN_KEY = "depot.token";

export const session = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  config: { search_url: "", reconciler_url: "", part_size: 8 * 1024 * 1024, max_upload_bytes: 0 },
  onUnauthorized: () => {},

  signIn(token) {
    this.token = token.trim();
    sessionStorage.setItem(TOKEN_KEY, this.token);
  },
  signOut() {
    this.token = "";
    sessionStorage.removeItem(TOKEN_KEY);
  },
  // The token's claims, for display only: the APIs decide what the caller may do.
  claims() {
    try {
      const part = this.token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
    } catch {
      return {};
    }
  },
  authHeaders(extra = {}) {
    return { Authorization: `Bearer ${this.token}`, ...extra };
  },
};

/** An HTTP error of a Depot API, with the body's code and a sentence for people. */
export class ApiError extends Error {
  constructor(status, body, explanation) {
    super(explanation);
    this.status = status;
    this.code = body.error || "";
    this.body = body;
  }
}

export function formatBytes(bytes) {
  if (bytes == null) return "–";
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} ${units[0]}` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

/** A sentence explaining an error response, naming what to do next. */
export function explain(status, body, what = "This request") {
  const code = body.error || "";
  if (status === 401) {
    return "Your sign-in was refused (the token expired or belongs to another Depot). Sign in again with a new link from depot token --owner NAME --link.";
  }
  if (status === 403) return "This needs the admin role; your token does not have it.";
  if (status === 413 || code === "payload_too_large") {
    const limit = session.config.max_upload_bytes;
    return `Too large: Depot accepts files up to ${formatBytes(limit)}.`;
  }
  if (code === "invalid_filename") {
    return "This file name cannot be stored: it must not be empty or contain /, \\, \"..\" or control characters. Rename the file and try again.";
  }
  if (code === "checksum_mismatch") {
    return "The bytes that reached storage do not match the file (it changed while uploading?). They were removed; retry.";
  }
  if (code === "upload_expired" || code === "upload_aborted") {
    return "This upload expired or was cancelled before it finished; retry to start again.";
  }
  if (status === 503) {
    const dependency = body.dependency ? ` (${body.dependency})` : "";
    return `Depot is briefly unavailable${dependency}; retry in a few seconds.`;
  }
  if (status === 404) return `${what}: not found (deleted, or not yours).`;
  return `${what} failed: ${body.message || `HTTP ${status}`}`;
}

async function bodyOf(response) {
  const text = await response.text();
  if (!text) return {};
  try {
    return JSON.parse(text);
  } catch {
    return { message: text.slice(0, 200) };
  }
}

/** fetch with the bearer token; JSON in and out; ApiError for every non-2xx. */
export async function call(base, path, { method = "GET", json, headers = {}, signal, what, accept = [] } = {}) {
  const init = { method, headers: session.authHeaders(headers), signal };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(base + path, init);
  if (response.ok || accept.includes(response.status)) {
    const body = response.status === 204 ? {} : await bodyOf(response);
    return { status: response.status, body, headers: response.headers };
  }
  const body = await bodyOf(response);
  if (response.status === 401) session.onUnauthorized();
  throw new ApiError(response.status, body, explain(response.status, body, what));
}

export const upload = (path, options) => call("", path, options);
export const search = (path, options) => call(session.config.search_url, path, options);
export const reconciler = (path, options) => call(session.config.reconciler_url, path, options);

export async function loadConfig() {
  const response = await fetch("/console/config.json");
  if (response.ok) Object.assign(session.config, await response.json());
}
