/* A run and its steps as the page shows them: the server's folded state, plus live events.
 *
 * The server folds history into run and step rows (monitor/projector.py) and, for what the rows
 * have no columns for (child runs and their progress, a Celery hand-off, why a step waits, the
 * on_failure run), into `details` (monitor/run_details.py); it hands the page that state with
 * the last seq it folded. Events after it arrive over the run's websocket and are folded here
 * by the same rules, so a page never needs a reload to be right; a test
 * (tests/browser/test_run_state_fold.py) feeds one history to both folds and compares them.
 */

import { isoFromEpoch } from "./text.js";

/** The step status each step event kind leaves behind. */
export const STEP_STATUS_OF = {
  step_started: "running", step_succeeded: "succeeded", step_failed: "failed", step_retrying: "retrying",
  step_waiting: "waiting", step_skipped: "skipped", step_cancelled: "cancelled",
};
/** The run status each run event kind leaves behind. */
export const RUN_STATUS_OF = {
  run_started: "running", run_succeeded: "succeeded", run_failed: "failed", run_cancelled: "cancelled",
  run_retried: "running",
};

/** Children listed by index on the page; a foreach may start thousands (run_details.py). */
export const MAX_LISTED_CHILDREN = 100;
const STOPS_WAITING = new Set(["step_started", "step_succeeded", "step_failed", "step_retrying", "step_skipped", "step_cancelled"]);

export const emptyStepDetails = () => ({ children: null, celery: null, waiting: null, redispatches: 0, picked_up_by: null });

function newStep(stepId, type) {
  return { step_id: stepId, type: type || "", status: "pending", attempts: [], input: null, output: null,
    error: "", port: "", started_at: null, ended_at: null, details: emptyStepDetails() };
}

const childIndex = (data) => (Number.isInteger(data.index) ? data.index : 0);

/** monitor/run_details.py fold_step, line for line. */
function foldDetails(details, event) {
  const data = event.data || {};
  const kind = event.kind;
  if (STOPS_WAITING.has(kind)) details.waiting = null;
  if (kind === "step_started") {
    details.redispatches = 0;
    details.picked_up_by = null;
  } else if (kind === "step_waiting") {
    const { attempt, ...rest } = data; // eslint-disable-line no-unused-vars
    details.waiting = rest;
    if (data.reason === "children") {
      details.children = { workflow: data.workflow === undefined ? null : data.workflow,
        version: data.version === undefined ? null : data.version, total: data.total || 0,
        attempt: event.attempt || 0, started: 0, succeeded: 0, failed: 0, runs: [] };
    } else if (data.reason === "handed_on") {
      details.celery = { task: data.task === undefined ? null : data.task,
        task_id: data.celery_task_id === undefined ? null : data.celery_task_id, attempt: event.attempt || 0 };
    }
  } else if (kind === "child_started" && details.children) {
    details.children.started += 1;
    if (childIndex(data) < MAX_LISTED_CHILDREN) {
      details.children.runs.push({ index: childIndex(data), run_id: data.child_run_id === undefined ? null : data.child_run_id, status: "running" });
    }
  } else if (kind === "child_finished" && details.children) {
    const status = data.status || "failed";
    details.children[status === "succeeded" ? "succeeded" : "failed"] += 1;
    details.children.runs.forEach((child) => { if (child.run_id === data.child_run_id) child.status = status; });
  } else if (kind === "step_redispatched") {
    details.redispatches = data.redispatches || details.redispatches + 1;
  } else if (kind === "step_picked_up") {
    details.picked_up_by = data.worker === undefined ? null : data.worker;
  }
}

function attemptEntry(step, number) {
  let entry = step.attempts.find((item) => item.attempt === number);
  if (!entry) {
    entry = { attempt: number, started_at: null, ended_at: null, error: null, backoff_seconds: null };
    step.attempts.push(entry);
    step.attempts.sort((a, b) => (a.attempt || 0) - (b.attempt || 0));
  }
  return entry;
}

