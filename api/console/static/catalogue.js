// The console's reference data (/console/catalogue.json): the kinds with their metrics and
// attributes, the city and its districts, each with titles in both languages. The platform
// builds it from its live thing model, so it is asked again as often as the platform takes
// kind changes (its refresh_s: CITYIOT_REGISTRY_REFRESH_S, at least a second) and whenever
// the console meets a kind or metric it has not heard of: a kind added while the platform
// runs shows with its titles, with no reload. An unchanged answer is a 304 (its ETag).

export const REFERENCE_URL = "/console/catalogue.json";
const DEFAULT_REFRESH_S = 60; // until the platform has said its period
const MIN_REFRESH_S = 1;

const EMPTY = Object.freeze({ city: null, districts: {}, kinds: {}, refreshS: null });

export class Catalogue {
  constructor() {
    this.data = EMPTY;
    this.etag = null;
    this.asked = new Set(); // names met unknown since the last look: each asks once
    this.pending = null;
    this.again = false; // asked while a look was under way: look once more after it
    this.timer = null;
    this.period = null; // the interval's milliseconds while looking periodically
    this.listeners = new Set();
  }

  /** Milliseconds between looks: the platform's refresh_s, at least a second. */
  get periodMs() {
    return Math.max(MIN_REFRESH_S, this.data.refreshS ?? DEFAULT_REFRESH_S) * 1000;
  }

  /** Fetch the reference data; true when it changed. A failure keeps what is known. */
  async load() {
    let response;
    try {
      // no-cache: the browser revalidates with the ETag, so an unchanged answer is a 304.
      response = await fetch(REFERENCE_URL, { cache: "no-cache" });
      if (!response.ok) return false;
      const etag = response.headers.get("etag");
      if (etag && etag === this.etag) return false;
      this.data = normalise(await response.json());
      this.etag = etag;
    } catch {
      return false; // names fall back to ids until the next look
    }
    if (this.timer !== null && this.period !== this.periodMs) this.start(); // a new period
    for (const listener of this.listeners) listener();
    return true;
  }

  /** Look again now (one request at a time; one more after it when asked meanwhile). */
  refresh() {
    if (this.pending) {
      this.again = true;
      return this.pending;
    }
    this.pending = this.load().finally(() => {
      this.pending = null;
      if (this.again) {
        this.again = false;
        this.refresh();
      }
    });
    return this.pending;
  }

  /** Look again every refresh_s, for kinds changed while the console stays open. */
  start() {
    clearInterval(this.timer);
    this.period = this.periodMs;
    this.timer = setInterval(() => {
      this.asked.clear();
      this.refresh();
    }, this.period);
  }

  /** Something named `what` is not in the reference data: look again, once per name. */
  miss(what) {
    if (this.asked.has(what)) return;
    this.asked.add(what);
    queueMicrotask(() => this.refresh());
  }

  onChange(listener) {
    this.listeners.add(listener);
  }

  get city() {
    return this.data.city;
  }

  /** The kind `id` ({title, metrics, attributes, ...}), or undefined (and a look again). */
  kind(id) {
    const kind = this.data.kinds[id];
    if (!kind && id) this.miss(`kind:${id}`);
    return kind;
  }

  /** The metric `name` of kind `kindId` ({name, type, unit, title, range|values}), or undefined. */
  metric(kindId, name) {
    const kind = this.kind(kindId);
    const metric = kind?.metricsByName.get(name);
    if (kind && !metric) this.miss(`metric:${kindId}.${name}`);
    return metric;
  }

  attribute(kindId, name) {
    const kind = this.kind(kindId);
    const attribute = kind?.attributesByName.get(name);
    if (kind && !attribute) this.miss(`attribute:${kindId}.${name}`);
    return attribute;
  }

  district(id) {
    const district = this.data.districts[id];
    if (!district && id) this.miss(`district:${id}`);
    return district;
  }

  /** Kind ids, in the platform's order. */
  kindIds() {
    return Object.keys(this.data.kinds);
  }
}

function normalise(raw) {
  const kinds = {};
  for (const [id, kind] of Object.entries(raw?.kinds ?? {})) {
    const metrics = kind.metrics ?? [];
    const attributes = kind.attributes ?? [];
    kinds[id] = {
      ...kind,
      id,
      metrics,
      attributes,
      metricsByName: new Map(metrics.map((m) => [m.name, m])),
      attributesByName: new Map(attributes.map((a) => [a.name, a])),
    };
  }
  const refreshS = Number.isFinite(raw?.refresh_s) ? raw.refresh_s : null;
  return { city: raw?.city ?? null, districts: raw?.districts ?? {}, kinds, refreshS };
}
