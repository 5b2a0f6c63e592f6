"""The audit's review page: one self-contained HTML file to check suspected label errors.

Checked rows export as ``goemo train --corrections`` (``id,label,action``) or ``--exclude``
(``id``) files. The logic sits in its own script block (``id="audit-logic"``) with no DOM
access, so tests run it in Node.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from typing import Any

from goemo import __version__

LOGIC_SCRIPT_ID = "audit-logic"

# Pure functions: no DOM. Rows are the JSON objects of `render_review_page`'s ``issues``.
LOGIC_JS = r"""
function filterRows(rows, f) {
  const q = (f.query || "").toLowerCase();
  return rows.filter(r =>
    (!f.label || r.label === f.label) &&
    (!f.kind || r.kind === f.kind) &&
    (!q || r.text.toLowerCase().includes(q) || String(r.id).toLowerCase().includes(q)));
}
function sortRows(rows, key) {
  const out = rows.slice();
  const by = {
    rank: (a, b) => a.rank - b.rank,
    score: (a, b) => b.score - a.score || a.rank - b.rank,
    probability: (a, b) => b.probability - a.probability || a.rank - b.rank,
    label: (a, b) => a.label.localeCompare(b.label) || a.rank - b.rank,
    id: (a, b) => String(a.id).localeCompare(String(b.id)) || a.rank - b.rank,
  }[key] || ((a, b) => a.rank - b.rank);
  out.sort(by);
  return out;
}
function csvField(value) {
  const s = String(value);
  return /[",\r\n]/.test(s) || s !== s.trim() ? '"' + s.replace(/"/g, '""') + '"' : s;
}
function correctionsCsv(rows) {
  const lines = ["id,label,action"];
  for (const r of sortRows(rows, "rank")) {
    lines.push([r.id, r.label, r.kind === "missing" ? "add" : "remove"].map(csvField).join(","));
  }
  return lines.join("\n") + "\n";
}
function exclusionsCsv(rows) {
  const seen = new Set();
  const lines = ["id"];
  for (const r of sortRows(rows, "rank")) {
    if (!seen.has(r.id)) { seen.add(r.id); lines.push(csvField(r.id)); }
  }
  return lines.join("\n") + "\n";
}
"""

UI_JS = r"""
const DATA = JSON.parse(document.getElementById("audit-data").textContent);
const ROWS = DATA.issues;
const checked = new Set();
let shown = 200;
const $ = id => document.getElementById(id);
function current() {
  return sortRows(filterRows(ROWS, {label: $("label").value, kind: $("kind").value, query: $("query").value}),
                  $("sort").value);
}
function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function draw() {
  const rows = current();
  const body = $("rows");
  body.replaceChildren();
  for (const r of rows.slice(0, shown)) {
    const tr = el("tr", {class: r.kind});
    const box = el("input", {type: "checkbox", "aria-label": "accept rank " + r.rank});
    box.checked = checked.has(r.rank);
    box.addEventListener("change", () => { box.checked ? checked.add(r.rank) : checked.delete(r.rank); count(); });
    const c = el("td"); c.append(box); tr.append(c);
    tr.append(el("td", {class: "num"}, r.rank));
    tr.append(el("td", {class: "num"}, r.score.toFixed(3)));
    tr.append(el("td", {}, r.kind === "missing" ? "missing (add?)" : "spurious (remove?)"));
    tr.append(el("td", {class: "label"}, r.label));
    tr.append(el("td", {class: "num"}, r.probability.toFixed(3)));
    const t = el("td", {class: "text"});
    t.append(el("div", {}, r.text));
    const others = el("div", {class: "others"});
    others.append(el("span", {class: "id"}, r.id));
    for (const l of r.labels) others.append(el("span", {class: l === r.label ? "chip this" : "chip"}, l));
    if (!r.labels.length) others.append(el("span", {class: "none"}, "no labels"));
    t.append(others);
    tr.append(t);
    body.append(tr);
  }
  $("more").hidden = rows.length <= shown;
  $("status").textContent = rows.length + " of " + ROWS.length + " pairs shown by the filters" +
    (rows.length > shown ? " (first " + shown + " listed)" : "");
  count();
}
function count() { $("checked").textContent = checked.size + " checked"; }
function save(name, text) {
  const a = el("a", {href: URL.createObjectURL(new Blob([text], {type: "text/csv"})), download: name});
  document.body.append(a); a.click(); a.remove();
}
function picked() { return ROWS.filter(r => checked.has(r.rank)); }
for (const id of ["label", "kind", "sort"]) $(id).addEventListener("change", () => { shown = 200; draw(); });
$("query").addEventListener("input", () => { shown = 200; draw(); });
$("more").addEventListener("click", () => { shown += 500; draw(); });
$("check-shown").addEventListener("click", () => { for (const r of current().slice(0, shown)) checked.add(r.rank); draw(); });
$("clear").addEventListener("click", () => { checked.clear(); draw(); });
$("export").addEventListener("click", () => save("corrections.csv", correctionsCsv(picked())));
$("export-ids").addEventListener("click", () => save("exclude.csv", exclusionsCsv(picked())));
draw();
"""

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; margin: 0 0 .3em; }
.meta { color: #555; margin-bottom: 1em; }
.controls { display: flex; flex-wrap: wrap; gap: .6em; align-items: center; margin: .8em 0;
            position: sticky; top: 0; background: #fff; padding: .5em 0; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #eee; padding: .35em .5em; vertical-align: top; text-align: left; }
th { background: #f6f6f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.missing td.label { color: #0a5; } tr.spurious td.label { color: #c30; }
td.text { max-width: 55em; }
.others { margin-top: .25em; }
.chip { display: inline-block; background: #eef; border-radius: 3px; padding: 0 .4em; margin-right: .3em; font-size: .9em; }
.chip.this { background: #fde; }
.id { color: #888; margin-right: .6em; font-size: .85em; }
.none { color: #999; font-size: .9em; }
button { cursor: pointer; }
details { margin: .5em 0 1em; }
"""


def _json_for_script(value: Any) -> str:
    """JSON that cannot end its ``<script>`` element early, whatever the texts hold."""
    text = json.dumps(value, ensure_ascii=True, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_review_page(
    issues: Sequence[Mapping[str, Any]],
    summary: Sequence[Mapping[str, Any]],
    label_names: Sequence[str],
    about: Mapping[str, Any],
) -> str:
    """The review page as one HTML string, from `issue_rows`-style rows and `LabelQuality.summary` rows.

    >>> "<script" in render_review_page([], [], ["joy"], {"texts": 0, "folds": 3, "split": "train", "source": "x"})
    True
    """
    esc = html.escape
    kinds = {k: sum(1 for r in issues if r["kind"] == k) for k in ("missing", "spurious")}
    options = "".join(f'<option value="{esc(n)}">{esc(n)}</option>' for n in label_names)
    rows = "".join(
        f"<tr><td>{esc(str(r['label']))}</td><td class=num>{r['given']:,}</td>"
        f"<td class=num>{_fmt(r['mean_prob_given'])}</td><td class=num>{_fmt(r['mean_prob_absent'])}</td>"
        f"<td class=num>{r['missing']:,}</td><td class=num>{r['spurious']:,}</td>"
        f"<td class=num>{_fmt(r['suspected_rate'], pct=True)}</td></tr>"
        for r in summary
    )
    data = _json_for_script({"issues": list(issues)})
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>goemo audit: suspected label errors</title>
<style>{CSS}</style></head>
<body>
<h1>Suspected label errors</h1>
<div class="meta">{int(about.get("texts", 0)):,} texts of {esc(str(about.get("split", "")))} from
{esc(str(about.get("source", "")))}, each scored by the one of {esc(str(about.get("folds", "")))} fold models
that never trained on it. {len(issues):,} pairs flagged: {kinds["missing"]:,} missing (the model is sure the
label applies; it is not given), {kinds["spurious"]:,} spurious (given; the model is sure it does not apply).
Flagged: the model's probability passes the label's own threshold (confident learning). Score: p(other value) -
p(given value), from -1 to 1 (higher is surer). goemo {esc(__version__)}.</div>
<details><summary>Per label</summary>
<table><thead><tr><th>label</th><th>texts with it</th><th>mean p, given</th><th>mean p, not given</th>
<th>missing</th><th>spurious</th><th>suspected rate</th></tr></thead><tbody>{rows}</tbody></table>
</details>
<div class="controls">
<label>label <select id="label"><option value="">all</option>{options}</select></label>
<label>kind <select id="kind"><option value="">all</option><option value="missing">missing</option>
<option value="spurious">spurious</option></select></label>
<label>sort <select id="sort"><option value="rank">rank</option><option value="score">score</option>
<option value="probability">probability</option><option value="label">label</option><option value="id">id</option></select></label>
<label>search <input id="query" type="search" placeholder="text or id"></label>
<button id="check-shown" type="button">check listed</button>
<button id="clear" type="button">uncheck all</button>
<span id="checked"></span>
<button id="export" type="button" title="missing: add, spurious: remove; for goemo train --corrections">export corrections CSV</button>
<button id="export-ids" type="button" title="the checked texts' ids, for goemo train --exclude">export ids to exclude</button>
</div>
<div id="status"></div>
<table><thead><tr><th>ok</th><th>rank</th><th>score</th><th>kind</th><th>label</th><th>p</th>
<th>text, its id and given labels</th></tr></thead><tbody id="rows"></tbody></table>
<p><button id="more" type="button" hidden>show more</button></p>
<script type="application/json" id="audit-data">{data}</script>
<script id="{LOGIC_SCRIPT_ID}">{LOGIC_JS}</script>
<script>{UI_JS}</script>
</body></html>
"""


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None:
        return "–"
    return f"{100 * float(value):.1f}%" if pct else f"{float(value):.3f}"
