/* One history event as a sentence for the run page's log: what happened, with links to the runs
 * it names (child runs, the on_failure run). The raw data stays beside it. */

import { errorLine, escapeHtml as esc } from "./text.js";

const clock = (epoch) => (epoch ? new Date(epoch * 1000).toLocaleTimeString() : "");

/** HTML linking run `id` with `urls.run` ("/monitor/runs/RUN_ID/"), its id shortened. */
export function runLink(urls, id, label) {
  if (!id) return "";
  const href = urls.run.replace("RUN_ID", encodeURIComponent(id));
  const text = label || (id.length > 24 ? `${id.slice(0, 10)}…${id.slice(-12)}` : id);
  return `<a href="${esc(href)}" title="${esc(id)}"><code>${esc(text)}</code></a>`;
}

const WAITING = {
  delay: (d) => `waiting until ${esc(clock(d.until))}`,
  signal: (d) => `waiting for signal <code>${esc(d.signal)}</code>${d.until ? ` until ${esc(clock(d.until))}` : ""}`,
  event: (d) => `waiting for a record on <code>${esc(d.topic)}</code> matching <code>${esc(d.correlation)}</code>`
    + (d.until ? ` until ${esc(clock(d.until))}` : ""),
  children: (d) => `waiting for ${esc(d.total)} child run${d.total === 1 ? "" : "s"} of `
    + `<strong>${esc(d.workflow)}</strong>@${esc(d.version == null ? "live" : d.version)}`,
  handed_on: (d) => `handed on to Celery: task <code>${esc(d.task)}</code>, id <code>${esc(d.celery_task_id)}</code>`,
};

/** What the event says, as HTML (empty for kinds that need no sentence beyond their name). */
export function describeEvent(event, urls) {
  const d = event.data || {};
  switch (event.kind) {
    case "run_started": {
      const t = d.trigger || {};
      const by = d.started_by ? ` by ${esc(d.started_by)}` : "";
      if (t.type === "parent") return `started${by} for step <code>${esc(t.step_id)}</code> of ${runLink(urls, t.run_id)}`;
      if (t.type === "on_failure") return `started${by} because ${runLink(urls, t.run_id)} failed`;
      if (t.type === "window") return `started for the window of key <code>${esc(JSON.stringify(t.key))}</code>: ${esc(t.records)} records`;
      return `started${by} (${esc(t.type || "manual")} trigger)`;
    }
    case "run_failed": return `failed: ${esc(errorLine(d.error))}`;
    case "run_cancelled": return `cancelled${d.by ? ` by ${esc(d.by)}` : ""}${d.reason ? `: ${esc(d.reason)}` : ""}`;
    case "run_retried": return `retried from the failed steps${d.by ? ` by ${esc(d.by)}` : ""}`;
    case "on_failure_started": return `on_failure started <strong>${esc(d.workflow)}</strong> ${runLink(urls, d.run_id)}`;
    case "step_waiting": return (WAITING[d.reason] || (() => `waiting (${esc(d.reason)})`))(d);
    case "step_retrying": return `attempt failed, next in ${esc(d.backoff_seconds)} s: ${esc(errorLine(d.error))}`;
    case "step_failed": return `failed: ${esc(errorLine(d.error))}`;
    case "step_succeeded": return d.port && d.port !== "out" ? `succeeded through port <code>${esc(d.port)}</code>` : "succeeded";
    case "step_redispatched": return `dispatched again (${esc(d.reason || "no worker picked it up")})`;
    case "step_picked_up": return `picked up by worker <code>${esc(d.worker)}</code>`;
    case "child_started": return `started child #${esc(d.index)}: ${runLink(urls, d.child_run_id)}`;
    case "child_finished": return `child #${esc(d.index)} ${esc(d.status)}: ${runLink(urls, d.child_run_id)}`;
    case "signal_received": return `signal <code>${esc(d.name)}</code>${d.by ? ` from ${esc(d.by)}` : ""}`
      + (d.matched && d.matched.length ? ` for step <code>${esc(d.matched[0])}</code>` : " (no step waited for it)");
    default: return "";
  }
}