function foldRun(run, event) {
  const data = event.data || {};
  switch (event.kind) {
    case "run_started":
      run.input = data.input != null ? data.input : {};
      run.trigger = data.trigger || {};
      run.started_by = data.started_by || "";
      run.created_at = isoFromEpoch(data.created_at) || isoFromEpoch(event.ts);
      run.started_at = isoFromEpoch(event.ts);
      run.status = "running";
      break;
    case "run_succeeded":
      run.status = "succeeded";
      run.output = data.output === undefined ? null : data.output;
      run.ended_at = isoFromEpoch(event.ts);
      break;
    case "run_failed":
      run.status = "failed";
      run.error = data.error || "";
      run.ended_at = isoFromEpoch(event.ts);
      break;
    case "run_cancelled":
      run.status = "cancelled";
      run.error = `cancelled${data.by ? " by " + data.by : ""}${data.reason ? ": " + data.reason : ""}`;
      run.ended_at = isoFromEpoch(event.ts);
      break;
    case "run_retried":
      run.status = "running";
      run.error = "";
      run.output = null;
      run.ended_at = null;
      break;
    default:
      return false;
  }
  return true;
}

function foldStep(step, event) {
  const data = event.data || {};
  const number = event.attempt || data.attempt || 0;
  if (event.step_type) step.type = event.step_type;
  switch (event.kind) {
    case "step_started": {
      step.status = "running";
      step.input = data.input === undefined ? null : data.input;
      step.error = "";
      step.ended_at = null;
      step.started_at = step.started_at || isoFromEpoch(event.ts);
      attemptEntry(step, number).started_at = isoFromEpoch(event.ts);
      break;
    }
    case "step_succeeded":
    case "step_failed": {
      const entry = attemptEntry(step, number);
      entry.started_at = isoFromEpoch(data.started_at) || entry.started_at;
      entry.ended_at = isoFromEpoch(data.ended_at) || isoFromEpoch(event.ts);
      step.ended_at = entry.ended_at;
      // Engine-run steps report their start and end in one event.
      step.started_at = step.started_at || isoFromEpoch(data.started_at);
      if (event.kind === "step_succeeded") {
        step.status = "succeeded";
        step.output = data.output === undefined ? null : data.output;
        step.port = data.port || "";
        step.error = "";
      } else {
        step.status = "failed";
        step.error = data.error || "";
        entry.error = step.error;
      }
      break;
    }
    case "step_retrying": {
      step.status = "retrying";
      step.error = data.error || "";
      const entry = attemptEntry(step, number);
      entry.ended_at = entry.ended_at || isoFromEpoch(event.ts);
      entry.error = step.error;
      entry.backoff_seconds = data.backoff_seconds === undefined ? null : data.backoff_seconds;
      entry.next_attempt_at = isoFromEpoch(data.next_attempt_at);
      break;
    }
    case "step_waiting":
      step.status = "waiting";
      step.started_at = step.started_at || isoFromEpoch(event.ts);
      break;
    case "step_skipped":
      step.status = "skipped";
      break;
    case "step_cancelled":
      step.status = "cancelled";
      step.ended_at = step.ended_at || isoFromEpoch(event.ts);
      break;
    default:
      break;
  }
}

export class RunState {
  /**
   * run: {status, error, output, last_seq, ...} as the server folded it; steps: the folded step
   * rows; stepIds: the definition's steps, shown as pending until an event says otherwise.
   */
  constructor({ run, steps = [], stepIds = [], stepTypes = {} }) {
    this.run = { status: "pending", error: "", output: null, last_seq: 0, on_failure: null, ...run };
    this.steps = {};
    stepIds.forEach((id) => { this.steps[id] = newStep(id, stepTypes[id]); });
    steps.forEach((row) => {
      this.steps[row.step_id] = { ...newStep(row.step_id, row.type), ...row, attempts: [...(row.attempts || [])],
        details: JSON.parse(JSON.stringify(row.details || emptyStepDetails())) };
    });
  }

  get lastSeq() { return this.run.last_seq || 0; }

  /**
   * Fold one history event in; returns what changed ({run, stepId}) or null for an event the
   * state already holds (at or below the last seq: a replay or a catch-up overlap).
   */
  apply(event) {
    if (event.seq <= this.lastSeq) return null;
    this.run.last_seq = event.seq;
    let run = foldRun(this.run, event);
    if (event.kind === "on_failure_started") {
      const data = event.data || {};
      this.run.on_failure = { workflow: data.workflow === undefined ? null : data.workflow,
        run_id: data.run_id === undefined ? null : data.run_id };
      run = true;
    }
    let stepId = null;
    if (event.step_id) {
      stepId = event.step_id;
      const step = this.steps[stepId] || (this.steps[stepId] = newStep(stepId, event.step_type));
      foldStep(step, event);
      foldDetails(step.details, event);
    }
    return { run, stepId };
  }
}
