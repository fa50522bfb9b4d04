"""The status pages' HTML, CSS and script: served by the exporter itself, nothing external.

The shells are static; the script fetches ``status.json`` / ``target.json`` with the filter
in the address bar, redraws only the parts that change (so the filter being typed and the
scroll position stay), and draws the sparklines and the latency chart as inline SVG.
"""

from __future__ import annotations

import html

CSS = """
:root{--ok:#2e7d32;--timeout:#ef6c00;--refused:#c62828;--unreachable:#6a1b9a;--dns:#1565c0;
--tls:#ad1457;--proto:#6d4c41;--err:#37474f;--pending:#9e9e9e;--line:#e0e0e0}
body{font-family:system-ui,sans-serif;margin:0;color:#212121;background:#fafafa}
header{background:#263238;color:#fff;padding:.5em 1em;display:flex;gap:1.5em;align-items:center;
flex-wrap:wrap}
header h1{font-size:1.1em;margin:0}header a{color:#b3e5fc}
main{padding:.5em 1em}
.banner{background:#ffebee;border:1px solid #c62828;color:#7f0000;padding:.5em 1em;margin:.5em 0}
.banner pre{margin:.3em 0 0;white-space:pre-wrap}
.health{color:#455a64;font-size:85%;margin:.3em 0}.health b{color:#212121}
.bad{color:#c62828;font-weight:bold}
form{display:flex;gap:.6em;flex-wrap:wrap;margin:.5em 0;align-items:center}
form input,form select{padding:2px 4px}
table{border-collapse:collapse;font-size:85%;background:#fff}
td,th{padding:3px 8px;border-bottom:1px solid var(--line);text-align:left;white-space:nowrap;
vertical-align:middle}
th{background:#eceff1;position:sticky;top:0}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.wrap{white-space:normal;max-width:28em;color:#555}
.st{font-weight:bold;padding:1px 6px;border-radius:3px;color:#fff}
.st-up{background:var(--ok)}.st-down{background:var(--refused)}
.st-flapping{background:var(--timeout)}.st-pending{background:var(--pending)}
.k{display:inline-block;padding:0 4px;border-radius:3px;color:#fff;font-size:90%}
.cells{display:inline-flex;gap:1px}.cell{display:inline-block;width:7px;height:14px}
.k-success{background:var(--ok)}.k-timeout{background:var(--timeout)}
.k-refused{background:var(--refused)}.k-unreachable{background:var(--unreachable)}
.k-dns_error{background:var(--dns)}.k-tls_error{background:var(--tls)}
.k-protocol_error{background:var(--proto)}.k-error{background:var(--err)}
.legend .k{margin-right:.3em}
.spark polyline{fill:none;stroke:#1565c0;stroke-width:1.2}
.pager{margin:.5em 0}.pager button{margin:0 .3em}
h2{font-size:1em;margin:1.2em 0 .3em}
#chart{background:#fff;border:1px solid var(--line)}
#chart .axis{stroke:#9e9e9e;stroke-width:1}#chart text{font-size:10px;fill:#616161}
#chart polyline{fill:none;stroke:#1565c0;stroke-width:1.5}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 1em;font-size:90%}
dt{color:#616161}dd{margin:0}
"""

LEGEND = (
    '<span class="legend">'
    + "".join(
        f'<span class="k k-{kind}">{label}</span>'
        for kind, label in (
            ("success", "success"),
            ("timeout", "timeout"),
            ("refused", "refused"),
            ("unreachable", "unreachable"),
            ("dns_error", "dns"),
            ("tls_error", "tls"),
            ("protocol_error", "protocol"),
            ("error", "error"),
        )
    )
    + "</span>"
)

