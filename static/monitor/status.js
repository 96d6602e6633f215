/* The statuses of runs and steps, shared by the monitor's pages and the designer's test runs.
 *
 * The names are monitor/models.py's RunStatus and StepStatus (tests/test_static_modules.py keeps
 * them equal); the colours match the pills and legend dots in the stylesheets.
 */

export const STEP_STATUSES = ["pending", "running", "waiting", "retrying", "succeeded", "failed", "skipped", "cancelled"];
export const RUN_STATUSES = ["pending", "running", "succeeded", "failed", "cancelled"];

/** A run in one of these is over: nothing more happens unless someone retries it. */
export const RUN_FINISHED = new Set(["succeeded", "failed", "cancelled"]);
/** A step in one of these has started and not ended: its duration still grows. */
export const STEP_ACTIVE = new Set(["running", "waiting", "retrying"]);

/** status -> {fill, stroke}: the soft background and the strong line of a step in that status. */
export const STATUS_COLOURS = {
  pending: { fill: "#f8f9fb", stroke: "#98a2b3" },
  running: { fill: "#e8efff", stroke: "#2563eb" },
  waiting: { fill: "#f3edff", stroke: "#6d28d9" },
  retrying: { fill: "#fef4e6", stroke: "#b54708" },
  succeeded: { fill: "#e8f6ee", stroke: "#15803d" },
  failed: { fill: "#fdeceb", stroke: "#d92d20" },
  skipped: { fill: "#f2f4f7", stroke: "#c0c6d0" },
  cancelled: { fill: "#f4ebea", stroke: "#9a3412" },
};
