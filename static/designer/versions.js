/* The version history dialog: every saved version with its status, a diff between two, and
 * opening or restoring an old one (the list and the diff are server-rendered, htmx). */

import { config, $, postJSON, toast } from "./page.js";

export function setupVersions({ model, save }) {
  const button = $("#btn-versions");
  if (!button) return; // a workflow not saved yet has no versions
  const dialog = $("#dlg-versions");
  button.addEventListener("click", () => {
    $("#versions-body").innerHTML = '<span class="spinner"></span> Loading…';
    dialog.showModal();
    htmx.ajax("GET", `${config.urls.base}versions/`, { target: "#versions-body", swap: "innerHTML" });
  });
  $("#versions-close").addEventListener("click", () => dialog.close());
  $("#versions-body").addEventListener("click", async (e) => {
    const open = e.target.closest("[data-open-version]");
    const restore = e.target.closest("[data-restore-version]");
    if (open) {
      if (model.dirty && !window.confirm("Discard your unsaved changes and open this version?")) return;
      save.leave(`${config.urls.base}?version=${open.dataset.openVersion}`);
    } else if (restore) {
      if (model.dirty && !window.confirm("Discard your unsaved changes and restore this version as a new draft?")) return;
      const answer = await postJSON(`${config.urls.base}versions/${restore.dataset.restoreVersion}/restore/`, {});
      if (!answer.ok) { toast(answer.body.detail || "Could not restore", true); return; }
      save.leave(config.urls.base);
    }
  });
}