SCRIPT = r"""
"use strict";
const $ = (id) => document.getElementById(id);
const esc = (v) => String(v == null ? "" : v).replace(/[&<>"']/g,
  (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const KIND = {success: "success", timeout: "timeout", refused: "refused",
  unreachable: "unreachable", dns_error: "dns", tls_error: "tls",
  protocol_error: "protocol", error: "error"};
function ms(v) {
  if (v == null) return "";
  if (v >= 1000) return (v / 1000).toFixed(2) + "\u00a0s";
  if (v >= 100) return v.toFixed(0) + "\u00a0ms";
  if (v >= 10) return v.toFixed(1) + "\u00a0ms";
  return v.toFixed(2) + "\u00a0ms";
}
function clock(ts) {
  return ts ? new Date(ts * 1000).toLocaleTimeString([], {hour12: false}) : "";
}
function span(seconds) {
  if (seconds == null) return "";
  seconds = Math.max(0, Math.round(seconds));
  const d = Math.floor(seconds / 86400), h = Math.floor(seconds % 86400 / 3600),
    m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
  if (d) return d + "d " + h + "h";
  if (h) return h + "h " + m + "m";
  if (m) return m + "m " + s + "s";
  return s + "s";
}
function kind(result) {
  return result ? '<span class="k k-' + esc(result) + '">' + esc(KIND[result] || result) +
    "</span>" : "";
}
function cells(h) {
  let out = '<span class="cells">';
  for (let i = 0; i < h.result.length; i++) {
    const tip = clock(h.ts[i]) + " \u00b7 " + h.result[i] + " \u00b7 " + ms(h.ms[i]);
    out += '<span class="cell k-' + esc(h.result[i]) + '" title="' + esc(tip) + '"></span>';
  }
  return out + "</span>";
}
function spark(h) {
  const n = h.ms.length, w = 90, ht = 18;
  if (n < 2) return "";
  const top = Math.max.apply(null, h.ms) || 1;
  const pts = h.ms.map((v, i) => (i * w / (n - 1)).toFixed(1) + "," +
    (ht - 1 - v / top * (ht - 2)).toFixed(1)).join(" ");
  return '<svg class="spark" width="' + w + '" height="' + ht + '"><title>max ' +
    esc(ms(top)) + '</title><polyline points="' + pts + '"/></svg>';
}
function since(r, now) {
  if (r.since == null) return "";
  const word = r.up ? "up" : "down";
  return '<span title="' + esc(new Date(r.since * 1000).toLocaleString()) + '">' + word +
    " " + span(now - r.since) + "</span>";
}
function why(r) {
  if (r.last_result && r.last_result !== "success") return esc(r.detail);
  if (r.last_failure) {
    return "last failure " + span(Date.now() / 1000 - r.last_failure.ts) + " ago: " +
      kind(r.last_failure.result) + " " + esc(r.last_failure.detail);
  }
  return "";
}
function banners(list) {
  $("banners").innerHTML = list.map((b) => '<div class="banner" data-kind="' + esc(b.kind) +
    '"><b>' + esc(b.title) + "</b>" + (b.errors.length ? "<pre>" +
    esc(b.errors.join("\n")) + "</pre>" : "") + "</div>").join("");
}
function health(h) {
  const bad = (ok, text) => ok ? text : '<span class="bad">' + text + "</span>";
  $("health").innerHTML = "version <b>" + esc(h.version) + "</b> \u00b7 config <b>" +
    esc(h.config) + "</b> \u00b7 " + bad(h.reload_successful, h.reload_successful ?
    "last reload ok " + esc(clock(h.reload_success_ts)) : "last reload rejected") +
    " \u00b7 " + bad(h.target_files_ok, h.target_files_ok ? "target files ok" :
    "target files refused") + " \u00b7 skipped probes <b>" + h.skipped_probes +
    "</b> \u00b7 scheduler lag <b>" + esc(ms(h.lag_mean_ms) || "\u2013") +
    "</b> \u00b7 probes in flight <b>" + h.probes_in_flight + "</b> \u00b7 /probe requests <b>" +
    h.probe_requests + "</b> \u00b7 up " + span(Date.now() / 1000 - h.started);
}
function refreshSeconds() {
  const v = Number(new URLSearchParams(location.search).get("refresh") || 5);
  return isFinite(v) && v >= 0 ? Math.min(v, 3600) : 5;
}
const state = {busy: false, again: false, refreshes: 0, page: 1};
function markRefreshed() {
  state.refreshes++;
  document.body.dataset.refreshes = String(state.refreshes);
  $("updated").textContent = "updated " + clock(Date.now() / 1000);
}
function failed(err) {
  $("updated").textContent = "update failed (" + String(err).slice(0, 80) + "), retrying";
}

/* the list */
const FIELDS = ["q", "module", "label", "state"];
function listQuery(page) {
  const p = new URLSearchParams();
  for (const f of FIELDS) { const v = $(f).value.trim(); if (v && v !== "all") p.set(f, v); }
  if (page > 1) p.set("page", String(page));
  const r = new URLSearchParams(location.search).get("refresh");
  if (r) p.set("refresh", r);
  return p;
}
function drawList(d) {
  const s = d.summary;
  $("summary").textContent = s.targets + (s.targets === 1 ? " target: " : " targets: ") +
    s.up + " up, " + s.down + " down, " + s.flapping + " flapping, " + s.pending + " pending";
  banners(d.banners);
  health(d.health);
  const sel = $("module"), want = d.query.module;
  const have = Array.from(sel.options).slice(1).map((o) => o.value).join("\n");
  if (have !== d.modules.join("\n")) {
    sel.innerHTML = '<option value="">any module</option>' +
      d.modules.map((m) => "<option>" + esc(m) + "</option>").join("");
    sel.value = want;
  }
  $("rows").innerHTML = d.rows.map((r) => '<tr data-id="' + esc(r.id) + '" data-state="' +
    esc(r.state) + '"><td><a href="target?id=' + esc(r.id) + '">' + esc(r.target) +
    "</a></td><td>" + esc(r.module) + "</td><td>" + esc(r.labels) + '</td><td><span class="st st-' +
    esc(r.state) + '">' + esc(r.state) + "</span></td><td>" + since(r, d.now) + "</td><td>" +
    kind(r.last_result) + '</td><td class="num">' + ms(r.last_ms) + "</td><td>" +
    spark(r.history) + "</td><td>" + cells(r.history) + '</td><td class="num">' +
    (r.ratio == null ? "" : Math.round(r.ratio * 100) + "%") + '</td><td class="wrap">' +
    why(r) + "</td></tr>").join("") ||
    '<tr><td colspan="11">no target matches</td></tr>';
  $("pageinfo").textContent = "page " + d.page + " of " + d.pages + " (" + d.total +
    " matching)";
  $("prev").disabled = d.page <= 1;
  $("next").disabled = d.page >= d.pages;
  state.page = d.page;
  $("probes").innerHTML = d.probes.map((p) => "<tr><td>" + esc(clock(p.ts)) + "</td><td>" +
    esc(p.module) + "</td><td>" + esc(p.target) + "</td><td>" + kind(p.result) +
    '</td><td class="num">' + ms(p.ms) + '</td><td class="wrap">' + esc(p.detail) +
    '</td><td><a href="logs?id=' + p.id + '">log</a></td></tr>').join("") ||
    '<tr><td colspan="7">none yet</td></tr>';
}
function loadList() {
  if (state.busy) { state.again = true; return Promise.resolve(); }
  state.busy = true;
  const p = listQuery(state.page || 1);
  history.replaceState(null, "", "?" + p.toString());
  p.delete("refresh");
  return fetch("status.json?" + p.toString(), {cache: "no-store"})
    .then((r) => r.ok ? r.json() : r.text().then((t) => { throw new Error(t.trim()); }))
    .then((d) => { drawList(d); markRefreshed(); })
    .catch(failed)
    .finally(() => {
      state.busy = false;
      if (state.again) { state.again = false; loadList(); }  /* a filter changed meanwhile */
    });
}
function startList() {
  const p = new URLSearchParams(location.search);
  for (const f of FIELDS) if (p.get(f)) $(f).value = p.get(f);
  state.page = Number(p.get("page") || 1) || 1;
  let timer = 0;
  const changed = () => { state.page = 1; clearTimeout(timer); timer = setTimeout(loadList, 250); };
  for (const f of FIELDS) $(f).addEventListener("input", changed);
  $("filters").addEventListener("submit", (e) => { e.preventDefault(); changed(); });
  $("prev").addEventListener("click", () => { state.page--; loadList(); });
  $("next").addEventListener("click", () => { state.page++; loadList(); });
  loadList();
  const every = refreshSeconds();
  if (every > 0) setInterval(loadList, every * 1000);
}

/* one target */
function chart(h) {
  const svg = $("chart"), W = 720, H = 220, L = 56, R = 10, T = 10, B = 28;
  const n = h.ms.length;
  if (!n) { svg.innerHTML = '<text x="20" y="30">no probe yet</text>'; return; }
  const top = Math.max.apply(null, h.ms) * 1.1 || 1;
  const t0 = h.ts[0], t1 = h.ts[n - 1];
  /* one step per probe: their times are kept to the second only */
  const x = (i) => n === 1 ? L + (W - L - R) / 2 : L + i / (n - 1) * (W - L - R);
  const y = (v) => T + (H - T - B) * (1 - v / top);
  let out = '<line class="axis" x1="' + L + '" y1="' + (H - B) + '" x2="' + (W - R) +
    '" y2="' + (H - B) + '"/><line class="axis" x1="' + L + '" y1="' + T + '" x2="' + L +
    '" y2="' + (H - B) + '"/>';
  for (const f of [0, 0.5, 1]) {
    out += '<text x="' + (L - 4) + '" y="' + (y(top * f) + 3) + '" text-anchor="end">' +
      esc(ms(top * f)) + "</text>";
  }
  out += '<text x="' + L + '" y="' + (H - 8) + '">' + esc(clock(t0)) + "</text>" +
    '<text x="' + (W - R) + '" y="' + (H - 8) + '" text-anchor="end">' + esc(clock(t1)) +
    "</text>";
  out += '<polyline points="' + h.ms.map((v, i) => x(i).toFixed(1) + "," + y(v).toFixed(1))
    .join(" ") + '"/>';
  for (let i = 0; i < n; i++) {
    out += '<circle class="pt k-' + esc(h.result[i]) + '" style="fill:var(--' +
      ({success: "ok", timeout: "timeout", refused: "refused", unreachable: "unreachable",
        dns_error: "dns", tls_error: "tls", protocol_error: "proto"}[h.result[i]] || "err") +
      ')" cx="' + x(i).toFixed(1) + '" cy="' + y(h.ms[i]).toFixed(1) + '" r="3"><title>' +
      esc(clock(h.ts[i]) + " \u00b7 " + h.result[i] + " \u00b7 " + ms(h.ms[i])) +
      "</title></circle>";
  }
  svg.innerHTML = out;
}
function drawTarget(d) {
  document.title = d.target + " \u00b7 netprobe-exporter";
  $("name").textContent = d.target;
  banners(d.banners);
  health(d.health);
  const expiry = d.tls_expiry == null ? "\u2013" : new Date(d.tls_expiry * 1000).toLocaleString() +
    " (" + Math.floor((d.tls_expiry - d.now) / 86400) + " days)";
  const facts = [
    ["state", '<span class="st st-' + esc(d.state) + '">' + esc(d.state) + "</span> " +
      since(d, d.now)],
    ["module", esc(d.module)], ["labels", esc(d.labels) || "\u2013"],
    ["address probed", esc(d.ip || "\u2013")], ["interval", esc(d.interval) + " s"],
    ["last probe", esc(clock(d.last_probe_ts)) + " " + kind(d.last_result) + " " + ms(d.last_ms)],
    ["last connect", ms(d.last_connect_ms) || "\u2013"],
    ["last detail", esc(d.detail) || "\u2013"],
    ["last failure", d.last_failure ? esc(new Date(d.last_failure.ts * 1000).toLocaleString()) +
      " " + kind(d.last_failure.result) + " " + esc(d.last_failure.detail) : "\u2013"],
    ["TLS expiry", esc(expiry)],
    ["results since start", Object.keys(d.totals).map((k) => kind(k) + " " + d.totals[k])
      .join(" ") || "\u2013"],
    ["addresses", (d.addresses || []).map((a) => esc(a.ip) + ' <span class="st st-' +
      esc(a.state) + '">' + esc(a.state) + "</span> " + kind(a.last_result) + " " +
      ms(a.last_ms) + (a.detail ? " " + esc(a.detail) : "")).join("<br>") || "\u2013"],
    ["debug", (d.probe_link ? '<a id="probelink" href="' + esc(d.probe_link) +
      '">/probe now (debug)</a> \u00b7 ' : "") + '<a href="' + esc(d.logs_link) +
      '">last /probe log of this target</a>'],
  ];
  $("facts").innerHTML = facts.map((f) => "<dt>" + f[0] + "</dt><dd>" + f[1] + "</dd>").join("");
  chart(d.history);
  const h = d.history, rows = [];
  for (let i = h.result.length - 1; i >= 0; i--) {
    rows.push("<tr><td>" + esc(clock(h.ts[i])) + "</td><td>" + kind(h.result[i]) +
      '</td><td class="num">' + ms(h.ms[i]) + "</td><td class=\"wrap\">" +
      (i === h.result.length - 1 ? esc(d.detail) : "") + "</td></tr>");
  }
  $("results").innerHTML = rows.join("") || '<tr><td colspan="4">no probe yet</td></tr>';
}
function loadTarget() {
  if (state.busy) return Promise.resolve();
  state.busy = true;
  const id = new URLSearchParams(location.search).get("id") || "";
  return fetch("target.json?id=" + encodeURIComponent(id), {cache: "no-store"})
    .then((r) => r.ok ? r.json() : r.text().then((t) => { throw new Error(t.trim()); }))
    .then((d) => { drawTarget(d); markRefreshed(); })
    .catch(failed)
    .finally(() => { state.busy = false; });
}
function startTarget() {
  loadTarget();
  const every = refreshSeconds();
  if (every > 0) setInterval(loadTarget, every * 1000);
}
document.addEventListener("DOMContentLoaded", () => {
  if (document.body.dataset.page === "target") startTarget(); else startList();
});
"""


