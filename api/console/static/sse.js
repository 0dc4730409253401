// Server-Sent Events read with fetch(): EventSource cannot send an Authorization header.
// The parser follows the WHATWG event-stream rules: lines end in LF, CRLF or CR; "event",
// "data" (joined by LF), "id" and "retry" fields; ":" lines are comments; a blank line
// dispatches. Chunks may split anywhere, even between CR and LF.

export class SseParser {
  /** `onEvent({event, data, id})` for each dispatched event. */
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = "";
    this.skipLf = false;
    this.reset();
    this.lastId = "";
    this.retryMs = null;
  }

  reset() {
    this.event = "";
    this.data = [];
  }

  /** Feed decoded text. */
  push(text) {
    let chunk = text;
    if (this.skipLf && chunk.startsWith("\n")) chunk = chunk.slice(1);
    this.skipLf = false;
    this.buffer += chunk;
    let start = 0;
    for (let i = 0; i < this.buffer.length; i++) {
      const c = this.buffer[i];
      if (c !== "\n" && c !== "\r") continue;
      this.line(this.buffer.slice(start, i));
      if (c === "\r") {
        if (i + 1 === this.buffer.length) this.skipLf = true;
        else if (this.buffer[i + 1] === "\n") i++;
      }
      start = i + 1;
    }
    this.buffer = this.buffer.slice(start);
  }

  line(line) {
    if (line === "") {
      if (this.data.length) {
        this.onEvent({ event: this.event || "message", data: this.data.join("\n"), id: this.lastId });
      }
      this.reset();
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.event = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id" && !value.includes("\0")) this.lastId = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.retryMs = Number(value);
  }
}

/** Read an event-stream response body to its end, calling `onEvent` for each event. */
export async function readEvents(response, onEvent) {
  const parser = new SseParser(onEvent);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      parser.push(value);
    }
  } finally {
    reader.releaseLock();
  }
}
