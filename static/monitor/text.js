/* Small text helpers shared by the monitor's pages and the designer: HTML escaping, JSON, times,
 * and step errors with their Python traceback folded away. */

export function escapeHtml(value) {
  return String(value == null ? "" : value).replace(/[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

export const prettyJSON = (value) => JSON.stringify(value, null, 2);

/** Epoch seconds (history events) as the ISO text the server's rows use, null stays null. */
export const isoFromEpoch = (epoch) => (epoch == null ? null : new Date(epoch * 1000).toISOString());

const TRACEBACK = "Traceback (most recent call last):";

/**
 * A step or run error split into what happened and, if there is one, the Python traceback
 * that says where: workers send "ExceptionType: message\n\nTraceback (...)".
 */
export function errorParts(text) {
  const error = String(text || "");
  const at = error.indexOf(TRACEBACK);
  if (at < 0) return { summary: error.trim(), traceback: "" };
  const summary = error.slice(0, at).trim();
  const traceback = error.slice(at).trim();
  // Nothing before the traceback: its last line is the exception, which is what happened.
  return { summary: summary || traceback.split("\n").filter(Boolean).slice(-1)[0] || "", traceback };
}

/** One line for tables: the first line of what happened. */
export const errorLine = (text) => errorParts(text).summary.split("\n")[0];

/** An error as HTML: what happened in full, the traceback folded (closed) under it. */
export function errorHtml(text) {
  const { summary, traceback } = errorParts(text);
  if (!summary && !traceback) return "";
  return `<pre class="json error">${escapeHtml(summary)}</pre>`
    + (traceback ? `<details class="traceback"><summary>Traceback</summary><pre class="json error">${escapeHtml(traceback)}</pre></details>` : "");
}
