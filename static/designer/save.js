/* Saving and publishing: the title bar (name, slug, version pills, the unsaved-changes flag),
 * the save dialog with its stale-save conflict, Ctrl+S from anywhere on the page, publishing,
 * and the guard against leaving with unsaved changes. */

import { config, $, postJSON, problemText, toast } from "./page.js";

const slugify = (text) => text.toLowerCase().normalize("NFKD").replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 100);

export function setupSave({ canvas, model, code, webhook }) {
  let version = config.version; // the saved version this editor holds
  let live = config.live;

  // ---- title bar -----------------------------------------------------------------------------
  const nameInput = $("#wf-name");
  const slugInput = $("#wf-slug");
  nameInput.addEventListener("input", (e) => model.setMeta("name", e.target.value));
  if (slugInput) {
    // On a new workflow the slug follows the name until the author types one of their own.
    let slugTouched = false;
    slugInput.addEventListener("input", (e) => { slugTouched = true; model.setMeta("slug", e.target.value.trim()); });
    nameInput.addEventListener("input", (e) => {
      if (slugTouched) return;
      slugInput.value = slugify(e.target.value);
      model.meta.slug = slugInput.value;
    });
  }
  model.on("loaded", () => { nameInput.value = model.meta.name || ""; });
  model.on("dirty", (dirty) => { $("#dirty-flag").hidden = !dirty; });

  function updateVersionPills() {
    const v = $("#version-status");
    v.textContent = version ? `v${version}${version === live ? "" : " draft"}` : "unsaved";
    v.className = "pill " + (version && version !== live ? "draft" : "none");
    const l = $("#live-status");
    l.textContent = live ? `v${live} live` : "not published";
    l.className = "pill " + (live ? "live" : "none");
  }

  // ---- save ----------------------------------------------------------------------------------
  const saveDialog = $("#dlg-save");
  function openSave() {
    if (!config.canEdit || document.querySelector("dialog[open]")) return;
    // What the code pane shows must be what is saved.
    if (!code.flush()) {
      toast(`Not saved: the code pane's text is ${$("#code-status").textContent}. Fix it first.`, true);
      return;
    }
    $("#save-error").textContent = "";
    $("#save-message").value = "";
    saveDialog.showModal();
    $("#save-message").focus();
  }

  /** Save the current definition as a new version; {ok, status, message, version}. */
  async function save(message) {
    const definition = model.currentDefinition();
    if (!config.slug) {
      const answer = await postJSON(config.urls.create, { definition, message });
      if (!answer.ok) return { ok: false, status: answer.status, message: problemText(answer.body) };
      model.setDirty(false);
      window.location.assign(answer.body.url);
      return { ok: true, created: true };
    }
    const answer = await postJSON(`${config.urls.base}save/`, { definition, message, base_version: version });
    if (answer.body.code === "version_conflict") {
      $("#conflict-text").textContent = answer.body.detail;
      $("#dlg-conflict").showModal();
      return { ok: false, status: answer.status, conflict: true, message: answer.body.detail };
    }
    if (!answer.ok) return { ok: false, status: answer.status, message: problemText(answer.body) };
    version = answer.body.version;
    model.setDirty(false);
    updateVersionPills();
    toast(`Saved version ${version}`);
    canvas.history.clean();
    return { ok: true, version };
  }

  const saveButton = $("#btn-save");
  if (saveButton) saveButton.addEventListener("click", openSave);
  $("#form-save").addEventListener("submit", async (e) => {
    if (e.submitter && e.submitter.value === "cancel") return;
    e.preventDefault();
    const result = await save($("#save-message").value);
    if (result.ok || result.conflict) saveDialog.close();
    else $("#save-error").textContent = result.message;
  });
  // Ctrl+S saves wherever the focus is (the canvas, the panel, the code pane), never the
  // browser's "save page"; the canvas keyboard ignores keys typed into fields, so this
  // listens on the document itself.
  document.addEventListener("keydown", (e) => {
    if (!(e.ctrlKey || e.metaKey) || e.altKey || e.shiftKey || e.key.toLowerCase() !== "s") return;
    e.preventDefault();
    openSave();
  });
  $("#conflict-close").addEventListener("click", () => $("#dlg-conflict").close());
  $("#conflict-export").addEventListener("click", () => code.exportDefinition("json"));
  $("#conflict-reload").addEventListener("click", () => { model.setDirty(false); window.location.assign(config.urls.base); });

  // ---- publish -------------------------------------------------------------------------------
  const publishDialog = $("#dlg-publish");
  const publishButton = $("#btn-publish");
  if (publishButton) publishButton.addEventListener("click", () => {
    const text = $("#publish-text");
    const confirm = $("#publish-confirm");
    $("#publish-error").textContent = "";
    if (model.dirty) {
      text.textContent = "You have unsaved changes. Save them as a new version first: only saved versions can be published.";
      confirm.disabled = true;
    } else if (version === live) {
      text.textContent = `Version ${version} is already live.`;
      confirm.disabled = true;
    } else {
      text.textContent = `Publish version ${version}? New runs will use it`
        + (live ? ` instead of version ${live}, which is live now.` : ". No version is live yet.");
      confirm.disabled = false;
    }
    publishDialog.showModal();
  });
  $("#publish-cancel").addEventListener("click", () => publishDialog.close());
  $("#publish-confirm").addEventListener("click", async () => {
    const answer = await postJSON(`${config.urls.base}publish/`, { version });
    if (!answer.ok) { $("#publish-error").textContent = problemText(answer.body); return; }
    live = answer.body.live;
    // The Run button starts the live version: from now on with this version's input form.
    const run = $("#btn-run");
    if (run) {
      const schema = model.currentDefinition().input_schema;
      run.dataset.runSchema = schema && typeof schema === "object" ? JSON.stringify(schema) : "";
      run.hidden = false;
    }
    updateVersionPills();
    publishDialog.close();
    toast(`Version ${live} is live`);
    // A webhook trigger's first publish created its token: shown this once, with how to call it.
    if (answer.body.webhook) webhook.showToken(answer.body.webhook, "published");
  });

  window.addEventListener("beforeunload", (e) => {
    if (!model.dirty) return;
    e.preventDefault();
    e.returnValue = "";
  });

  updateVersionPills();
  return {
    save, openSave,
    get version() { return version; },
    get live() { return live; },
    /** Leave the page for `url`, without the unsaved-changes question (the caller asked). */
    leave(url) { model.setDirty(false); window.location.assign(url); },
  };
}
