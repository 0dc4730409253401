// The platform's REST API (/api/v1) as the signed-in key sees it.

export const MAX_LIMIT = 1000; // the API's largest page (api/paging.py)

/** A refused or failed request: HTTP status (0: no answer) and the problem's detail. */
export class ApiError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
  }
  get unauthorized() {
    return this.status === 401;
  }
  get forbidden() {
    return this.status === 403;
  }
}

export class Api {
  /** `key`: the API key; `onUnauthorized(error)`: called on any 401 (the key stopped working);
   * `onExpiry(at)`: called with the key's expiry (RFC 3339) when the API announces one. */
  constructor(key, onUnauthorized, onExpiry) {
    this.key = key;
    this.onUnauthorized = onUnauthorized;
    this.onExpiry = onExpiry;
  }

  headers(extra = {}) {
    return { Authorization: `Bearer ${this.key}`, Accept: "application/json", ...extra };
  }

  async request(method, path, { params, body } = {}) {
    const url = new URL(`/api/v1${path}`, location.origin);
    for (const [name, value] of Object.entries(params ?? {})) {
      if (value === undefined || value === null) continue;
      for (const one of Array.isArray(value) ? value : [value]) url.searchParams.append(name, one);
    }
    const init = { method, headers: this.headers(), cache: "no-store" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (err) {
      throw new ApiError(0, err.message);
    }
    if (!response.ok) {
      const error = new ApiError(response.status, await problemDetail(response));
      if (error.unauthorized) this.onUnauthorized?.(error);
      throw error;
    }
    const expires = response.headers.get("X-Key-Expires");
    if (expires) this.onExpiry?.(expires);
    return response.json();
  }

  get(path, params) {
    return this.request("GET", path, { params });
  }

  post(path, body) {
    return this.request("POST", path, { body });
  }

  /** Every item of a paginated list (follows next_cursor with the largest page). */
  async all(path, params = {}) {
    const items = [];
    let cursor;
    do {
      const page = await this.get(path, { ...params, limit: MAX_LIMIT, cursor });
      items.push(...page.items);
      cursor = page.next_cursor;
    } while (cursor);
    return items;
  }
}

async function problemDetail(response) {
  try {
    const problem = await response.json();
    return typeof problem.detail === "string" ? problem.detail : response.statusText;
  } catch {
    return response.statusText;
  }
}
