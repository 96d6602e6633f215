/* Webhook triggers: a workflow's webhook token is shown once (after the publish that created
 * it, or after a rotation) with the full URL and a ready curl line; the trigger panel's
 * "New token" button rotates it through the REST API. */

import { config, csrf, $, toast } from "./page.js";

export function setupWebhook({ panel }) {
  const dialog = $("#dlg-webhook");

  /** Show a token just issued: details is the API's {url, header, token, curl}. */
  function showToken(details, why) {
    $("#webhook-why").textContent = why === "published"
      ? "The workflow is live and its webhook has a token."
      : "A new token was issued; the old one stopped working.";
    $("#webhook-url").value = details.url;
    $("#webhook-token").value = details.token;
    $("#webhook-header").textContent = details.header;
    $("#webhook-curl").value = details.curl;
    dialog.showModal();
    // The trigger panel says whether a token exists: show it again if it is open.
    if (document.querySelector(".panel-form[data-kind=trigger]")) panel.open(null);
  }

  /** Issue a token; `replacing` one that callers may be using asks first. */
  async function rotate(replacing = true) {
    if (!config.urls.webhookToken) return;
    if (replacing && !window.confirm("Issue a new webhook token? The current one stops working at once: "
      + "callers that still send it get 403 until they use the new one.")) return;
    const response = await fetch(config.urls.webhookToken, {
      method: "POST", credentials: "same-origin", body: "{}",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrf },
    });
    const body = await response.json().catch(() => ({ detail: `The server answered ${response.status}` }));
    if (!response.ok) { toast(`No new token: ${body.detail}`, true); return; }
    showToken(body, "rotated");
  }

  async function copy(button) {
    const field = $(button.dataset.copy);
    field.select();
    try {
      await navigator.clipboard.writeText(field.value);
    } catch (err) {
      document.execCommand("copy"); // no clipboard API (an insecure origin): the old way
    }
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  }

  $("#panel").addEventListener("click", (e) => {
    const button = e.target.closest("[data-rotate-webhook]");
    if (!button) return;
    e.preventDefault();
    rotate(button.dataset.rotateWebhook !== "first");
  });
  dialog.addEventListener("click", (e) => {
    const button = e.target.closest("[data-copy]");
    if (button) copy(button);
  });
  $("#webhook-close").addEventListener("click", () => dialog.close());
  return { showToken, rotate };
}
