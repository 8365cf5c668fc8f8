// vidtune admin page: polls /api/admin/stats and redraws the GSB tables every 5 s.
"use strict";
const pct = (x) => (x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)}%`);
const ci = (v) => (v && v[0] !== null ? ` [${pct(v[0])}, ${pct(v[1])}]` : "");
const signed = (x) => (x === null || x === undefined ? "–" : `${x >= 0 ? "+" : ""}${(100 * x).toFixed(1)}%`);
const sci = (v) => (v && v[0] !== null ? ` [${signed(v[0])}, ${signed(v[1])}]` : "");

function row(tbody, cells) {
  const tr = tbody.insertRow();
  for (const c of cells) tr.insertCell().textContent = c;
  return tr;
}

async function refresh() {
  const resp = await fetch("/api/admin/stats");
  if (resp.status === 401 || resp.status === 403) { window.location = "/login"; return; }
  const data = await resp.json();
  const s = data.summary;
  document.getElementById("summary").textContent =
    `A = ${s.system_a}, B = ${s.system_b}. ${s.n_judgments} judgments on ${s.n_items_judged} / ${s.n_items} items ` +
    `(${s.n_prompts} prompts) by ${s.n_annotators} annotators; ${s.n_skipped} skipped; raters per item ` +
    `${s.raters_per_item === null ? "–" : s.raters_per_item.toFixed(2)}; A shown left ${pct(s.a_left_fraction)}.`;
  const body = document.querySelector("#gsb tbody");
  body.replaceChildren();
  for (const [aspect, t] of Object.entries(data.aspects)) {
    row(body, [aspect.replace(/_/g, " "), t.G, t.S, t.B, t.N, pct(t.win_rate) + ci(t.win_rate_wilson),
               pct(t.win_rate) + ci(t.win_rate_bootstrap), pct(t.preference) + ci(t.preference_bootstrap),
               signed(t.margin) + sci(t.margin_bootstrap),
               t.sign_test_p === null ? "–" : t.sign_test_p.toPrecision(3)]).dataset.aspect = aspect;
  }
  const people = document.querySelector("#people tbody");
  people.replaceChildren();
  for (const p of data.annotators) row(people, [p.name, p.done, p.skipped]);
  document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

refresh();
setInterval(() => refresh().catch(() => {}), 5000);
