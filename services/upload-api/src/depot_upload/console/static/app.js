// Depot's web console (README, "Web console"). Plain DOM: every string from a user or an API goes in
// through textContent or an attribute, never innerHTML; search snippets are parsed into
// text nodes and <mark> elements.

import { ApiError, formatBytes, loadConfig, search, session, upload as api } from "./api.js";
import { EventStream } from "./events.js";
import { Upload } from "./uploader.js";
import { $, announce, confirmAction, el, fill, seconds, when } from "./dom.js";
import { probeAdmin, showOperations } from "./operations.js";

const PAGE = 20;
const INDEX_LOOKUP = 100; // document ids per GET /v1/index/entries

// --- state ---------------------------------------------------------------------------------

const documents = new Map(); // id → document JSON, as last known
const items = new Map(); // id → <li> of the documents list
const reasons = new Map(); // id → why it failed
const awaiting = new Map(); // id → ms since epoch: stored in this tab's sight, not indexed yet
const deletedHere = new Set();
const indexed = new Set(); // ids the search index holds: from document.indexed, or asked after a list load
const uploads = [];
let nextCursor = null;
let streamState = "connecting";
let stream = null;

/** The search API says which listed documents it holds: the indexed stage after a reload or a reconnect.
 * A stored document it does not hold yet is still in flight (the status line counts it, since its upload). */
async function learnIndexed(docs) {
  const ids = docs.filter((doc) => doc.status === "stored" && !indexed.has(doc.id)).map((doc) => doc.id);
  for (let start = 0; start < ids.length; start += INDEX_LOOKUP) {
    const batch = ids.slice(start, start + INDEX_LOOKUP);
    let held;
    try {
      const query = batch.map((id) => `document_id=${encodeURIComponent(id)}`).join("&");
      held = (await search(`/v1/index/entries?${query}`, { what: "Index state" })).body.items;
    } catch {
      return; // they stay "stored" until document.indexed arrives or the list is loaded again
    }
    for (const entry of held) {
      indexed.add(entry.document_id);
      if (entry.extraction_failure) reasons.set(entry.document_id, `text not extracted: ${entry.extraction_failure}`);
    }
    for (const id of batch) {
      if (indexed.has(id)) awaiting.delete(id);
      else if (!awaiting.has(id) && documents.get(id)?.status === "stored") {
        awaiting.set(id, Date.parse(documents.get(id).created_at) || Date.now());
      }
      refreshItem(id);
    }
  }
}

export function stageOf(doc) {
  if (doc.status === "deleted") return "deleted";
  if (doc.status === "failed") return "failed";
  if (doc.status === "pending") return "uploading";
  if (reasons.has(doc.id)) return "failed";
  return indexed.has(doc.id) ? "indexed" : "stored";
}

// --- sign-in -------------------------------------------------------------------------------

function tokenFromAddress() {
  const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (!match) return false;
  session.signIn(decodeURIComponent(match[1]));
  history.replaceState(null, "", location.pathname + location.search); // the token leaves the address bar
  return true;
}

function showSignIn(message = "") {
  $("sign-in").hidden = false;
  $("documents-view").hidden = $("operations-view").hidden = true;
  $("nav").hidden = $("who").hidden = $("status-line").hidden = true;
  $("sign-in-error").textContent = message;
  $("token-input").value = "";
}

function signOut(message = "") {
  session.signOut();
  stream?.stop();
  for (const item of uploads) item.cancel();
  uploads.length = 0;
  $("uploads").replaceChildren();
  documents.clear();
  items.clear();
  $("documents").replaceChildren();
  $("search-results").replaceChildren();
  $("search-summary").textContent = "";
  $("nav-operations").hidden = true;
  showSignIn(message);
}