def _shell(page: str, title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>"
        f'<body data-page="{page}"><header><h1>netprobe-exporter</h1>'
        '<a href="./">targets</a><a href="metrics">metrics</a><a href="config">config</a>'
        '<a href="-/healthy">health</a><a href="-/ready">readiness</a>'
        '<span id="updated"></span></header><main><noscript><p>This page draws itself with '
        'JavaScript; its data is <a href="status.json">status.json</a>.</p></noscript>'
        '<div id="banners"></div>'
        f'<div class="health" id="health"></div>{body}</main>'
        f"<script>{SCRIPT}</script></body></html>\n"
    )


LIST_PAGE = _shell(
    "list",
    "netprobe-exporter",
    '<p id="summary"></p>'
    '<form id="filters" role="search">'
    '<input id="q" name="q" placeholder="target contains" size="22">'
    '<select id="module" name="module"><option value="">any module</option></select>'
    '<input id="label" name="label" placeholder="label (key=value)" size="18">'
    '<select id="state" name="state">'
    '<option value="all">any state</option><option value="down">down</option>'
    '<option value="flapping">flapping</option><option value="pending">pending</option>'
    '<option value="up">up</option></select>'
    f"{LEGEND}</form>"
    "<table><thead><tr><th>target</th><th>module</th><th>labels</th><th>state</th>"
    "<th>since</th><th>last</th><th>latency</th><th>recent latency</th>"
    "<th>recent results (oldest first)</th><th>ok</th><th>why</th></tr></thead>"
    '<tbody id="rows"></tbody></table>'
    '<div class="pager"><button id="prev" type="button">&larr; previous</button>'
    '<span id="pageinfo"></span><button id="next" type="button">next &rarr;</button></div>'
    "<h2>Recent /probe requests</h2>"
    "<table><thead><tr><th>time</th><th>module</th><th>target</th><th>result</th>"
    '<th>duration</th><th>detail</th><th>log</th></tr></thead><tbody id="probes"></tbody></table>',
)

TARGET_PAGE = _shell(
    "target",
    "target · netprobe-exporter",
    '<h2 id="name"></h2><dl id="facts"></dl>'
    "<h2>Latency over the kept history</h2>"
    '<svg id="chart" width="720" height="220" viewBox="0 0 720 220" role="img"'
    ' aria-label="probe latency"></svg>'
    f"<div>{LEGEND}</div>"
    "<h2>Last results (newest first)</h2>"
    "<table><thead><tr><th>time</th><th>result</th><th>latency</th><th>detail</th></tr></thead>"
    '<tbody id="results"></tbody></table>',
)
