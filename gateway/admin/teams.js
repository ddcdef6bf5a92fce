// One team (credits, status, key, model groups, limits, budget, jobs, transactions) and one job
// with its calls.
//
// Limits and budget are rendered from whatever the API returns: the fields below appear on the
// page as soon as GET /api/teams/{id} (limits) and the balance (budget) carry them, and the
// limits form appears with them (PATCH /api/teams/{id}/limits). Adding a field is one line here.
import { get, lastMonths, patch, post, put, seg } from "./api.js";
import { card, field, form, h, link, notice, replace, table, usd, val, when } from "./dom.js";
import { teamModelChart } from "./usage.js";

export const LIMIT_FIELDS = [
  ["rpm_limit", "Requests per minute", "0 = none"],
  ["tpm_limit", "Tokens per minute", "0 = none"],
  ["max_calls_per_job", "Calls per job", ""],
  ["max_tokens_per_job", "Tokens per job", "0 = none"],
  ["max_job_cost_usd", "Cost per job (USD)", "0 = none"],
];
export const BUDGET_FIELDS = [
  ["budget_usd", "Budget"],
  ["spend_usd", "Spent"],
  ["budget_remaining_usd", "Budget left"],
];

/** Checkboxes for model groups; `selected()` gives the checked names in list order. */
export function groupPicker(names, checked) {
  const boxes = names.map((n) => h("input", {
    type: "checkbox", name: "model_groups", value: n, checked: checked.includes(n),
  }));
  const el = h("div", { class: "picker", "data-testid": "group-picker" },
    names.length ? boxes.map((b) => h("label", { class: "check" }, b, b.value))
      : h("span", { class: "muted" }, "No model groups yet: create one first."));
  return { el, selected: () => boxes.filter((b) => b.checked).map((b) => b.value) };
}

/** A team key, shown this once (it is stored only as a hash). */
export function keyOnce(teamId, key) {
  return h("div", { class: "key-once", "data-testid": "key-once" },
    h("strong", {}, `Virtual key of ${teamId}: copy it now, it will not be shown again.`),
    h("input", { readOnly: true, value: key, "data-testid": "virtual-key",
      onfocus: (ev) => ev.target.select() }));
}