async function enter() {
  try {
    await loadDocuments(true);
  } catch (error) {
    signOut(error instanceof ApiError ? error.message : `Depot cannot be reached: ${error.message}`);
    return;
  }
  $("sign-in").hidden = true;
  $("nav").hidden = $("who").hidden = $("status-line").hidden = false;
  $("who-name").textContent = `Signed in as ${session.claims().sub ?? "?"}`;
  showView("documents");
  stream = new EventStream({ onEvent, onOpen: catchUp, onState: (state) => ((streamState = state), statusLine()) });
  stream.start();
  probeAdmin().then((admin) => {
    $("nav-operations").hidden = !admin;
    document.body.dataset.admin = admin ? "yes" : "no"; // the view is settled (tests wait for this)
  });
}

function showView(name) {
  $("documents-view").hidden = name !== "documents";
  $("operations-view").hidden = name !== "operations";
  $("nav-documents").setAttribute("aria-pressed", String(name === "documents"));
  $("nav-operations").setAttribute("aria-pressed", String(name === "operations"));
  if (name === "operations") showOperations();
}

// --- documents list ------------------------------------------------------------------------

async function loadDocuments(reset) {
  const cursor = reset ? "" : `&cursor=${encodeURIComponent(nextCursor)}`;
  const { body } = await api(`/v1/documents?limit=${PAGE}${cursor}`, { what: "Listing documents" });
  if (reset) {
    for (const id of [...items.keys()]) if (!body.items.some((doc) => doc.id === id)) dropItem(id);
  }
  for (const doc of body.items) put(doc, reset ? "merge" : "append");
  learnIndexed(body.items);
  nextCursor = body.next_cursor;
  $("more").hidden = !nextCursor;
  $("documents-empty").hidden = items.size > 0;
}

/** Catch-up after the event stream (re)connects: the first page again, merged. */
async function catchUp() {
  try {
    const { body } = await api(`/v1/documents?limit=${PAGE}`, { what: "Listing documents" });
    const oldest = body.items.at(-1)?.created_at;
    for (const [id, doc] of documents) {
      const inRange = !body.next_cursor || (oldest && doc.created_at >= oldest);
      if (inRange && items.has(id) && !body.items.some((fresh) => fresh.id === id)) dropItem(id);
    }
    for (const doc of [...body.items].reverse()) put(doc, "merge");
    $("documents-empty").hidden = items.size > 0;
    await learnIndexed(body.items);
  } catch {
    // the next reconnect tries again
  }
  statusLine();
}

function put(doc, where) {
  const known = documents.get(doc.id);
  documents.set(doc.id, { ...known, ...doc });
  if (doc.status === "stored" && !indexed.has(doc.id) && !awaiting.has(doc.id) && where === "live") {
    awaiting.set(doc.id, Date.parse(doc.created_at) || Date.now());
  }
  let item = items.get(doc.id);
  if (!item) {
    item = el("li", { class: "document", "data-id": doc.id });
    items.set(doc.id, item);
    const list = $("documents");
    if (where === "append") list.append(item);
    else insertByDate(list, item, doc.created_at);
  }
  renderItem(item, documents.get(doc.id));
  $("documents-empty").hidden = true;
}

function insertByDate(list, item, createdAt) {
  for (const other of list.children) {
    const otherDoc = documents.get(other.dataset.id);
    if (otherDoc && otherDoc.created_at < createdAt) {
      list.insertBefore(item, other);
      return;
    }
  }
  if (!nextCursor) list.append(item);
  else list.insertBefore(item, list.firstChild);
}

function renderItem(item, doc) {
  const stage = stageOf(doc);
  const name = doc.filename;
  const reason = reasons.get(doc.id);
  const gone = stage === "deleted";
  fill(
    item,
    el(
      "div",
      { class: "doc-head" },
      el("span", { class: "doc-name" }, name),
      el("span", { class: `stage stage-${stage}` }, stage),
    ),
    el(
      "div",
      { class: "doc-meta" },
      `${formatBytes(doc.size_bytes)} · ${when(doc.created_at)}`,
      reason ? el("span", { class: "reason" }, ` · ${reason}`) : null,
      stage === "uploading" ? el("span", {}, " · interrupted? choose the same file again to resume") : null,
    ),
    gone
      ? null
      : el(
          "div",
          { class: "actions" },
          el("button", { type: "button", "aria-label": `Details of ${name}`, onclick: () => openDetails(doc.id) }, "Details"),
          stage === "uploading"
            ? null
            : el("button", { type: "button", "aria-label": `Download ${name}`, onclick: () => download(doc.id) }, "Download"),
          el(
            "button",
            { type: "button", class: "danger", "aria-label": `Delete ${name}`, onclick: () => remove(doc.id) },
            "Delete",
          ),
        ),
  );
}

