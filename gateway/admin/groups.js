// Model groups: the list, and an editor for one group's models in priority order, with each
// model's provider key pasted (stored sealed by the gateway) or referenced from its environment
// ("os.environ/NAME"), its api_base and prices. The API never returns a pasted key: it shows a
// hint ("****abcd"), and sending the hint back unchanged keeps the stored key.
import { call, get, post, put, seg } from "./api.js";
import { card, field, form, h, link, notice, replace, table, val } from "./dom.js";

const ENV = "os.environ/";
const PER_MILLION = 1e6;

function credential(cfg) {
  const k = cfg.api_key;
  if (typeof k !== "string" || !k) return "none";
  return k.startsWith(ENV) ? `env ${k.slice(ENV.length)}` : `pasted ${k}`;
}

export async function groupsPage(el) {
  const { model_groups: groups, total } = await get("/api/model-groups");
  replace(el,
    h("h1", {}, "Model groups"),
    card(`${total} group(s)`, table([
      { title: "Group", cell: (g) => link(["groups", g.group_name], g.group_name) },
      { title: "Display name", cell: (g) => g.display_name },
      { title: "Models (priority order)", cell: (g) => g.models.map((m) => m.model_name).join(" → ") },
      { title: "Provider keys", cell: (g) => g.models.map((m) => credential(m.config)).join(", ") },
      { title: "Cache", cell: (g) => (g.cache_ttl_seconds ? `${g.cache_ttl_seconds} s` : "off") },
    ], groups, "groups-table")),
    card("New model group", editor(null)));
}

export async function groupPage(el, name) {
  const group = await get(`/api/model-groups/${seg(name)}`);
  replace(el,
    h("p", {}, link(["groups"], "← Model groups")),
    h("h1", {}, group.display_name, " ", h("span", { class: "muted" }, group.group_name)),
    card("Models", editor(group)));
}

function priceInput(name, perToken) {
  const shown = typeof perToken === "number" ? String(Number((perToken * PER_MILLION).toPrecision(12))) : "";
  return h("input", { name, type: "number", min: 0, step: "any", value: shown, placeholder: "—" });
}

/** One model's row: its fields and a `config()` that rebuilds the config to send. */
function modelRow(model, rows, redraw) {
  const cfg = { ...(model?.config || {}) };
  const key = typeof cfg.api_key === "string" ? cfg.api_key : "";
  const stored = key && !key.startsWith(ENV) ? key : "";
  const mode = h("select", { name: "key_mode", "data-testid": "key-mode" },
    h("option", { value: "none" }, "No key"),
    h("option", { value: "env" }, "Environment variable"),
    h("option", { value: "paste" }, "Paste a key"),
    stored ? h("option", { value: "keep" }, `Keep stored key (${stored})`) : null);
  mode.value = stored ? "keep" : key ? "env" : "none";
  const envName = h("input", { name: "key_env", placeholder: "OPENAI_API_KEY",
    value: key.startsWith(ENV) ? key.slice(ENV.length) : "" });
  const pasted = h("input", { name: "key_value", type: "password", autocomplete: "off",
    placeholder: "sk-…", "data-testid": "key-value" });
  const showMode = () => {
    envName.hidden = mode.value !== "env";
    pasted.hidden = mode.value !== "paste";
  };
  mode.addEventListener("change", showMode);
  showMode();
  const name = h("input", { name: "model_name", required: true, value: model?.model_name || "",
    placeholder: "openai/gpt-4o" });
  const base = h("input", { name: "api_base", value: cfg.api_base || "",
    placeholder: "https://api.openai.com/v1 (optional)" });
  const inPrice = priceInput("input_price", cfg.input_cost_per_token);
  const outPrice = priceInput("output_price", cfg.output_cost_per_token);
  for (const k of ["api_key", "api_base", "input_cost_per_token", "output_cost_per_token"]) delete cfg[k];
  const other = h("textarea", { name: "other", rows: 2, placeholder: '{"timeout": 30}' },
    Object.keys(cfg).length ? JSON.stringify(cfg) : "");
  const row = {};
  const move = (d) => {
    const i = rows.indexOf(row);
    if (i + d < 0 || i + d >= rows.length) return;
    rows.splice(i, 1);
    rows.splice(i + d, 0, row);
    redraw();
  };
  row.el = h("fieldset", { class: "model", "data-testid": "model-row" },
    h("legend", {}, "Model"),
    h("div", { class: "row" },
      field("Model", name),
      field("Provider key", h("span", { class: "stack" }, mode, envName, pasted)),
      field("api_base", base)),
    h("div", { class: "row" },
      field("$ per 1M input tokens", inPrice),
      field("$ per 1M output tokens", outPrice),
      field("Other config (JSON)", other)),
    h("div", { class: "actions" },
      h("button", { type: "button", onclick: () => move(-1) }, "↑ Earlier"),
      h("button", { type: "button", onclick: () => move(1) }, "↓ Later"),
      h("button", { type: "button", class: "danger", onclick: () => {
        rows.splice(rows.indexOf(row), 1);
        redraw();
      } }, "Remove")));
  row.model = (priority) => {
    let extra = {};
    if (other.value.trim()) {
      try {
        extra = JSON.parse(other.value);
      } catch {
        throw new Error(`Other config of ${name.value || "a model"} is not valid JSON`);
      }
    }
    const config = { ...extra };
    if (mode.value === "env") config.api_key = ENV + envName.value.trim();
    if (mode.value === "paste") config.api_key = pasted.value.trim();
    if (mode.value === "keep") config.api_key = stored;
    if (base.value.trim()) config.api_base = base.value.trim();
    if (inPrice.value !== "") config.input_cost_per_token = Number(inPrice.value) / PER_MILLION;
    if (outPrice.value !== "") config.output_cost_per_token = Number(outPrice.value) / PER_MILLION;
    return { model_name: name.value.trim(), priority, config };
  };
  return row;
}

