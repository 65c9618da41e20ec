// The Operations view (admins only): pipeline health and reconciler runs (docs/reconciler.md).
// The reconciler API decides who is an admin: its run list answers 200 to admins, 403 to others.

import { ApiError, reconciler, upload as api } from "./api.js";
import { $, confirmAction, el, fill, seconds, when } from "./dom.js";

const POLL_MS = 700;
let current = null; // the run shown
let polling = null;

export async function probeAdmin() {
  try {
    await reconciler("/v1/reconcile/runs?limit=1");
    return true;
  } catch {
    return false;
  }
}

export function showOperations() {
  loadHealth();
  loadRuns();
}

// --- pipeline health -----------------------------------------------------------------------

const LABELS = {
  outbox_backlog: "Outbox backlog (events not yet in Kafka)",
  oldest_unpublished_age_s: "Oldest unpublished event",
  pending_uploads: "Your uploads in progress",
};

function label(key) {
  return LABELS[key] ?? key.replace(/_/g, " ");
}

/** Any JSON value as definition lists and tables (the health endpoints grow over time). */
function render(value, key = "") {
  if (value == null) return "–";
  if (typeof value === "number" && /_s$|_seconds$|\bage\b/.test(key)) return seconds(value);
  if (typeof value !== "object") return String(value);
  if (Array.isArray(value)) {
    if (!value.length) return "none";
    if (value.every((row) => row && typeof row === "object" && !Array.isArray(row))) {
      const columns = [...new Set(value.flatMap((row) => Object.keys(row)))];
      return el(
        "div",
        { class: "table-wrap" },
        el(
          "table",
          {},
          el("thead", {}, el("tr", {}, columns.map((column) => el("th", { scope: "col" }, label(column))))),
          el("tbody", {}, value.map((row) => el("tr", {}, columns.map((column) => el("td", {}, render(row[column], column)))))),
        ),
      );
    }
    return value.map((item) => render(item)).join(", ");
  }
  return el(
    "dl",
    { class: "fields" },
    Object.entries(value).flatMap(([name, inner]) => [el("dt", {}, label(name)), el("dd", {}, render(inner, name))]),
  );
}

const pick = (rows, columns) =>
  (rows || []).map((row) => Object.fromEntries(Object.entries(columns).map(([key, name]) => [name, row[key]])));

/** GET /v1/admin/pipeline as three tables: outboxes, consumer lag, dead-letter queues. */
function pipeline(health) {
  if (!health.outboxes && !health.consumers && !health.dlqs) return [el("h3", {}, "Pipeline"), render(health)];
  return [
    el("h3", {}, "Outboxes"),
    render(pick(health.outboxes, { schema: "schema", topic: "topic", backlog: "backlog", oldest_unpublished_age_s: "oldest unpublished (age)" })),
    el("h3", {}, "Consumer lag"),
    render(pick(health.consumers, { group: "group", topic: "topic", lag: "lag (events behind)" })),
    el("h3", {}, "Dead-letter queues"),
    render(pick(health.dlqs, { topic: "DLQ topic", messages: "messages", pending: "not redriven" })),
    el("p", { class: "hint" }, `Checked ${when(health.checked_at)}. A dash: that figure could not be read.`),
  ];
}

async function loadHealth() {
  const parts = [];
  try {
    const status = (await api("/v1/status", { what: "Status" })).body;
    parts.push(el("h3", {}, "Upload API outbox"), render(status));
  } catch (error) {
    parts.push(el("p", { class: "error" }, `Upload API status: ${error.message}`));
  }
  try {
    const health = (await api("/v1/admin/pipeline", { what: "Pipeline health" })).body;
    parts.push(...pipeline(health));
  } catch (error) {
    parts.push(el("p", { class: "error" }, error.message));
  }
  fill($("health"), parts);
}

// --- reconciler runs -----------------------------------------------------------------------

async function loadRuns() {
  try {
    const { body } = await reconciler("/v1/reconcile/runs?limit=10", { what: "Runs" });
    $("runs").replaceChildren(
      ...body.items.map((run) =>
        el(
          "li",
          {},
          el(
            "button",
            { type: "button", class: "link", onclick: () => openRun(run.id) },
            `${when(run.started_at)} · ${run.apply ? "apply" : "dry run"} · ${run.status} · ${run.total} finding(s)`,
          ),
        ),
      ),
    );
    if (!body.items.length) $("runs").replaceChildren(el("li", { class: "hint" }, "No runs yet."));
  } catch (error) {
    $("run-error").textContent = error.message;
  }
}