function dropItem(id) {
  items.get(id)?.remove();
  items.delete(id);
  awaiting.delete(id);
}

function refreshItem(id) {
  const item = items.get(id);
  const doc = documents.get(id);
  if (item && doc) renderItem(item, doc);
  for (const upload of uploads) if (upload.document?.id === id) renderUpload(upload);
  statusLine();
}

// --- live stages ---------------------------------------------------------------------------

async function onEvent(type, event) {
  const data = event.data || {};
  const id = data.document_id;
  if (!id) return;
  const kind = type !== "message" ? type : event.type;
  const doc = documents.get(id);
  if (kind === "document.stored") {
    if (!indexed.has(id)) awaiting.set(id, doc ? Date.parse(doc.created_at) : Date.now());
    if (doc) {
      doc.status = "stored";
    } else if (!deletedHere.has(id)) {
      try {
        put((await api(`/v1/documents/${id}`)).body, "live");
      } catch {
        return;
      }
    }
  } else if (kind === "document.indexed") {
    indexed.add(id);
    awaiting.delete(id);
  } else if (kind === "document.index_failed" || kind === "document.failed") {
    reasons.set(id, kind === "document.index_failed" ? `text not extracted: ${data.reason}` : data.reason || "failed");
    awaiting.delete(id);
    if (doc && kind === "document.failed") doc.status = "failed";
  } else if (kind === "document.deleted") {
    awaiting.delete(id);
    if (doc) doc.status = "deleted";
  } else {
    return;
  }
  refreshItem(id);
}

function statusLine() {
  const flying = new Map();
  for (const upload of uploads) {
    if (!upload.finished) flying.set(upload.uploadId || `local-${upload.localId}`, upload.wallStart);
  }
  for (const [id, doc] of documents) {
    if (doc.status === "pending" && !flying.has(id)) flying.set(id, Date.parse(doc.created_at));
  }
  for (const [id, since] of awaiting) if (!flying.has(id)) flying.set(id, since);
  const live = { live: "Live", connecting: "Connecting to live updates…" }[streamState] ?? "Reconnecting to live updates…";
  let text = `${live} · Nothing of yours in flight.`;
  if (flying.size) {
    const oldest = Math.max(0, (Date.now() - Math.min(...flying.values())) / 1000);
    text = `${live} · ${flying.size} of your documents in flight; the oldest has waited ${seconds(oldest)}.`;
  }
  $("status-line").textContent = text;
}

// --- uploads -------------------------------------------------------------------------------

function addFiles(files) {
  for (const file of files) {
    const item = new Upload(file, renderUpload);
    item.wallStart = Date.now();
    item.element = el("li", { class: "upload" });
    uploads.push(item);
    $("uploads").prepend(item.element);
    renderUpload(item);
    item.start();
  }
}

const uploadOutcome = { stored: "ok", duplicate: "warn", failed: "error", cancelled: "warn" };

