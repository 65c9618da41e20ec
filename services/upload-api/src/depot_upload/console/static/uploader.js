// One file's way into Depot (docs/api.md, presigned flow):
//   hash (hash-wasm, streamed in slices) → POST /v1/uploads: 409 names a duplicate before
//   any byte is sent → PUT the parts straight to S3 (several at once, each with the headers
//   its ticket lists) → POST /v1/uploads/{id}/complete.
// Resuming: the same content gets the same upload back (200), and GET /v1/uploads/{id}
// says which parts S3 already holds, so after a network loss or a page reload (choose the
// file again) only the missing parts travel. Without WebAssembly the file goes through
// POST /v1/documents, retried with the same Idempotency-Key.

import { ApiError, explain, session, upload as api } from "./api.js";

const HASH_SLICE = 4 * 1024 * 1024;
const PARALLEL_PARTS = 4;
const PART_ATTEMPTS = 4;

let nextLocalId = 1;
/** sha256 → the Upload of this tab that sends that content: the same bytes chosen twice go once. */
const sending = new Map();

export class Upload {
  constructor(file, onChange) {
    this.localId = nextLocalId++;
    this.file = file;
    this.onChange = onChange;
    this.state = "waiting"; // waiting | hashing | sending | completing | stored | duplicate | failed | cancelled
    this.message = "";
    this.sha256 = null;
    this.uploadId = null;
    this.document = null;
    this.existingId = null;
    this.idempotencyKey = crypto.randomUUID ? crypto.randomUUID() : String(Date.now() + Math.random());
    this.sentBytes = 0; // bytes in storage or on their way, for the progress bar
    this.resumedBytes = 0; // bytes S3 already held when this attempt began
    this.transferred = 0; // bytes this attempt put on the wire
    this.startedAt = performance.now();
    this.speed = 0;
    this.controller = null;
    this.requests = new Set();
    this.settled = Promise.resolve();
    this.settle = () => {};
  }

  get finished() {
    return ["stored", "duplicate", "failed", "cancelled"].includes(this.state);
  }

  set(state, message = "") {
    this.state = state;
    this.message = message;
    if (this.finished) {
      if (this.sha256 && sending.get(this.sha256) === this && state !== "stored") sending.delete(this.sha256);
      this.settle();
    }
    this.onChange(this);
  }

  cancel() {
    if (this.finished) return;
    this.controller?.abort();
    for (const request of this.requests) request.abort();
    const id = this.uploadId;
    this.set("cancelled", "Cancelled. Nothing was stored.");
    if (id) api(`/v1/uploads/${id}`, { method: "DELETE", what: "Cancel" }).catch(() => {});
  }

  async start() {
    if (!this.finished && this.state !== "waiting") return;
    this.controller = new AbortController();
    this.settled = new Promise((resolve) => (this.settle = resolve));
    this.sentBytes = this.resumedBytes = this.transferred = 0;
    this.startedAt = performance.now();
    const limit = session.config.max_upload_bytes;
    if (limit && this.file.size > limit) {
      this.set("failed", explain(413, {}));
      return;
    }
    try {
      if (globalThis.hashwasm && typeof WebAssembly === "object") {
        await this.presigned();
      } else {
        await this.throughApi();
      }
    } catch (error) {
      if (this.state === "cancelled") return;
      if (error instanceof ApiError && error.code === "duplicate") {
        this.duplicate(error.body.existing_id);
      } else if (error instanceof ApiError) {
        this.set("failed", error.message);
      } else {
        this.set("failed", `The connection was lost (${error.message || error}). Retry to send what is missing.`);
      }
    }
  }

  duplicate(existingId) {
    this.existingId = existingId;
    this.set("duplicate", "Duplicate: you already stored the same content as");
  }

  async hash() {
    if (this.sha256) return this.sha256;
    this.set("hashing", "Checking for duplicates…");
    const hasher = await globalThis.hashwasm.createSHA256();
    hasher.init();
    for (let offset = 0; offset < this.file.size; offset += HASH_SLICE) {
      if (this.controller.signal.aborted) throw new Error("cancelled");
      const slice = this.file.slice(offset, offset + HASH_SLICE);
      hasher.update(new Uint8Array(await slice.arrayBuffer()));
    }
    this.sha256 = hasher.digest("hex");
    return this.sha256;
  }