function editor(group) {
  const rows = [];
  const list = h("div", { class: "models" });
  const redraw = () => replace(list, rows.map((r, i) =>
    [h("div", { class: "priority" }, `Priority ${i}${i === 0 ? " (tried first)" : ""}`), r.el]));
  for (const m of group?.models || [null]) rows.push(modelRow(m, rows, redraw));
  redraw();
  const fields = [
    group ? null : field("Group name", h("input", { name: "group_name", required: true,
      placeholder: "ChatAgent" })),
    field("Display name", h("input", { name: "display_name", value: group?.display_name || "" })),
    field("Description", h("input", { name: "description", value: group?.description || "" })),
    // Exact-match response cache (0 = off): identical requests of one organization within the
    // TTL are answered without calling a provider.
    field("Cache answers for (seconds, 0 = off)", h("input", { name: "cache_ttl_seconds",
      type: "number", min: 0, max: 604800, step: 1, value: String(group?.cache_ttl_seconds || 0) })),
    list,
    h("div", { class: "actions" }, h("button", { type: "button", "data-testid": "add-model",
      onclick: () => { rows.push(modelRow(null, rows, redraw)); redraw(); } }, "+ Add a fallback model")),
  ];
  const saved = form("group-editor", fields, group ? "Save group" : "Create group", async (f) => {
    const body = {
      display_name: val(f, "display_name"),
      description: val(f, "description"),
      cache_ttl_seconds: Number(val(f, "cache_ttl_seconds") || 0),
      models: rows.map((r, i) => r.model(i)),
    };
    if (group) {
      body.metadata = group.metadata;
      await put(`/api/model-groups/${seg(group.group_name)}`, body);
      location.hash = `#/groups/${encodeURIComponent(group.group_name)}`;
      return notice("ok", "Saved.");
    }
    const made = await post("/api/model-groups/create", { group_name: val(f, "group_name"), ...body });
    location.hash = `#/groups/${encodeURIComponent(made.group_name)}`;
    return null;
  });
  if (!group) return saved;
  const del = h("div", { class: "actions" }, h("button", { class: "danger", onclick: async () => {
    try {
      await call("DELETE", `/api/model-groups/${seg(group.group_name)}`);
      location.hash = "#/groups";
    } catch (err) {
      del.appendChild(notice("error", err.message));
    }
  } }, "Delete group"));
  return h("div", {}, saved, del);
}
