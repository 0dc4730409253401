// The live stream (/api/v1/stream): one connection at a time, reconnecting with backoff.

import { readEvents } from "./sse.js";

const BACKOFF_MS = [500, 30_000]; // first and longest wait between attempts

export class LiveStream {
  /**
   * `handlers`: {ready(data, reconnected), alert(event), reading(reading), status(state, waitMs),
   * refused(status, detail), ended(reason)}; state is "connecting", "live" or "waiting".
   */
  constructor(handlers) {
    this.handlers = handlers;
    this.deviceId = null;
    this.controller = null;
    this.generation = 0;
    this.connectedOnce = false;
    this.waitMs = BACKOFF_MS[0];
    this.wake = null;
  }

  /** (Re)connect, streaming `deviceId`'s readings too (null: alerts only). */
  watch(deviceId) {
    if (this.controller && deviceId === this.deviceId) return;
    this.deviceId = deviceId;
    this.stop();
    this.run(++this.generation);
  }

  stop() {
    this.controller?.abort();
    this.controller = null;
    this.wake?.();
  }

  async run(generation) {
    while (generation === this.generation) {
      const controller = new AbortController();
      this.controller = controller;
      this.handlers.status?.("connecting");
      let refused = null;
      try {
        const url = new URL("/api/v1/stream", location.origin);
        if (this.deviceId) url.searchParams.set("device_id", this.deviceId);
        const response = await fetch(url, {
          headers: { Accept: "text/event-stream" }, // the session's cookie goes by itself
          credentials: "same-origin",
          cache: "no-store",
          signal: controller.signal,
        });
        if (response.status === 401 || response.status === 403) {
          refused = { status: response.status, detail: await detailOf(response) };
        } else if (response.ok) {
          await readEvents(response, (event) => this.dispatch(event, generation));
        }
      } catch {
        // aborted, or the network went away: fall through to the backoff
      }
      if (generation !== this.generation) return;
      if (refused) {
        this.handlers.refused?.(refused.status, refused.detail);
        return;
      }
      this.handlers.status?.("waiting", this.waitMs);
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, this.waitMs * (0.8 + Math.random() * 0.4));
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
      this.waitMs = Math.min(this.waitMs * 2, BACKOFF_MS[1]);
    }
  }

  dispatch({ event, data }, generation) {
    if (generation !== this.generation) return;
    let payload;
    try {
      payload = JSON.parse(data);
    } catch {
      return;
    }
    if (event === "ready") {
      this.waitMs = BACKOFF_MS[0];
      this.handlers.status?.("live");
      this.handlers.ready?.(payload, this.connectedOnce);
      this.connectedOnce = true;
    } else if (event === "revoked") {
      // The session ended (signed out elsewhere, idle, disabled): no reconnecting.
      this.generation++;
      this.stop();
      this.handlers.ended?.(payload.reason);
    } else if (event === "alert") this.handlers.alert?.(payload);
    else if (event === "reading") this.handlers.reading?.(payload);
  }
}

async function detailOf(response) {
  try {
    return (await response.json()).detail ?? "";
  } catch {
    return "";
  }
}
