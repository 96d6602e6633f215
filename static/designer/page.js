/* What the editor page gives the editor's modules: its data (config, step types, the initial
 * definition, all rendered by the server as JSON), DOM helpers, the toast, and JSON requests
 * with the page's CSRF token. */

performance.mark("sluice:modules-start"); // for the benchmark: when the editor's modules begin to run
const readJSON = (id) => JSON.parse(document.getElementById(id).textContent);

export const config = readJSON("editor-config");
export const stepTypes = readJSON("step-types");
export const initialDefinition = readJSON("initial-definition");
export const typeByName = Object.fromEntries(stepTypes.map((t) => [t.type, t]));
export const STATIC = config.staticUrl || "/static/";
export const csrf = JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"];

export const $ = (selector) => document.querySelector(selector);
export const $$ = (selector) => Array.from(document.querySelectorAll(selector));
export { escapeHtml } from "../monitor/text.js";

let toastTimer = null;
/** A short message over the canvas (bad: in red); it goes away by itself. */
export function toast(message, bad = false) {
  const box = $("#canvas-toast");
  box.textContent = message;
  box.classList.toggle("bad", bad);
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.hidden = true; }, 4000);
}

/** POST a JSON body; {ok, status, body}. A lost session says so instead of parsing the login page. */
export async function postJSON(url, body) {
  const response = await fetch(url, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrf, Accept: "application/json" },
    body: JSON.stringify(body),
  });
  if (response.redirected && new URL(response.url).pathname.startsWith("/accounts/login")) {
    return { ok: false, status: 401, body: errorBody("You were signed out. Export your changes, sign in again in another tab, then retry.", "not_authenticated") };
  }
  let data = {};
  try { data = await response.json(); } catch (err) { data = errorBody(`The server answered ${response.status}`); }
  return { ok: response.ok, status: response.status, body: data };
}

/** An error answer made in the browser, in the server's shape: {detail, code, errors} (designer/errors.py). */
export function errorBody(detail, code = "error") {
  return { detail, code, errors: [{ path: "", step_id: null, code, message: detail, severity: "error" }] };
}

/** The error of an answer ({detail, code, errors}, as the REST API answers) as text: the
 * sentence, then the first problems (those that add to it), with where they are. */
export function problemText(body) {
  const list = (body.errors || []).filter((p) => p.path || p.step_id || p.message !== body.detail).slice(0, 6)
    .map((p) => `${p.step_id || p.path || "workflow"}: ${p.message}`);
  return [body.detail, ...list].filter(Boolean).join("\n");
}
