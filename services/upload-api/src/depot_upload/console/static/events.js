// GET /v1/events (docs/api.md): the caller's document events as Server-Sent Events, read with
// fetch so the bearer token travels in the Authorization header (EventSource cannot send
// it). Reconnects by itself with a growing pause; after every (re)connect the caller
// catches up from the documents list, since events sent while away are not replayed.

import { session } from "./api.js";

const QUIET_LIMIT_MS = 45_000; // heartbeats come at least every 15 s

export class EventStream {
  constructor({ onEvent, onOpen, onState }) {
    this.onEvent = onEvent;
    this.onOpen = onOpen;
    this.onState = onState;
    this.controller = null;
    this.running = false;
    this.lastEventId = "";
  }

  start() {
    if (this.running) return;
    this.running = true;
    this.loop();
  }

  stop() {
    this.running = false;
    this.controller?.abort();
  }

  async loop() {
    let pause = 500;
    while (this.running) {
      this.controller = new AbortController();
      let watchdog = null;
      const quiet = () => {
        clearTimeout(watchdog);
        watchdog = setTimeout(() => this.controller.abort(), QUIET_LIMIT_MS);
      };
      try {
        const headers = session.authHeaders({ Accept: "text/event-stream" });
        if (this.lastEventId) headers["Last-Event-ID"] = this.lastEventId;
        const response = await fetch("/v1/events", { headers, signal: this.controller.signal, cache: "no-store" });
        if (response.status === 401) {
          session.onUnauthorized();
          return;
        }
        if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
        this.onState("live");
        pause = 500;
        quiet();
        await this.onOpen();
        await this.read(response.body, quiet);
      } catch {
        // fall through to the pause and reconnect
      } finally {
        clearTimeout(watchdog);
      }
      if (!this.running) return;
      this.onState("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, pause));
      pause = Math.min(pause * 2, 15_000);
    }
  }

  async read(body, quiet) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      quiet();
      buffer += value;
      let end;
      while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
        this.dispatch(block);
      }
    }
  }

  dispatch(block) {
    let type = "message";
    let id = "";
    const data = [];
    for (const line of block.split(/\r?\n/)) {
      if (!line || line.startsWith(":")) continue; // a comment: the heartbeat
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") type = value;
      else if (field === "data") data.push(value);
      else if (field === "id") id = value;
    }
    if (!data.length) return;
    if (id) this.lastEventId = id;
    try {
      this.onEvent(type, JSON.parse(data.join("\n")));
    } catch {
      // not JSON: not an event of ours
    }
  }
}
