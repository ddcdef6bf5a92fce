// Organizations: the list, create, and one organization's teams (create a team, its usage).
import { get, post, seg } from "./api.js";
import { card, field, form, h, link, notice, replace, table, usd, val, when } from "./dom.js";
import { groupPicker, keyOnce } from "./teams.js";
import { orgUsageChart } from "./usage.js";

export async function orgsPage(el) {
  const page = await get("/api/organizations?limit=1000");
  const list = h("div");
  const render = (orgs) => replace(list, table([
    { title: "Organization", cell: (o) => link(["orgs", o.organization_id], o.organization_id) },
    { title: "Name", cell: (o) => o.name },
    { title: "Status", cell: (o) => o.status },
    { title: "Created", cell: (o) => when(o.created_at) },
  ], orgs, "orgs-table"));
  render(page.organizations);
  replace(el,
    h("h1", {}, "Organizations"),
    card(`${page.total_organizations} organization(s)`, list),
    card("New organization", form("create-org", [
      field("Organization id", h("input", { name: "organization_id", required: true,
        placeholder: "org_your_company" })),
      field("Name", h("input", { name: "name", required: true, placeholder: "Your Company" })),
    ], "Create organization", async (f) => {
      const org = await post("/api/organizations/create", {
        organization_id: val(f, "organization_id"), name: val(f, "name"),
      });
      f.reset();
      const again = await get("/api/organizations?limit=1000");
      render(again.organizations);
      return notice("ok", `Organization ${org.organization_id} created.`);
    })));
}

export async function orgPage(el, id) {
  const [org, teams, groups] = await Promise.all([
    get(`/api/organizations/${seg(id)}`),
    get(`/api/organizations/${seg(id)}/teams`),
    get("/api/model-groups"),
  ]);
  const list = h("div");
  const heading = h("h2");
  const render = (rows) => replace(list, replace(heading, `Teams (${rows.length})`), table([
    { title: "Team", cell: (t) => link(["teams", t.team_id], t.team_id) },
    { title: "Alias", cell: (t) => t.team_alias },
    { title: "Status", cell: (t) => h("span", { class: `pill ${t.status}` }, t.status) },
    { title: "Credits left", class: "num", cell: (t) => t.credits.credits_remaining },
    { title: "Allocated", class: "num", cell: (t) => t.credits.credits_allocated },
    { title: "Budget", class: "num", cell: (t) => usd(t.max_budget_usd) },
    { title: "Model groups", cell: (t) => t.model_groups.join(", ") },
  ], rows, "teams-table"));
  render(teams.teams);
  const created = h("div");
  const picker = groupPicker(groups.model_groups.map((g) => g.group_name), []);
  const usage = h("div");
  replace(el,
    h("p", {}, link(["orgs"], "← Organizations")),
    h("h1", {}, org.name, " ", h("span", { class: "muted" }, org.organization_id)),
    card(null, list),
    card("New team", form("create-team", [
      field("Team id", h("input", { name: "team_id", required: true, placeholder: "team_engineering" })),
      field("Alias", h("input", { name: "team_alias", placeholder: "Engineering" })),
      field("Credits", h("input", { name: "credits_allocated", type: "number", min: 0,
        defaultValue: "100" })),
      h("fieldset", {}, h("legend", {}, "Model groups"), picker.el),
    ], "Create team", async (f) => {
      const team = await post("/api/teams/create", {
        organization_id: id,
        team_id: val(f, "team_id"),
        team_alias: val(f, "team_alias"),
        credits_allocated: Number(val(f, "credits_allocated") || 0),
        model_groups: picker.selected(),
      });
      f.reset();
      render((await get(`/api/organizations/${seg(id)}/teams`)).teams);
      replace(created, keyOnce(team.team_id, team.virtual_key));
      return notice("ok", `Team ${team.team_id} created.`);
    }), created),
    card("Usage per team, last 6 months", usage));
  await orgUsageChart(usage, id);
}
