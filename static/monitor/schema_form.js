/* A form made from a workflow's `input_schema` (a JSON Schema), for starting runs by hand.
 *
 * Strings, numbers, integers, booleans, enums, nested objects and arrays of scalars get a field
 * each; anything else (arrays of objects, oneOf, $ref, a schema that is not an object ...) is a
 * JSON box for that part. The form only reads what was typed; the server checks the input
 * against the schema (designer/services.py check_input_schema) and answers each mismatch with
 * its path (`input.customer.tier`), which `showProblems` puts next to the field of that path.
 */

import { escapeHtml as esc } from "./text.js";

const SCALARS = new Set(["string", "number", "integer", "boolean"]);

/** `input` + "a" -> `input.a`; + 2 -> `input[2]`; odd keys quoted (orchestrator/spec.py join_path). */
export function joinPath(base, part) {
  if (typeof part === "number") return `${base}[${part}]`;
  if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(part)) return base ? `${base}.${part}` : part;
  return `${base}[${JSON.stringify(part)}]`;
}

function kindOf(schema) {
  if (!schema || typeof schema !== "object") return "json";
  if (schema.$ref || schema.oneOf || schema.anyOf || schema.allOf) return "json";
  if (Array.isArray(schema.enum) && schema.enum.length) return "enum";
  let type = schema.type;
  if (Array.isArray(type)) {
    const concrete = type.filter((t) => t !== "null");
    type = concrete.length === 1 ? concrete[0] : null;
  }
  if (SCALARS.has(type)) return type;
  if (type === "object" && schema.properties && typeof schema.properties === "object") return "object";
  if (type === "array" && schema.items && ["string", "number", "integer", "boolean", "enum"].includes(kindOf(schema.items))) {
    return "array";
  }
  return "json";
}

const label = (schema, key) => esc(schema.title || key);
const help = (schema) => (schema.description ? `<span class="field-help">${esc(schema.description)}</span>` : "");

/** The fields of `schema` at `path`, as HTML, filled from `value`. */
function fieldHtml(schema, key, path, value, required) {
  const kind = kindOf(schema);
  const req = required ? ' <span class="req" title="required">*</span>' : "";
  const attrs = `data-path="${esc(path)}" data-key="${esc(key)}" data-kind="${kind}" ${required ? "data-required" : ""}`;
  const id = `sf-${path.replace(/[^A-Za-z0-9_-]/g, "_")}`;
  if (kind === "object") {
    const inner = Object.entries(schema.properties).map(([name, sub]) => fieldHtml(
      sub, name, joinPath(path, name), value && typeof value === "object" ? value[name] : undefined,
      (schema.required || []).includes(name))).join("");
    return `<fieldset class="schema-object" ${attrs}><legend>${label(schema, key)}${req}</legend>${help(schema)}${inner}
      <ul class="field-errors" role="alert" hidden></ul></fieldset>`;
  }
  let control;
  if (kind === "boolean") {
    return `<div class="field" ${attrs}><label class="checkbox"><input type="checkbox" id="${id}" ${value === true ? "checked" : ""}>
      <span class="field-label">${label(schema, key)}${req}</span></label>${help(schema)}<ul class="field-errors" role="alert" hidden></ul></div>`;
  }
  if (kind === "enum") {
    const options = schema.enum.map((option) => `<option value="${esc(JSON.stringify(option))}" ${JSON.stringify(option) === JSON.stringify(value) ? "selected" : ""}>${esc(typeof option === "string" ? option : JSON.stringify(option))}</option>`).join("");
    control = `<select id="${id}">${required && value !== undefined ? "" : '<option value="">—</option>'}${options}</select>`;
  } else if (kind === "number" || kind === "integer") {
    control = `<input id="${id}" type="number" step="${kind === "integer" ? 1 : "any"}" value="${value === undefined ? "" : esc(value)}"
      ${schema.minimum !== undefined ? `min="${esc(schema.minimum)}"` : ""} ${schema.maximum !== undefined ? `max="${esc(schema.maximum)}"` : ""}>`;
  } else if (kind === "string") {
    const long = (schema.maxLength || 0) > 200 || schema.format === "textarea";
    control = long ? `<textarea id="${id}" rows="3">${esc(value === undefined ? "" : value)}</textarea>`
      : `<input id="${id}" type="text" value="${esc(value === undefined ? "" : value)}" placeholder="${esc(schema.format || schema.pattern || "")}">`;
  } else if (kind === "array") {
    const items = Array.isArray(value) ? value : [];
    control = `<div class="schema-array" data-item-kind="${kindOf(schema.items)}">
      <ol>${items.map((item) => arrayItemHtml(schema.items, item)).join("")}</ol>
      <button type="button" class="btn sm" data-add-item>Add an item</button></div>
      <template>${arrayItemHtml(schema.items, undefined)}</template>`;
  } else {
    control = `<textarea id="${id}" rows="4" spellcheck="false" class="mono">${esc(value === undefined ? "" : JSON.stringify(value, null, 2))}</textarea>`;
  }
  return `<div class="field" ${attrs}><label class="field-label" for="${id}">${label(schema, key)}${req}${kind === "json" ? ' <span class="kind-tag">JSON</span>' : ""}</label>
    ${control}${help(schema)}<ul class="field-errors" role="alert" hidden></ul></div>`;
}

