// DOM helpers. Every string from the API (names, ids, metadata, errors: all tenant-provided)
// reaches the page as a text node or an attribute value set through the DOM, never as HTML:
// nothing here parses markup, and no file of the dashboard assigns HTML to an element.

const PROPS = new Set(["value", "checked", "disabled", "selected", "type", "name", "placeholder",
  "title", "min", "max", "step", "required", "autocomplete", "htmlFor", "id", "rows", "readOnly",
  "defaultValue"]);

/** h("button", {class: "primary", onclick: fn, "data-testid": "x"}, "text", child, [more]) */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "href") el.setAttribute("href", safeHref(v));
    else if (PROPS.has(k)) el[k] = v;
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

// Links stay inside the dashboard: hash routes only.
function safeHref(v) {
  const s = String(v);
  return s.startsWith("#/") ? s : "#/";
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function link(route, text) {
  return h("a", { href: "#/" + route.map(encodeURIComponent).join("/") }, text);
}

export function table(columns, rows, testid) {
  return h("table", { "data-testid": testid },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c.title)))),
    h("tbody", {}, rows.length
      ? rows.map((r) => h("tr", {}, columns.map((c) => h("td", { class: c.class }, c.cell(r)))))
      : h("tr", {}, h("td", { colSpan: columns.length, class: "muted" }, "None yet"))));
}

export function field(label, input) {
  return h("label", { class: "field" }, h("span", {}, label), input);
}

export function card(title, ...body) {
  return h("section", { class: "card" }, title ? h("h2", {}, title) : null, ...body);
}

export function notice(kind, text) {
  return h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

export function when(ts) {
  if (!ts) return "—";
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? String(ts) : d.toISOString().replace("T", " ").slice(0, 19);
}

export function usd(n) {
  return typeof n === "number" ? `$${n.toFixed(n !== 0 && Math.abs(n) < 0.01 ? 6 : 2)}` : "—";
}

/** A form whose submit runs `action(values)`, showing its error or success in place. */
export function form(testid, fields, submitText, action) {
  const status = h("div", { class: "form-status" });
  const button = h("button", { type: "submit", class: "primary" }, submitText);
  const el = h("form", {
    "data-testid": testid,
    onsubmit: async (ev) => {
      ev.preventDefault();
      button.disabled = true;
      replace(status);
      try {
        const done = await action(el);
        if (done instanceof Node) replace(status, done);
      } catch (err) {
        replace(status, notice("error", err.message || String(err)));
      } finally {
        button.disabled = false;
      }
    },
  }, fields, h("div", { class: "actions" }, button), status);
  return el;
}

export function val(formEl, name) {
  const input = formEl.elements.namedItem(name);
  return input ? input.value.trim() : "";
}