function renderUpload(item) {
  const file = item.file;
  const doc = item.document && documents.get(item.document.id);
  const stage = doc ? stageOf(doc) : item.state === "stored" ? "stored" : "uploading";
  const shown = item.shown ?? 0;
  const progressText =
    item.state === "sending"
      ? `${formatBytes(shown)} of ${formatBytes(file.size)} · ${formatBytes(Math.round(item.speed))}/s`
      : formatBytes(file.size);
  const message = el("p", { class: `upload-message ${uploadOutcome[item.state] ?? ""}` }, item.message);
  if (item.state === "duplicate") {
    const existing = documents.get(item.existingId);
    message.append(
      " ",
      el(
        "a",
        { href: `#document-${item.existingId}`, onclick: (event) => (event.preventDefault(), openDetails(item.existingId)) },
        existing ? existing.filename : "the existing document",
      ),
      // without WebAssembly nothing is hashed here: the API names the duplicate after the bytes went
      item.sha256 ? ". Nothing was sent." : ". It was sent (this browser cannot check first) but not stored twice.",
    );
    if (!existing && !item.lookingUp) {
      item.lookingUp = true;
      api(`/v1/documents/${item.existingId}`)
        .then(({ body }) => (documents.set(body.id, body), renderUpload(item)))
        .catch(() => {});
    }
  }
  const active = !item.finished;
  fill(
    item.element,
    el(
      "div",
      { class: "doc-head" },
      el("span", { class: "doc-name" }, file.name),
      item.state === "duplicate" || item.state === "failed" || item.state === "cancelled"
        ? el("span", { class: `stage stage-${item.state === "duplicate" ? "duplicate" : "failed"}` }, item.state)
        : el("span", { class: `stage stage-${stage}` }, stage),
    ),
    item.state === "duplicate"
      ? null
      : el("progress", { max: file.size || 1, value: item.state === "stored" ? file.size || 1 : shown, "aria-label": `Progress of ${file.name}` }),
    el("div", { class: "doc-meta" }, progressText),
    message,
    el(
      "div",
      { class: "actions" },
      active ? el("button", { type: "button", "aria-label": `Cancel ${file.name}`, onclick: () => item.cancel() }, "Cancel") : null,
      item.state === "failed" || item.state === "cancelled"
        ? el("button", { type: "button", "aria-label": `Retry ${file.name}`, onclick: () => item.start() }, "Retry")
        : null,
    ),
  );
  if (item.state !== item.announced && item.finished) {
    item.announced = item.state;
    announce(`${file.name}: ${item.message}`);
    if (item.state === "stored") {
      if (!indexed.has(item.document.id)) awaiting.set(item.document.id, item.wallStart);
      put(item.document, "live");
    }
  }
  statusLine();
}

// --- search --------------------------------------------------------------------------------