function arrayItemHtml(itemSchema, value) {
  const kind = kindOf(itemSchema);
  let control;
  if (kind === "enum") {
    control = `<select>${itemSchema.enum.map((option) => `<option value="${esc(JSON.stringify(option))}" ${JSON.stringify(option) === JSON.stringify(value) ? "selected" : ""}>${esc(typeof option === "string" ? option : JSON.stringify(option))}</option>`).join("")}</select>`;
  } else if (kind === "boolean") {
    control = `<input type="checkbox" ${value === true ? "checked" : ""}>`;
  } else {
    control = `<input type="${kind === "string" ? "text" : "number"}" ${kind === "integer" ? 'step="1"' : kind === "number" ? 'step="any"' : ""} value="${value === undefined ? "" : esc(value)}">`;
  }
  return `<li>${control}<button type="button" class="btn sm ghost" data-remove-item aria-label="Remove this item">✕</button></li>`;
}

function scalarFrom(kind, control, path, errors) {
  if (kind === "boolean") return control.checked;
  if (kind === "enum") return control.value === "" ? undefined : JSON.parse(control.value);
  const text = control.value;
  if (kind === "string") return text;
  if (text.trim() === "") return undefined;
  const number = Number(text);
  if (!Number.isFinite(number)) { errors.push({ path, message: "must be a number" }); return undefined; }
  if (kind === "integer" && !Number.isInteger(number)) { errors.push({ path, message: "must be a whole number" }); return undefined; }
  return number;
}

function readField(node, errors) {
  const kind = node.dataset.kind;
  const path = node.dataset.path;
  const required = node.hasAttribute("data-required");
  if (kind === "object") {
    const value = {};
    for (const child of node.querySelectorAll(":scope > [data-path]")) {
      const got = readField(child, errors);
      if (got !== undefined) value[child.dataset.key] = got;
    }
    return Object.keys(value).length || required ? value : undefined;
  }
  if (kind === "array") {
    const itemKind = node.querySelector(".schema-array").dataset.itemKind;
    const items = [];
    node.querySelectorAll(".schema-array > ol > li").forEach((li, index) => {
      const got = scalarFrom(itemKind, li.querySelector("input, select"), joinPath(path, index), errors);
      items.push(got === undefined ? (itemKind === "string" ? "" : null) : got);
    });
    return items.length || required ? items : undefined;
  }
  const control = node.querySelector("input, select, textarea");
  if (kind === "json") {
    if (control.value.trim() === "") return undefined;
    try { return JSON.parse(control.value); } catch (err) {
      errors.push({ path, message: `is not valid JSON: ${err.message}` });
      return undefined;
    }
  }
  if (kind === "boolean") return control.checked ? true : (required ? false : undefined);
  const value = scalarFrom(kind, control, path, errors);
  // An empty optional text field means "not given", not "".
  return kind === "string" && value === "" && !required ? undefined : value;
}

