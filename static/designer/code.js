/* The definition as JSON or YAML beside the canvas (js-yaml, UMD global `jsyaml`), kept in
 * sync both ways, and import/export of definition files. */

import { config, $, $$, toast } from "./page.js";

const APPLY_DELAY_MS = 400;

export function setupCode({ model }) {
  const text = $("#code-text");
  let format = "json";
  let applyTimer = null;
  let refreshTimer = null;

  const isOpen = () => !$("#code-pane").hidden;
  const serialise = (definition, as) => (as === "yaml"
    ? jsyaml.dump(definition, { noRefs: true, lineWidth: 100 }) : JSON.stringify(definition, null, 2));
  const parse = (source, as) => (as === "yaml" ? jsyaml.load(source) : JSON.parse(source));

  function setStatus(message, bad) {
    const status = $("#code-status");
    status.textContent = message;
    status.classList.toggle("bad", bad);
  }

  function refresh() {
    if (document.activeElement === text) return; // never rewrite what the author is typing
    text.value = serialise(model.currentDefinition(), format);
    setStatus("in sync", false);
  }

  /** Apply the text to the canvas now; false if it cannot be (the status line says why). */
  function apply() {
    clearTimeout(applyTimer);
    applyTimer = null;
    let parsed;
    try {
      parsed = parse(text.value, format);
    } catch (err) {
      setStatus(`not valid ${format.toUpperCase()}: ${err.message.split("\n")[0]}`, true);
      return false;
    }
    if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
      setStatus("the definition must be an object", true);
      return false;
    }
    model.loadDefinition(parsed, { recordHistory: true });
    model.setDirty(true);
    setStatus("applied to the canvas", false);
    return true;
  }

  /**
   * Apply a text edit still waiting for its pause (before a save, say); false when the text
   * cannot be applied, so the canvas is not what the author sees in the pane.
   */
  function flush() {
    if (applyTimer !== null) return apply();
    return !(isOpen() && $("#code-status").classList.contains("bad"));
  }

  text.addEventListener("input", () => {
    clearTimeout(applyTimer);
    applyTimer = setTimeout(apply, APPLY_DELAY_MS);
  });
  text.addEventListener("blur", () => { if ($("#code-status").textContent !== "in sync") setTimeout(refresh, 500); });
  $("#btn-code").addEventListener("click", () => {
    const pane = $("#code-pane");
    pane.hidden = !pane.hidden;
    $(".side").classList.toggle("code-open", !pane.hidden);
    $("#btn-code").setAttribute("aria-pressed", String(!pane.hidden));
    if (!pane.hidden) refresh();
  });
  $$(".code-tabs .tab").forEach((tab) => tab.addEventListener("click", () => {
    format = tab.dataset.format;
    $$(".code-tabs .tab").forEach((t) => {
      t.classList.toggle("active", t === tab);
      t.setAttribute("aria-selected", String(t === tab));
    });
    refresh();
  }));
  model.on("settled", () => {
    if (!isOpen() || document.activeElement === text) return;
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refresh, 120);
  });

  // ---- files ---------------------------------------------------------------------------------
  function exportDefinition(as = format) {
    const definition = model.currentDefinition();
    const blob = new Blob([serialise(definition, as)], { type: as === "yaml" ? "application/yaml" : "application/json" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `${definition.slug || "workflow"}.${as === "yaml" ? "yaml" : "json"}`;
    document.body.append(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 0);
  }

  $("#btn-export").addEventListener("click", () => exportDefinition());
  $("#btn-import").addEventListener("click", () => $("#import-file").click());
  $("#import-file").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    e.target.value = "";
    if (!file) return;
    let parsed;
    try {
      parsed = parse(await file.text(), /\.ya?ml$/i.test(file.name) ? "yaml" : "json");
    } catch (err) {
      toast(`Could not import ${file.name}: ${err.message.split("\n")[0]}`, true);
      return;
    }
    if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
      toast(`Could not import ${file.name}: it does not hold a workflow definition (an object)`, true);
      return;
    }
    if (config.slug && parsed.slug !== config.slug) {
      toast(`Imported ${file.name}; its slug '${parsed.slug}' was replaced by this workflow's '${config.slug}'.`);
      parsed.slug = config.slug;
    } else {
      toast(`Imported ${file.name}`);
    }
    const slugInput = $("#wf-slug");
    if (slugInput && parsed.slug) slugInput.value = parsed.slug;
    model.loadDefinition(parsed, { recordHistory: true });
    model.setDirty(true);
  });

  return { flush, exportDefinition };
}
