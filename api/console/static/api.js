// The platform's REST API (/api/v1) as the signed-in person sees it.

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

const SAFE = new Set(["GET", "HEAD", "OPTIONS"]);

export class Api {
  /** A person's session: the browser sends its HttpOnly cookie by itself; `csrfToken` goes
   * with every request that changes something. `onUnauthorized(error)`: called on any 401
   * (the session ended: signed out elsewhere, idle, disabled). */
  constructor(csrfToken = null, onUnauthorized = null) {
    this.csrfToken = csrfToken;
    this.onUnauthorized = onUnauthorized;
  }

  headers(method, extra = {}) {
    const headers = { Accept: "application/json", ...extra };
    if (this.csrfToken && !SAFE.has(method)) headers["X-CSRF-Token"] = this.csrfToken;
    return headers;
  }

  async request(method, path, { params, body, file, type } = {}) {
    const url = new URL(`/api/v1${path}`, location.origin);
    for (const [name, value] of Object.entries(params ?? {})) {
      if (value === undefined || value === null) continue;
      for (const one of Array.isArray(value) ? value : [value]) url.searchParams.append(name, one);
    }
    const init = { method, headers: this.headers(method), cache: "no-store", credentials: "same-origin" };
    if (file !== undefined) {
      init.headers["Content-Type"] = type;
      init.body = file; // a File or Blob goes as it is: the server decodes it
    } else if (body !== undefined) {
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
    if (response.status === 204) return null;
    return response.json();
  }

  get(path, params) {
    return this.request("GET", path, { params });
  }

  post(path, body) {
    return this.request("POST", path, { body });
  }

  patch(path, body) {
    return this.request("PATCH", path, { body });
  }

  /** A file as the request's body, e.g. a CSV as text/csv (POST /devices/import). */
  upload(path, file, type, params) {
    return this.request("POST", path, { params, file, type });
  }

  delete(path) {
    return this.request("DELETE", path);
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
