// Usage charts (Chart.js, vendor/chart.umd.min.js, loaded by index.html as window.Chart).
// Per team over time: the organization's usage report of each of the last 6 UTC months.
// Per model group over time: the calls of the team's latest jobs, tokens per group and day.
import { get, lastMonths, seg } from "./api.js";
import { h, notice, replace } from "./dom.js";

const COLORS = ["#2563eb", "#16a34a", "#d97706", "#dc2626", "#7c3aed", "#0891b2", "#db2777",
  "#65a30d", "#9333ea", "#475569"];
const JOBS_FOR_MODEL_CHART = 30;

function chart(container, testid, type, labels, datasets, yTitle) {
  const canvas = h("canvas", { "data-testid": testid, role: "img", "aria-label": yTitle });
  replace(container, h("div", { class: "chart" }, canvas));
  return new window.Chart(canvas, {
    type,
    data: {
      labels,
      datasets: datasets.map((d, i) => ({
        ...d, backgroundColor: COLORS[i % COLORS.length], borderColor: COLORS[i % COLORS.length],
      })),
    },
    options: {
      animation: false,
      maintainAspectRatio: false,
      scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true,
        title: { display: true, text: yTitle },
        ticks: { callback: (v) => (yTitle.startsWith("Cost") ? `$${Number(v).toPrecision(2)}` : v) } } },
    },
  });
}

export async function orgUsageChart(container, orgId) {
  const months = lastMonths(6);
  const reports = await Promise.all(months.map((p) =>
    get(`/api/organizations/${seg(orgId)}/usage?period=${p}`)));
  const teams = [...new Set(reports.flatMap((r) => Object.keys(r.teams)))].sort();
  const metric = h("select", { "data-testid": "usage-metric" },
    h("option", { value: "total_cost_usd" }, "Cost (USD)"),
    h("option", { value: "total_tokens" }, "Tokens"),
    h("option", { value: "total_jobs" }, "Jobs"));
  const area = h("div");
  const draw = () => {
    if (!teams.length) return replace(area, notice("info", "No jobs in the last 6 months."));
    const key = metric.value;
    chart(area, "org-usage-chart", "bar", months,
      teams.map((t) => ({ label: t, data: reports.map((r) => (r.teams[t] ? r.teams[t][key] : 0)) })),
      metric.selectedOptions[0].textContent);
  };
  metric.addEventListener("change", draw);
  replace(container, h("label", { class: "field inline" }, h("span", {}, "Show"), metric), area);
  draw();
}

export async function teamModelChart(container, jobs) {
  const latest = jobs.slice(0, JOBS_FOR_MODEL_CHART);
  const details = [];
  for (let i = 0; i < latest.length; i += 4) {
    details.push(...await Promise.all(latest.slice(i, i + 4).map((j) =>
      get(`/api/jobs/${seg(j.job_id)}`))));
  }
  const calls = details.flatMap((j) => j.calls);
  if (!calls.length) return replace(container, notice("info", "No calls yet."));
  const days = [...new Set(calls.map((k) => k.created_at.slice(0, 10)))].sort();
  const groups = [...new Set(calls.map((k) => k.model_group))].sort();
  const sums = new Map();
  for (const k of calls) {
    const key = `${k.model_group}|${k.created_at.slice(0, 10)}`;
    sums.set(key, (sums.get(key) || 0) + k.tokens);
  }
  chart(container, "team-model-chart", "bar", days,
    groups.map((g) => ({ label: g, data: days.map((d) => sums.get(`${g}|${d}`) || 0) })),
    "Tokens");
}