function dl(pairs) {
  return h("dl", { class: "facts" }, pairs.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

/** Credits charged at $0.10 beside provider cost, per job type, this UTC month. */
function marginCard(m) {
  const rows = [
    ...Object.entries(m.job_types ?? {}).map(([type, r]) => ({ type, ...r })),
    { type: "Total", ...(m.total ?? {}) },
  ];
  const money = (k) => (r) => usd(r[k] ?? 0);
  return card(`Margin in ${m.period} (credits at $0.10 vs provider cost)`, table([
    { title: "Job type", cell: (r) => r.type },
    { title: "Jobs", class: "num", cell: (r) => r.jobs ?? 0 },
    { title: "Credits charged", class: "num", cell: (r) => r.credits_charged ?? 0 },
    { title: "Revenue", class: "num", cell: money("revenue_usd") },
    { title: "Provider cost", class: "num", cell: money("provider_cost_usd") },
    { title: "Margin", class: "num", cell: money("margin_usd") },
  ], rows, "margin-table"),
  h("p", { class: "muted" }, `OpenAI-compatible calls (from the budget, at cost): ${usd(m.direct_cost_usd ?? 0)}`));
}

export async function teamPage(el, id) {
  const [team, balance, groups, jobs, txs, margin] = await Promise.all([
    get(`/api/teams/${seg(id)}`),
    get(`/api/credits/teams/${seg(id)}/balance`),
    get("/api/model-groups"),
    get(`/api/teams/${seg(id)}/jobs?limit=100`),
    get(`/api/credits/teams/${seg(id)}/transactions?limit=100`),
    get(`/api/teams/${seg(id)}/margin?period=${lastMonths(1)[0]}`),
  ]);
  const reload = () => teamPage(el, id);
  const c = team.credits;
  const budget = BUDGET_FIELDS.filter(([k]) => k in balance)
    .map(([k, label]) => [label, usd(balance[k])]);
  const info = card("Team",
    dl([
      ["Status", h("span", { class: `pill ${team.status}`, "data-testid": "team-status" }, team.status)],
      ["Organization", link(["orgs", team.organization_id], team.organization_id)],
      ["Alias", team.team_alias],
      ["Key", `${team.key_prefix}…`],
      ["Credits left", h("span", { "data-testid": "credits-remaining" }, String(c.credits_remaining))],
      ["Allocated / used / reserved", `${c.credits_allocated} / ${c.credits_used} / ${c.credits_reserved}`],
      ["Max budget", usd(team.max_budget_usd)],
      ...budget,
      ["Allowed models", team.allowed_models.join(", ") || "—"],
    ]));
  const rotated = h("div");
  const rotate = h("button", { "data-testid": "rotate-key", onclick: () => {
    replace(rotated, h("p", {}, "The current key stops working at once. ",
      h("button", { class: "danger", "data-testid": "confirm-rotate", onclick: async () => {
        const r = await post(`/api/teams/${seg(id)}/rotate-key`);
        replace(rotated, keyOnce(id, r.virtual_key));
      } }, "Rotate now")));
  } }, "Rotate key…");
  const suspended = team.status === "suspended";
  const actions = card("Actions",
    form("add-credits", [
      field("Credits to add", h("input", { name: "credits_amount", type: "number", min: 1, required: true })),
      field("Reason", h("input", { name: "reason", placeholder: "Monthly top-up" })),
    ], "Add credits", async (f) => {
      await post(`/api/credits/teams/${seg(id)}/add`, {
        credits_amount: Number(val(f, "credits_amount")), reason: val(f, "reason"),
      });
      await reload();
    }),
    h("div", { class: "actions" },
      suspended
        ? h("button", { "data-testid": "resume", onclick: async () => {
          await post(`/api/teams/${seg(id)}/resume`); await reload();
        } }, "Resume team")
        : h("button", { class: "danger", "data-testid": "suspend", onclick: async () => {
          await post(`/api/teams/${seg(id)}/suspend`, { reason: "suspended from the dashboard" });
          await reload();
        } }, "Suspend team"),
      rotate),
    rotated);
  const picker = groupPicker(groups.model_groups.map((g) => g.group_name), team.model_groups);
  const assign = card("Model groups", form("assign-groups", [picker.el], "Save model groups",
    async () => {
      await put(`/api/teams/${seg(id)}/model-groups`, picker.selected());
      await reload();
    }));
  const limits = LIMIT_FIELDS.filter(([k]) => k in team);
  const limitsCard = limits.length ? card("Limits", form("limits", limits.map(([k, label, hint]) =>
    field(label, h("input", { name: k, type: "number", min: 0, step: "any", value: String(team[k]),
      placeholder: hint }))), "Save limits", async (f) => {
    await patch(`/api/teams/${seg(id)}/limits`,
      Object.fromEntries(limits.map(([k]) => [k, Number(val(f, k) || 0)])));
    await reload();
  })) : null;
  const jobsCard = card(`Jobs (${jobs.total_jobs})`, table([
    { title: "Job", cell: (j) => link(["jobs", j.job_id], j.job_id.slice(0, 8)) },
    { title: "Type", cell: (j) => j.job_type },
    { title: "Status", cell: (j) => h("span", { class: `pill ${j.status}` }, j.status) },
    { title: "Calls", class: "num", cell: (j) => j.costs.total_calls },
    { title: "Tokens", class: "num", cell: (j) => j.costs.total_tokens },
    { title: "Cost", class: "num", cell: (j) => usd(j.costs.total_cost_usd) },
    { title: "Created", cell: (j) => when(j.created_at) },
  ], jobs.jobs, "jobs-table"));
  const txCard = card(`Credit transactions (${txs.total_transactions})`, table([
    { title: "When", cell: (t) => when(t.created_at) },
    { title: "Type", cell: (t) => t.transaction_type },
    { title: "Credits", class: "num", cell: (t) => t.credits_amount },
    { title: "Balance after", class: "num", cell: (t) => t.balance_after },
    { title: "Reason", cell: (t) => t.reason },
    { title: "Job", cell: (t) => (t.job_id ? link(["jobs", t.job_id], t.job_id.slice(0, 8)) : "—") },
  ], txs.transactions, "transactions-table"));
  const chart = h("div");
  replace(el,
    h("p", {}, link(["orgs", team.organization_id], `← ${team.organization_id}`)),
    h("h1", {}, team.team_alias, " ", h("span", { class: "muted" }, team.team_id)),
    h("div", { class: "grid" }, info, actions),
    assign, limitsCard, jobsCard, marginCard(margin),
    card("Tokens per model group and day (latest jobs)", chart),
    txCard);
  await teamModelChart(chart, jobs.jobs);
}

export async function jobPage(el, id) {
  const job = await get(`/api/jobs/${seg(id)}`);
  const c = job.costs;
  replace(el,
    h("p", {}, link(["teams", job.team_id], `← ${job.team_id}`)),
    h("h1", {}, "Job ", h("span", { class: "muted" }, job.job_id)),
    card("Job", dl([
      ["Status", h("span", { class: `pill ${job.status}` }, job.status)],
      ["Type", job.job_type],
      ["User", job.user_id || "—"],
      ["Created", when(job.created_at)],
      ["Completed", when(job.completed_at)],
      ["Credit applied", job.credit_applied ? "yes" : "no"],
      ["Calls (ok / failed)", `${c.total_calls} (${c.successful_calls} / ${c.failed_calls})`],
      ["Tokens", String(c.total_tokens)],
      ["Cost", `${usd(c.total_cost_usd)} (${c.pricing})`],
      ["Error", job.error_message ?? "—"],
    ])),
    card(`Calls (${job.calls.length})`, table([
      { title: "Call", cell: (k) => k.call_id.slice(0, 8) },
      { title: "Model group", cell: (k) => k.model_group },
      { title: "Purpose", cell: (k) => k.purpose },
      { title: "Status", cell: (k) => h("span", { class: `pill ${k.status}` }, k.status) },
      { title: "Tokens", class: "num", cell: (k) => k.tokens },
      { title: "Latency ms", class: "num", cell: (k) => k.latency_ms },
      { title: "Error", cell: (k) => k.error ?? "" },
      { title: "When", cell: (k) => when(k.created_at) },
    ], job.calls, "calls-table")),
    notice("info", "Metadata: " + JSON.stringify(job.metadata)));
}
