// The admin dashboard: sign-in, navigation and the hash router. Views live in orgs.js,
// teams.js, groups.js and usage.js; each renders into the element it is given.
import { masterKey, signIn, signOut } from "./api.js";
import { field, h, notice, replace } from "./dom.js";
import { groupPage, groupsPage } from "./groups.js";
import { orgPage, orgsPage } from "./orgs.js";
import { jobPage, teamPage } from "./teams.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");

const ROUTES = [
  [/^orgs$/, () => orgsPage],
  [/^orgs\/([^/]+)$/, (id) => (el) => orgPage(el, id)],
  [/^teams\/([^/]+)$/, (id) => (el) => teamPage(el, id)],
  [/^jobs\/([^/]+)$/, (id) => (el) => jobPage(el, id)],
  [/^groups$/, () => groupsPage],
  [/^groups\/([^/]+)$/, (name) => (el) => groupPage(el, name)],
];

function signInPage() {
  replace(nav);
  const input = h("input", {
    type: "password", name: "key", autocomplete: "off", required: true,
    placeholder: "sk-master-…", "data-testid": "master-key",
  });
  const status = h("div", { class: "form-status" });
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  replace(main, h("section", { class: "card signin" },
    h("h2", {}, "Sign in"),
    h("p", { class: "muted" },
      "Paste the gateway's master key (MASTER_KEY; `make run` prints it and keeps it in " +
      "data/master_key). It stays in this tab's memory until you sign out or close the tab."),
    h("form", {
      "data-testid": "signin",
      onsubmit: async (ev) => {
        ev.preventDefault();
        submit.disabled = true;
        try {
          await signIn(input.value.trim());
          input.value = "";
          location.hash = "#/orgs";
          render();
        } catch (err) {
          replace(status, notice("error", err.message));
        } finally {
          submit.disabled = false;
        }
      },
    }, field("Master key", input), h("div", { class: "actions" }, submit), status)));
  input.focus();
}

function navBar(current) {
  const item = (route, text) => h("a", {
    href: `#/${route}`, class: current.startsWith(route) ? "active" : "",
  }, text);
  replace(nav,
    item("orgs", "Organizations"),
    item("groups", "Model groups"),
    h("button", {
      class: "link", "data-testid": "signout",
      onclick: () => { signOut(); location.hash = ""; render(); },
    }, "Sign out"));
}

async function render() {
  if (!masterKey()) return signInPage();
  const path = decodeURIComponent(location.hash.replace(/^#\/?/, "")) || "orgs";
  navBar(path);
  for (const [pattern, view] of ROUTES) {
    const m = path.match(pattern);
    if (m) {
      replace(main, h("p", { class: "muted" }, "Loading…"));
      try {
        await view(...m.slice(1))(main);
      } catch (err) {
        if (err.status === 401) {
          signOut();
          return signInPage();
        }
        replace(main, notice("error", err.message || String(err)));
      }
      return;
    }
  }
  replace(main, notice("error", "No such page."));
}

window.addEventListener("hashchange", render);
render();