/**
 * Render `schema` into `container`, filled from `value` (or the schema's defaults). Returns
 * `{ read() -> {value, errors: [{path, message}]}, showProblems(problems) -> the ones no field took }`.
 */
export function renderSchemaForm(container, schema, value, { root = "input" } = {}) {
  const top = kindOf(schema) === "object" ? schema : null;
  const start = value !== undefined ? value : defaults(schema);
  if (top) {
    container.innerHTML = Object.entries(top.properties).map(([name, sub]) => fieldHtml(
      sub, name, joinPath(root, name), start && typeof start === "object" ? start[name] : undefined,
      (top.required || []).includes(name))).join("") || '<p class="muted small">This workflow takes no input.</p>';
  } else {
    container.innerHTML = fieldHtml(schema || {}, "Input (JSON)", root, start, true);
  }
  container.classList.add("schema-form");
  container.addEventListener("click", (e) => {
    const add = e.target.closest("[data-add-item]");
    if (add) {
      const field = add.closest("[data-path]");
      field.querySelector(".schema-array > ol").insertAdjacentHTML("beforeend", field.querySelector("template").innerHTML);
      field.querySelector(".schema-array > ol > li:last-child input, .schema-array > ol > li:last-child select").focus();
    }
    const remove = e.target.closest("[data-remove-item]");
    if (remove) remove.closest("li").remove();
  });

  function read() {
    const errors = [];
    if (!top) return { value: readField(container.firstElementChild, errors), errors };
    const result = {};
    for (const node of container.querySelectorAll(":scope > [data-path]")) {
      const got = readField(node, errors);
      if (got !== undefined) result[node.dataset.key] = got;
    }
    return { value: result, errors };
  }

  function showProblems(problems) {
    container.querySelectorAll(".field-errors").forEach((list) => { list.hidden = true; list.innerHTML = ""; });
    container.querySelectorAll(".has-error").forEach((node) => node.classList.remove("has-error"));
    const left = [];
    for (const problem of problems) {
      // The field of the path, else the nearest field above it (an item of an array, a key the form has no field for).
      let path = problem.path || "";
      let node = null;
      while (path && !(node = container.querySelector(`[data-path="${CSS.escape(path)}"]`))) {
        const cut = Math.max(path.lastIndexOf("."), path.lastIndexOf("["));
        path = cut > 0 ? path.slice(0, cut) : "";
      }
      if (!node) { left.push(problem); continue; }
      node.classList.add("has-error");
      const list = node.querySelector(":scope > .field-errors");
      const where = problem.path !== node.dataset.path ? `${problem.path.slice(node.dataset.path.length).replace(/^\./, "")}: ` : "";
      list.insertAdjacentHTML("beforeend", `<li>${esc(where + problem.message)}</li>`);
      list.hidden = false;
    }
    return left;
  }

  return { read, showProblems };
}

/** The schema's defaults as an initial value (objects: their properties' defaults). */
export function defaults(schema) {
  if (!schema || typeof schema !== "object") return undefined;
  if (schema.default !== undefined) return JSON.parse(JSON.stringify(schema.default));
  if (kindOf(schema) === "object") {
    const value = {};
    for (const [name, sub] of Object.entries(schema.properties)) {
      const got = defaults(sub);
      if (got !== undefined) value[name] = got;
    }
    return Object.keys(value).length ? value : undefined;
  }
  return undefined;
}