  async presigned() {
    const sha256 = await this.hash();
    const twin = sending.get(sha256);
    if (twin && twin !== this && !twin.finished) {
      this.set("hashing", `Same content as ${twin.file.name}, chosen earlier: waiting for it…`);
      await twin.settled;
      if (twin.state === "stored") {
        this.duplicate(twin.document.id);
        return;
      }
    }
    sending.set(sha256, this);
    const created = await api("/v1/uploads", {
      method: "POST",
      json: { filename: this.file.name, size_bytes: this.file.size, sha256, content_type: this.file.type || null },
      signal: this.controller.signal,
      what: "Upload",
    });
    let ticket = created.body;
    this.uploadId = ticket.upload_id;
    let received = new Map();
    if (created.status === 200) {
      // an upload of this content is already under way (another tab, before a reload): resume it
      const state = await this.progressOnServer();
      if (state) {
        ticket = { ...ticket, ...state, parts: state.parts ?? ticket.parts };
        received = new Map(state.parts_received.map((part) => [part.part_number, part]));
      }
    }
    const partSize = ticket.part_size;
    const etags = new Map([...received].map(([number, part]) => [number, part.etag]));
    this.resumedBytes = [...received.values()].reduce((sum, part) => sum + (part.size ?? 0), 0);
    this.sentBytes = this.resumedBytes;
    const todo = ticket.parts.filter((part) => !etags.has(part.part_number));
    const resumed = received.size ? ` (resumed: ${received.size} part(s) were already stored)` : "";
    this.set("sending", `Sending${resumed}…`);
    const single = ticket.parts.length === 1 && this.file.size <= partSize;
    const inFlight = new Map();
    const work = async () => {
      while (todo.length) {
        const part = todo.shift();
        const start = (part.part_number - 1) * partSize;
        const body = this.file.slice(start, Math.min(start + partSize, this.file.size));
        etags.set(part.part_number, await this.putPart(part, body, inFlight));
      }
    };
    await Promise.all(Array.from({ length: Math.min(PARALLEL_PARTS, todo.length) }, work));
    this.set("completing", "Verifying the stored bytes…");
    const parts = single ? [] : [...etags].sort((a, b) => a[0] - b[0]).map(([part_number, etag]) => ({ part_number, etag }));
    const done = await api(`/v1/uploads/${this.uploadId}/complete`, {
      method: "POST",
      json: { parts },
      signal: this.controller.signal,
      what: "Upload",
    });
    this.stored(done.body);
  }

  async progressOnServer() {
    try {
      return (await api(`/v1/uploads/${this.uploadId}`, { signal: this.controller.signal })).body;
    } catch (error) {
      if (error instanceof ApiError && (error.status === 404 || error.status === 405)) return null;
      throw error;
    }
  }

  /** PUT one part to its presigned URL; returns its ETag. Retries network errors, refreshes expired URLs. */
  async putPart(part, body, inFlight) {
    let current = part;
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await this.put(current, body, inFlight);
      } catch (error) {
        if (error.status === 412) return ""; // a single PUT that already landed (If-None-Match: *)
        if (this.controller.signal.aborted || attempt >= PART_ATTEMPTS) throw error;
        await new Promise((resolve) => setTimeout(resolve, 500 * 2 ** attempt));
        if (error.status === 403) {
          const state = await this.progressOnServer(); // fresh URLs for the parts not received
          current = state?.parts?.find((p) => p.part_number === part.part_number) ?? current;
        }
      }
    }
  }

  put(part, body, inFlight) {
    return new Promise((resolve, reject) => {
      const request = new XMLHttpRequest();
      this.requests.add(request);
      request.open("PUT", part.url);
      for (const [name, value] of Object.entries(part.headers || {})) request.setRequestHeader(name, value);
      request.upload.onprogress = (event) => {
        inFlight.set(part.part_number, event.loaded);
        this.progress(inFlight);
      };
      request.onload = () => {
        this.requests.delete(request);
        inFlight.delete(part.part_number);
        if (request.status >= 200 && request.status < 300) {
          this.sentBytes += body.size;
          this.transferred += body.size;
          this.progress(inFlight);
          resolve(request.getResponseHeader("ETag") || "");
        } else {
          reject(Object.assign(new Error(`storage answered ${request.status}`), { status: request.status }));
        }
      };
      request.onerror = request.onabort = () => {
        this.requests.delete(request);
        inFlight.delete(part.part_number);
        this.progress(inFlight);
        reject(new Error("network error while sending a part"));
      };
      request.send(body);
    });
  }

  progress(inFlight) {
    const moving = [...inFlight.values()].reduce((sum, loaded) => sum + loaded, 0);
    const seconds = (performance.now() - this.startedAt) / 1000;
    this.speed = seconds > 0 ? (this.transferred + moving) / seconds : 0;
    this.shown = Math.min(this.file.size, this.sentBytes + moving);
    this.onChange(this);
  }

  stored(document) {
    this.document = document;
    this.shown = this.file.size;
    this.set("stored", "Stored.");
  }

  /** The fallback without hashing: the bytes go through the API; a retry replays with the same key. */
  throughApi() {
    this.set("sending", "Sending…");
    return new Promise((resolve, reject) => {
      const request = new XMLHttpRequest();
      this.requests.add(request);
      request.open("POST", "/v1/documents");
      for (const [name, value] of Object.entries(session.authHeaders({ "Idempotency-Key": this.idempotencyKey }))) {
        request.setRequestHeader(name, value);
      }
      request.upload.onprogress = (event) => {
        this.transferred = event.loaded;
        this.progress(new Map());
      };
      request.onload = () => {
        this.requests.delete(request);
        let body = {};
        try {
          body = JSON.parse(request.responseText || "{}");
        } catch {
          body = { message: request.responseText.slice(0, 200) };
        }
        if (request.status === 201 || request.status === 200) {
          this.stored(body);
          resolve();
        } else {
          if (request.status === 401) session.onUnauthorized();
          reject(new ApiError(request.status, body, explain(request.status, body, "Upload")));
        }
      };
      request.onerror = request.onabort = () => {
        this.requests.delete(request);
        reject(new Error("network error"));
      };
      const form = new FormData();
      form.append("file", this.file, this.file.name);
      request.send(form);
    });
  }
}