/** The search API's snippet (HTML-escaped text with <b> marks) as text nodes and <mark>s. */
export function snippetNodes(snippet) {
  const decode = (text) =>
    text.replace(/&(amp|lt|gt|quot|#39|#x27);/g, (_, name) => ({ amp: "&", lt: "<", gt: ">", quot: '"', "#39": "'", "#x27": "'" })[name]);
  const nodes = [];
  let marked = false;
  for (const token of snippet.split(/(<b>|<\/b>)/)) {
    if (token === "<b>") marked = true;
    else if (token === "</b>") marked = false;
    else if (token) nodes.push(marked ? el("mark", {}, decode(token)) : document.createTextNode(decode(token)));
  }
  return nodes;
}

async function runSearch(event) {
  event?.preventDefault();
  const query = $("search-input").value.trim();
  $("search-clear").hidden = !query;
  if (!query) return clearSearch();
  $("search-summary").textContent = "Searching…";
  try {
    const { body } = await search(`/v1/search?q=${encodeURIComponent(query)}&limit=20`, { what: "Search" });
    const hits = body.hits.filter((hit) => !deletedHere.has(hit.document_id));
    $("search-summary").textContent = `${hits.length}${body.next_cursor ? "+" : ""} result(s) for “${query}”`;
    $("search-results").replaceChildren(
      ...hits.map((hit) =>
        el(
          "li",
          { class: "hit", "data-id": hit.document_id },
          el("button", { type: "button", class: "link", "aria-label": `Details of ${hit.filename}`, onclick: () => openDetails(hit.document_id) }, hit.filename),
          el("p", { class: "snippet" }, snippetNodes(hit.snippet)),
        ),
      ),
    );
  } catch (error) {
    $("search-summary").textContent = error instanceof ApiError ? error.message : `Search is unreachable: ${error.message}`;
  }
}

function clearSearch() {
  $("search-input").value = "";
  $("search-results").replaceChildren();
  $("search-summary").textContent = "";
  $("search-clear").hidden = true;
}

// --- details, download, delete -------------------------------------------------------------

async function openDetails(id) {
  let doc;
  try {
    doc = (await api(`/v1/documents/${id}`, { what: "This document" })).body;
  } catch (error) {
    announce(error.message);
    if (error instanceof ApiError && error.status === 404) dropItem(id);
    return;
  }
  documents.set(id, { ...documents.get(id), ...doc });
  const fields = [
    ["Stage", stageOf(doc)],
    ["Size", doc.size_bytes == null ? "–" : `${formatBytes(doc.size_bytes)} (${doc.size_bytes.toLocaleString()} bytes)`],
    ["Type", doc.content_type],
    ["SHA-256", doc.sha256 ?? "–"],
    ["Uploaded", when(doc.created_at)],
    ["Updated", when(doc.updated_at)],
    ["Id", doc.id],
  ];
  $("details-title").textContent = doc.filename;
  $("details-fields").replaceChildren(...fields.flatMap(([name, value]) => [el("dt", {}, name), el("dd", { class: name === "SHA-256" || name === "Id" ? "mono" : "" }, value)]));
  $("details-download").onclick = () => download(id);
  $("details-download").hidden = doc.status !== "stored";
  $("details").showModal();
}

async function download(id) {
  const doc = documents.get(id);
  try {
    const response = await fetch(`/v1/documents/${id}/content`, { headers: session.authHeaders() });
    if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => ({})), "Download failed");
    const url = URL.createObjectURL(await response.blob());
    const link = el("a", { href: url, download: doc?.filename || "document" });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (error) {
    announce(`Download failed: ${error.message}`);
  }
}

async function remove(id) {
  const doc = documents.get(id);
  const name = doc?.filename ?? "this document";
  const yes = await confirmAction({
    title: `Delete ${name}?`,
    text: "It stops being readable and searchable at once. This cannot be undone from the console.",
    yes: "Delete",
  });
  if (!yes) return;
  try {
    await api(`/v1/documents/${id}`, { method: "DELETE", what: "Delete" });
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 404)) {
      announce(error.message);
      return;
    }
  }
  deletedHere.add(id);
  if (doc) doc.status = "deleted";
  dropItem(id);
  for (const hit of $("search-results").querySelectorAll("li")) if (hit.dataset.id === id) hit.remove();
  $("documents-empty").hidden = items.size > 0;
  announce(`${name} deleted.`);
  statusLine();
}

// --- wiring --------------------------------------------------------------------------------

function wire() {
  session.onUnauthorized = () => signOut("Your sign-in expired or was refused. Sign in again.");
  $("sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    session.signIn($("token-input").value);
    enter();
  });
  $("sign-out").addEventListener("click", () => signOut("Signed out. The token is forgotten."));
  $("nav-documents").addEventListener("click", () => showView("documents"));
  $("nav-operations").addEventListener("click", () => showView("operations"));
  $("file-input").addEventListener("change", (event) => {
    addFiles([...event.target.files]);
    event.target.value = "";
  });
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => (event.preventDefault(), zone.classList.add("over")));
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    addFiles([...event.dataTransfer.files]);
  });
  $("search-form").addEventListener("submit", runSearch);
  $("search-clear").addEventListener("click", clearSearch);
  $("refresh").addEventListener("click", () => loadDocuments(true).catch((error) => announce(error.message)));
  $("more").addEventListener("click", () => loadDocuments(false).catch((error) => announce(error.message)));
  $("details-close").addEventListener("click", () => $("details").close());
  window.addEventListener("hashchange", () => tokenFromAddress() && enter());
  setInterval(statusLine, 1000);
}

async function main() {
  wire();
  await loadConfig();
  const limit = session.config.max_upload_bytes;
  $("upload-hint").textContent = `Up to ${formatBytes(limit)} per file. Files above ${formatBytes(session.config.part_size)} travel in parts and resume where they stopped.`;
  tokenFromAddress();
  if (session.token) enter();
  else showSignIn();
}

main();
