// The dashboard shell: signs in, routes `#/view?filters` to a view module, and gives each view
// a container and an AbortSignal that fires when the viewer leaves it (closing its event
// streams). Talks only to the public /api/v1.

import { getJson, redeemLoginCode, setToken, signOut, token } from "./js/api.js";
import { $, h } from "./js/dom.js";
import { loadFigureCatalogue } from "./js/figures.js";
import { route } from "./js/route.js";
import * as models from "./js/views/models.js";
import * as model from "./js/views/model.js";
import * as newJob from "./js/views/new-job.js";
import * as jobs from "./js/views/jobs.js";
import * as job from "./js/views/job.js";
import * as compare from "./js/views/compare.js";

const views = { models, model, new: newJob, jobs, job, compare };
let leave = null;

async function showSignIn(message) {
  $("nav").hidden = true;
  $("sign-out").hidden = true;
  $("who").textContent = "";
  const input = h("input", { id: "token-input", type: "password", autocomplete: "off", placeholder: "sqz_...", required: true });
  const error = h("p", { class: "error", id: "sign-in-error", role: "alert" }, message || "");
  const form = h("form", {
    id: "token-form",
    onsubmit: async (event) => {
      event.preventDefault();
      setToken(input.value.trim());
      try {
        await getJson("/me");
        render();
      } catch {
        signOut();
        $("sign-in-error").textContent = "That token was not accepted.";
      }
    },
  }, h("label", { for: "token-input" }, "API token"), input, h("button", { type: "submit" }, "Sign in"));
  $("view").replaceChildren(h("section", { id: "sign-in", "aria-labelledby": "sign-in-title" },
    h("h2", { id: "sign-in-title" }, "Sign in"),
    h("p", {}, "Open the sign-in link that ", h("code", {}, "squeeze serve"),
      " printed, or paste an API token (", h("code", {}, "data/admin-token"), " on the server)."),
    form, error));
  input.focus();
}

async function render() {
  if (leave) leave.abort();
  leave = new AbortController();
  // The old view goes at once, so nothing acts on a form the viewer has left.
  $("view").replaceChildren(h("p", { class: "muted", "aria-busy": "true" }, "Loading…"));
  if (!token()) return showSignIn();
  let me;
  try {
    me = await getJson("/me");
  } catch (error) {
    return showSignIn(error.message);
  }
  // Without the catalogue figures still show, by name and without a direction.
  await loadFigureCatalogue().catch(() => {});
  $("who").textContent = `team ${me.team}`;
  $("nav").hidden = false;
  $("sign-out").hidden = false;
  const current = route();
  for (const link of document.querySelectorAll("#nav a")) {
    const target = link.getAttribute("href").slice(2);
    const active = target === current.view || (target === "jobs" && current.view === "job") || (target === "models" && current.view === "model");
    if (active) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const container = h("section", { id: `view-${current.view}`, class: "view" });
  $("view").replaceChildren(container);
  try {
    await views[current.view].render(container, { ...current, me, signal: leave.signal });
  } catch (error) {
    container.append(h("p", { class: "error", role: "alert" }, `Could not load this view: ${error.message}`));
  }
}

/// Signs in with a `#login=` code when the URL has one (on load, or pasted into an open tab).
async function start() {
  const loginError = await redeemLoginCode();
  if (loginError) showSignIn(`The sign-in link was not accepted: ${loginError}`);
  else render();
}

window.addEventListener("hashchange", start);
window.addEventListener("squeeze:signed-out", () => render());
$("sign-out").addEventListener("click", signOut);
await start();