async function startDryRun() {
  $("run-error").textContent = "";
  try {
    const { body } = await reconciler("/v1/reconcile", { method: "POST", json: { apply: false }, what: "Starting a dry run" });
    await openRun(body.run_id);
  } catch (error) {
    $("run-error").textContent =
      error instanceof ApiError && error.code === "run_in_progress" ? "A run is already in progress; wait for it to finish." : error.message;
  }
}

async function openRun(id) {
  clearTimeout(polling);
  try {
    current = (await reconciler(`/v1/reconcile/runs/${id}?limit=200`, { what: "This run" })).body;
  } catch (error) {
    $("run-error").textContent = error.message;
    return;
  }
  renderRun(current);
  if (current.status === "running" || current.status === "applying") {
    polling = setTimeout(() => openRun(id), POLL_MS);
  } else {
    loadRuns();
  }
}

function renderRun(run, safety = null) {
  const counts = Object.entries(run.counts || {});
  const busy = run.status === "running" || run.status === "applying";
  const children = [
    el("h3", { id: "run-title" }, `${run.apply ? "Apply run" : "Dry run"} of ${when(run.started_at)}`),
    el(
      "p",
      { role: "status" },
      busy ? `${run.status === "running" ? "Scanning" : "Applying"}…` : `Status: ${run.status}. ${run.total} finding(s).`,
      run.scanned ? ` Scanned: ${JSON.stringify(run.scanned).replace(/[{}"]/g, "").replace(/,/g, ", ")}.` : "",
    ),
    run.error ? el("p", { class: "error" }, run.error) : null,
  ];
  if (counts.length) {
    children.push(
      el(
        "table",
        { "aria-label": "Findings by class" },
        el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Class"), el("th", { scope: "col" }, "Findings"))),
        el("tbody", {}, counts.map(([name, count]) => el("tr", {}, el("td", {}, name), el("td", {}, String(count))))),
      ),
    );
  }
  if (run.findings?.length) {
    children.push(
      el(
        "ul",
        { class: "findings", "aria-label": "Findings" },
        run.findings.map((finding) =>
          el(
            "li",
            {},
            el("span", { class: "stage" }, finding.check),
            " ",
            el("span", { class: "mono" }, finding.subject),
            finding.action ? ` → ${finding.action}` : "",
            finding.outcome ? ` (${finding.outcome})` : "",
          ),
        ),
      ),
    );
  }
  if (run.status === "planned" && run.total > 0) {
    children.push(el("button", { type: "button", class: "primary", onclick: () => apply(run, false) }, "Apply this plan"));
  }
  if (safety) children.push(safety);
  fill($("run"), children);
}

async function apply(run, force) {
  $("run-error").textContent = "";
  try {
    await reconciler(`/v1/reconcile/runs/${run.id}/apply`, { method: "POST", json: { force }, what: "Applying" });
    await openRun(run.id);
  } catch (error) {
    if (error instanceof ApiError && error.code === "safety_stop") {
      renderRun(run, safetyStop(run, error.body));
    } else {
      $("run-error").textContent = error.message;
    }
  }
}

function safetyStop(run, body) {
  const share = body.max_fraction != null ? `${(body.max_fraction * 100).toFixed(1)} %` : "the configured share";
  return el(
    "div",
    { class: "safety", role: "alert" },
    el("h4", {}, "Safety stop: not applied"),
    el(
      "p",
      {},
      `This plan would act on ${body.actionable ?? "?"} of ${body.population ?? "?"} objects and documents, more than ${share} ` +
        "(DEPOT_RECONCILE_MAX_FRACTION). So many findings at once usually mean something else is wrong — the wrong bucket " +
        "or database, or an outage during the scan — and repairing them would quarantine or reindex a large part of Depot. " +
        "Check the findings first.",
    ),
    el(
      "button",
      {
        type: "button",
        class: "danger",
        onclick: async () => {
          const yes = await confirmAction({
            title: "Apply despite the safety stop?",
            text: `Depot will act on all ${body.actionable ?? ""} findings of this plan, re-checking each one first.`,
            yes: "Apply anyway",
          });
          if (yes) apply(run, true);
        },
      },
      "Force apply…",
    ),
  );
}

$("start-dry-run").addEventListener("click", startDryRun);
$("health-refresh").addEventListener("click", loadHealth);
