// The results grid: runs (columns, newest first) x tests (rows: toplevels, each expanding to its items).
// One page for both the one-file report (data embedded below) and the live dashboard (data from
// api/grid, changes from api/events). Only the visible rows and columns are in the DOM.
"use strict";
(() => {
  const ROW_H = 22, COL_W = 100, HEAD_H = 66, NAME_W = 280, OVER_ROWS = 10, OVER_COLS = 2;
  const $ = (id) => document.getElementById(id);
  const CONFIG = JSON.parse($("grid-config").textContent);
  const PALETTE = CONFIG.palette; // kind -> [background, text, symbol, meaning]
  const LIVE = CONFIG.mode === "live";
  const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  const esc = (s) => String(s == null ? "" : s).replace(/[&<>"']/g, (c) => ESC[c]);
  const scroller = $("scroller"), canvas = $("canvas"), view = $("view");
  const cellsIn = $("cells-in"), rowheadsIn = $("rowheads-in"), colheadsIn = $("colheads-in");

  let G = null; // the grid (load)
  let visible = new Int32Array(0); // the rows shown, in order
  let expanded = new Set(); // toplevel rows shown with their items
  let drawn = null; // the rows and columns in the DOM: {r0, r1, c0, c1}
  let selected = null; // [column, row] of the test shown in the details
  const filter = { text: "", statuses: new Set(), changes: false, a: 0, b: 1 };

  document.documentElement.style.setProperty("--col-w", COL_W + "px");

  // -- the data ------------------------------------------------------------------------------------

  function load(data) {
    const decode = new Int16Array(128).fill(-1);
    for (let i = 0; i < data.alphabet.length; i++) decode[data.alphabet.charCodeAt(i)] = i;
    const base = data.alphabet.length, half = base >> 1, width = data.width, nrows = data.rowItem.length;
    const g = {
      pairs: data.pairs, kinds: data.kinds, labels: data.labels, final: data.final, names: data.names, rowItem: data.rowItem,
      rowName: Int32Array.from(data.rowName), nrows, runs: data.runs, seq: data.seq, tests: data.tests,
      pairIndex: new Map(), rowIndex: null, top: new Int32Array(nrows), end: new Int32Array(nrows),
    };
    data.pairs.forEach((p, i) => g.pairIndex.set(p[0] + "\u0000" + p[1], i + 1));
    let t = -1;
    for (let r = 0; r < nrows; r++) {
      if (g.rowItem[r] === "") {
        if (t >= 0) g.end[t] = r;
        t = r;
      }
      g.top[r] = t;
    }
    if (t >= 0) g.end[t] = nrows;
    for (const run of g.runs) {
      const text = run.cells;
      const codeAt = (at) => {
        let v = 0;
        for (let k = 0; k < width; k++) v = v * base + decode[text.charCodeAt(at + k)];
        return v;
      };
      if (run.enc === "d") {
        const codes = new Uint32Array(nrows);
        for (let r = 0; r < nrows; r++) codes[r] = codeAt(r * width);
        run.codes = codes;
      } else {
        const rows = [], codes = [];
        let at = 0, row = -1;
        while (at < text.length) {
          let gap = 0, d;
          while ((d = decode[text.charCodeAt(at++)]) >= half) gap = gap * half + d - half;
          row += gap * half + d + 1;
          rows.push(row);
          codes.push(codeAt(at));
          at += width;
        }
        run.rows = Int32Array.from(rows);
        run.sparse = Uint32Array.from(codes);
      }
      delete run.cells;
    }
    g.runIndex = new Map(g.runs.map((run, i) => [run.id, i]));
    g.maxRunId = g.runs.reduce((m, run) => Math.max(m, run.id), 0);
    return g;
  }

  function cellCode(run, r) {
    if (run.codes) return run.codes[r];
    const at = findRow(run.rows, r);
    return at < 0 ? 0 : run.sparse[at];
  }

  function findRow(rows, r) {
    let lo = 0, hi = rows.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1, v = rows[mid];
      if (v === r) return mid;
      if (v < r) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }

  function forEachCell(run, fn) {
    if (run.codes) {
      const codes = run.codes;
      for (let r = 0; r < codes.length; r++) if (codes[r]) fn(r, codes[r]);
    } else {
      for (let i = 0; i < run.rows.length; i++) fn(run.rows[i], run.sparse[i]);
    }
  }

  // A run's counts are of its leaf tests: its items, and its toplevels that have no items in it.
  function count(run) {
    const byStatus = new Map(), byKind = new Map();
    let total = 0, done = 0, top = -1, topCode = 0, items = 0;
    const add = (code) => {
      const status = G.pairs[code - 1][1], kind = G.kinds[code - 1];
      byStatus.set(status, (byStatus.get(status) || 0) + 1);
      byKind.set(kind, (byKind.get(kind) || 0) + 1);
      total++;
      if (G.final[code - 1]) done++;
    };
    const flush = () => {
      if (top >= 0 && topCode && !items) add(topCode);
    };
    forEachCell(run, (r, code) => {
      if (G.rowItem[r] === "") {
        flush();
        top = r;
        topCode = code;
        items = 0;
      } else {
        if (G.top[r] !== top) {
          flush();
          top = G.top[r];
          topCode = 0;
          items = 0;
        }
        items++;
        add(code);
      }
    });
    flush();
    Object.assign(run, { byStatus, byKind, total, done });
  }

  function fullColumn(run) {
    const all = new Uint32Array(G.nrows);
    forEachCell(run, (r, code) => (all[r] = code));
    return all;
  }

  // -- filters -------------------------------------------------------------------------------------

  // A comma list of test patterns as `dbtool --testpatt` reads them (* and ? glob, % LIKE, test/item,
  // test/ for the toplevel only); an element without * ? % or / matches names that contain it.
  function compilePattern(text) {
    const parts = text.split(",").map((s) => s.trim()).filter(Boolean);
    if (!parts.length) return null;
    const tests = parts.map((p) => {
      if (!/[*?%/]/.test(p)) {
        const low = p.toLowerCase();
        return (name, item) => (item ? name + "/" + item : name).toLowerCase().includes(low);
      }
      const slash = p.indexOf("/");
      const tm = matcher(slash < 0 ? p : p.slice(0, slash));
      const ip = slash < 0 ? null : p.slice(slash + 1);
      const im = ip === null ? null : ip === "" ? (s) => s === "" : matcher(ip);
      return (name, item) => tm(name) && (im === null || im(item));
    });
    return (name, item) => tests.some((f) => f(name, item));
  }

  function matcher(p) {
    const quote = (s) => s.replace(/[.+^${}()|[\]\\]/g, "\\$&");
    if (p.includes("%")) {
      const re = new RegExp("^" + quote(p).replace(/%/g, ".*").replace(/_/g, ".") + "$", "is");
      return (s) => re.test(s);
    }
    const re = new RegExp("^" + quote(p).replace(/\*/g, ".*").replace(/\?/g, ".") + "$", "s");
    return (s) => re.test(s);
  }

  function rebuild() {
    const n = G.nrows, pass = new Uint8Array(n).fill(1);
    const pattern = compilePattern(filter.text);
    if (pattern) for (let r = 0; r < n; r++) if (!pattern(G.names[G.rowName[r]], G.rowItem[r])) pass[r] = 0;
    if (filter.statuses.size) {
      const wanted = new Uint8Array(G.pairs.length + 1), hit = new Uint8Array(n);
      G.pairs.forEach((p, i) => (wanted[i + 1] = filter.statuses.has(p[1]) ? 1 : 0));
      for (const run of G.runs) forEachCell(run, (r, code) => wanted[code] && (hit[r] = 1));
      for (let r = 0; r < n; r++) pass[r] &= hit[r];
    }
    if (filter.changes && G.runs.length > 1) {
      const a = fullColumn(G.runs[filter.a]), b = fullColumn(G.runs[filter.b]);
      for (let r = 0; r < n; r++) if (a[r] === b[r]) pass[r] = 0;
    }
    const rows = [];
    for (let t = 0; t < n; t = G.end[t]) {
      let shown = pass[t];
      for (let r = t + 1; !shown && r < G.end[t]; r++) shown = pass[r];
      if (!shown) continue;
      rows.push(t);
      if (expanded.has(t)) for (let r = t + 1; r < G.end[t]; r++) if (pass[r]) rows.push(r);
    }
    visible = Int32Array.from(rows);
    $("summary").textContent =
      `${G.runs.length} runs × ${G.nrows.toLocaleString()} rows (${G.tests.toLocaleString()} tests)` +
      (visible.length === G.nrows ? "" : ` · ${visible.length.toLocaleString()} shown`);
  }

  // -- drawing -------------------------------------------------------------------------------------

  function layout() {
    const w = scroller.clientWidth, h = scroller.clientHeight;
    canvas.style.width = NAME_W + G.runs.length * COL_W + "px";
    canvas.style.height = HEAD_H + visible.length * ROW_H + "px";
    Object.assign(view.style, { width: w + "px", height: h + "px" });
    Object.assign($("cells").style, { left: NAME_W + "px", top: HEAD_H + "px", width: w - NAME_W + "px", height: h - HEAD_H + "px" });
    Object.assign($("rowheads").style, { top: HEAD_H + "px", width: NAME_W + "px", height: h - HEAD_H + "px" });
    Object.assign($("colheads").style, { left: NAME_W + "px", width: w - NAME_W + "px", height: HEAD_H + "px" });
    Object.assign($("corner").style, { width: NAME_W + "px", height: HEAD_H + "px" });
    draw(true);
  }

  function draw(force) {
    const sl = scroller.scrollLeft, st = scroller.scrollTop;
    const cw = scroller.clientWidth - NAME_W, ch = scroller.clientHeight - HEAD_H;
    const vr0 = Math.floor(st / ROW_H), vr1 = Math.min(visible.length, Math.ceil((st + ch) / ROW_H));
    const vc0 = Math.floor(sl / COL_W), vc1 = Math.min(G.runs.length, Math.ceil((sl + cw) / COL_W));
    if (force || !drawn || vr0 < drawn.r0 || vr1 > drawn.r1 || vc0 < drawn.c0 || vc1 > drawn.c1) {
      const r0 = Math.max(0, vr0 - OVER_ROWS), r1 = Math.min(visible.length, vr1 + OVER_ROWS);
      const c0 = Math.max(0, vc0 - OVER_COLS), c1 = Math.min(G.runs.length, vc1 + OVER_COLS);
      drawn = { r0, r1, c0, c1 };
      cellsIn.innerHTML = cellsHtml(r0, r1, c0, c1);
      rowheadsIn.innerHTML = rowsHtml(r0, r1);
      colheadsIn.innerHTML = colsHtml(c0, c1);
    }
    const dx = drawn.c0 * COL_W - sl, dy = drawn.r0 * ROW_H - st;
    cellsIn.style.transform = `translate(${dx}px,${dy}px)`;
    rowheadsIn.style.transform = `translate(0,${dy}px)`;
    colheadsIn.style.transform = `translate(${dx}px,0)`;
  }

  function testLabel(r) {
    const item = G.rowItem[r];
    return G.names[G.rowName[r]] + (item ? "/" + item : "");
  }

  function cellsHtml(r0, r1, c0, c1) {
    const out = [];
    for (let i = r0; i < r1; i++) {
      const r = visible[i], name = esc(G.names[G.rowName[r]]), item = esc(G.rowItem[r]), y = (i - r0) * ROW_H;
      const label = esc(testLabel(r));
      for (let c = c0; c < c1; c++) {
        const run = G.runs[c], code = cellCode(run, r);
        let kind = "absent", state = "", status = "", text = "";
        if (code) {
          [state, status] = G.pairs[code - 1];
          kind = G.kinds[code - 1];
          text = G.labels[code - 1];
        }
        const sel = selected && selected[0] === c && selected[1] === r ? " sel" : "";
        const title = code ? `${label} in ${esc(run.runname)}: ${esc(state)} ${esc(status)}` : `${label}: not in ${esc(run.runname)}`;
        out.push(
          `<div class="cell k-${kind}${sel}" role="gridcell" style="left:${(c - c0) * COL_W}px;top:${y}px;` +
            `width:${COL_W}px;height:${ROW_H}px;line-height:${ROW_H - 1}px" data-run-id="${run.id}" data-col="${c}" ` +
            `data-row="${r}" data-testname="${name}" data-item-path="${item}" data-state="${esc(state)}" ` +
            `data-status="${esc(status)}" data-kind="${kind}" title="${title}">${PALETTE[kind][2]} ${esc(text)}</div>`,
        );
      }
    }
    return out.join("");
  }

  function rowsHtml(r0, r1) {
    const out = [];
    for (let i = r0; i < r1; i++) {
      const r = visible[i], top = G.rowItem[r] === "", items = top ? G.end[r] - r - 1 : 0;
      const name = esc(G.names[G.rowName[r]]), item = esc(G.rowItem[r]);
      const open = expanded.has(r);
      const toggle = items
        ? `<button class="tog" type="button" data-row="${r}" aria-expanded="${open}" aria-label="items of ${name}">${open ? "▾" : "▸"}</button>`
        : `<span class="tog"></span>`;
      out.push(
        `<div class="rowhead${top ? "" : " item"}" role="rowheader" style="top:${(i - r0) * ROW_H}px;width:${NAME_W}px;` +
          `height:${ROW_H}px" data-row="${r}" data-testname="${name}" data-item-path="${item}">${top ? toggle : ""}` +
          `<span class="nm" title="${esc(testLabel(r))}">${top ? name : item}</span>` +
          (items ? `&nbsp;<span class="ni">(${items})</span>` : "") + `</div>`,
      );
    }
    return out.join("");
  }

  function colsHtml(c0, c1) {
    const out = [];
    for (let c = c0; c < c1; c++) {
      const run = G.runs[c];
      if (run.total === undefined) count(run);
      const kinds = Object.keys(PALETTE).filter((k) => run.byKind.get(k));
      const counts = kinds.map((k) => `${PALETTE[k][2]}${run.byKind.get(k)}`).join(" ");
      const bar = kinds
        .map((k) => `<span class="k-${k}" style="width:${(100 * run.byKind.get(k)) / run.total}%"></span>`)
        .join("");
      const pct = run.total ? Math.floor((100 * run.done) / run.total) : 100;
      const statuses = [...run.byStatus].sort((a, b) => b[1] - a[1]).map(([s, n]) => `${n} ${s}`).join(", ");
      const title = `run ${run.id}: ${run.target} ${run.runname} — ${run.state} ${run.status}; ${run.total} tests` +
        (statuses ? `: ${statuses}` : "") + `; ${pct}% done`;
      const chosen = filter.changes && (c === filter.a || c === filter.b) ? " chosen" : "";
      out.push(
        `<div class="colhead${chosen}" role="columnheader" style="left:${(c - c0) * COL_W}px;width:${COL_W}px;` +
          `height:${HEAD_H}px" data-run-id="${run.id}" data-total="${run.total}" data-done="${run.done}" title="${esc(title)}">` +
          `<div class="tg">${esc(run.target)}</div><div class="rn">${esc(run.runname)}</div>` +
          `<div class="ct">${counts || "no tests"}</div>` +
          `<div class="bar" role="progressbar" aria-valuemin="0" aria-valuemax="100" aria-valuenow="${pct}">${bar}</div></div>`,
      );
    }
    return out.join("");
  }

  // -- the details of a test -----------------------------------------------------------------------

  let detailIndex = null; // "column row" -> [start, end] of its line in the report's details

  function reportDetail(c, r) {
    const text = $("grid-details").textContent;
    if (detailIndex === null) {
      detailIndex = new Map();
      for (let at = 0; at < text.length; ) {
        let nl = text.indexOf("\n", at);
        if (nl < 0) nl = text.length;
        const second = text.indexOf(" ", text.indexOf(" ", at) + 1);
        if (second > at && second < nl) detailIndex.set(text.slice(at, second), [second + 1, nl]);
        at = nl + 1;
      }
    }
    const where = detailIndex.get(c + " " + r);
    return where ? JSON.parse(text.slice(where[0], where[1])) : null;
  }

  function openDetails(c, r) {
    selected = [c, r];
    draw(true);
    const run = G.runs[c], code = cellCode(run, r);
    const [state, status] = code ? G.pairs[code - 1] : ["", ""];
    const head = { test: testLabel(r), run, state, status };
    const panel = $("details");
    panel.hidden = false;
    panel.dataset.testname = G.names[G.rowName[r]];
    panel.dataset.itemPath = G.rowItem[r];
    panel.dataset.runId = run.id;
    if (!LIVE) {
      showDetails(head, reportDetail(c, r));
      return;
    }
    $("details-body").innerHTML = `<h2>${esc(head.test)}</h2><p class="none">loading…</p>`;
    const q = new URLSearchParams({ run: run.id, testname: G.names[G.rowName[r]], item: G.rowItem[r] });
    fetch("api/test?" + q, { cache: "no-store" })
      .then((res) => (res.ok ? res.json() : Promise.reject(new Error(`${res.status} ${res.statusText}`))))
      .then((d) => selected && selected[0] === c && selected[1] === r && showDetails(head, d))
      .catch((err) => ($("details-body").innerHTML = `<h2>${esc(head.test)}</h2><p class="none">${esc(err.message)}</p>`));
  }

  function badge(state, status) {
    const code = G.pairIndex.get(state + "\u0000" + status);
    const kind = code ? G.kinds[code - 1] : "other";
    return `<span class="badge k-${kind}">${PALETTE[kind][2]} ${esc(status)}</span>`;
  }

  function when(seconds) {
    return seconds ? new Date(seconds * 1000).toLocaleString() : "";
  }

  function duration(seconds) {
    if (seconds == null || seconds < 0) return "";
    const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    return (h ? `${h} h ` : "") + (h || m ? `${m} min ` : "") + `${s} s`;
  }

  function table(headers, rows) {
    if (!rows.length) return `<p class="none">none</p>`;
    return `<table><tr>${headers.map((h) => `<th>${esc(h)}</th>`).join("")}</tr>` +
      rows.map((row) => `<tr>${row.map((v) => `<td>${v}</td>`).join("")}</tr>`).join("") + `</table>`;
  }

  function showDetails(head, d) {
    const run = head.run;
    const state = d ? d.state : head.state, status = d ? d.status : head.status;
    let html = `<h2>${esc(head.test)}</h2><p>run ${run.id}: ${esc(run.target)} · ${esc(run.runname)}</p>`;
    const fields = [["State", esc(state)], ["Status", badge(state, status)]];
    if (d) {
      fields.push(["Comment", esc(d.comment)], ["Host", esc(d.host)], ["Duration", duration(d.run_duration)]);
      fields.push(["Started", when(d.event_time)], ["Last update", when(d.last_update)]);
      if (d.rundir) fields.push(["Run directory", esc(d.rundir)]);
      if (d.log) fields.push(["Log", esc(d.log)]);
    }
    html += `<table class="fields">${fields.map(([k, v]) => `<tr><th>${k}</th><td>${v}</td></tr>`).join("")}</table>`;
    if (!d) {
      html += `<p class="none">${esc(CONFIG.detailsNote || "No details of this test are stored here.")}</p>`;
    } else {
      html += `<h3>Steps</h3>` + table(["step", "state", "status", "time", "comment", "log"],
        d.steps.map(([name, st, sts, t, comment, log]) => [esc(name), esc(st), esc(sts), when(t), esc(comment), esc(log)]));
      html += `<h3>Test data</h3>` + table(["category", "variable", "value", "expected", "tol", "units", "pass/fail", "comment"],
        d.data.map(([cat, v, value, exp, tol, units, st, comment]) =>
          [esc(cat), esc(v), esc(value), esc(exp), esc(tol), esc(units), dataStatus(st), esc(comment)]));
      html += `<h3>Output files</h3>` + table(["path", "role"], d.outputs.map(([path, role]) => [esc(path), esc(role)]));
    }
    $("details-body").innerHTML = html;
  }

  function dataStatus(status) {
    const s = String(status == null ? "" : status).toUpperCase();
    const kind = s === "PASS" ? "pass" : s === "FAIL" ? "fail" : s === "WARN" ? "warn" : "notrun";
    return `<span class="badge k-${kind}">${PALETTE[kind][2]} ${esc(status)}</span>`;
  }

  function closeDetails() {
    $("details").hidden = true;
    selected = null;
    draw(true);
  }

  // -- the controls --------------------------------------------------------------------------------

  function controls() {
    const statuses = [...new Set(G.pairs.map((p) => p[1]))].sort();
    $("status-list").innerHTML = statuses
      .map((s) => `<label><input type="checkbox" value="${esc(s)}"${filter.statuses.has(s) ? " checked" : ""}> ${esc(s)}</label>`)
      .join("") || `<span class="none">no tests</span>`;
    const options = G.runs.map((run, c) => `<option value="${c}">${esc(run.runname)} · ${esc(run.target)} (${run.id})</option>`).join("");
    for (const [id, key] of [["run-a", "a"], ["run-b", "b"]]) {
      $(id).innerHTML = options;
      if (filter[key] >= G.runs.length) filter[key] = Math.max(0, G.runs.length - (key === "a" ? 2 : 1));
      $(id).value = String(filter[key]);
    }
    $("legend").innerHTML = Object.entries(PALETTE)
      .map(([k, [, , sym, meaning]]) => `<span class="chip" data-kind="${k}"><span class="sw k-${k}">${sym}</span>${esc(meaning)}</span>`)
      .join("");
  }

  function refilter() {
    rebuild();
    layout();
  }

  $("pattern").addEventListener("input", (e) => {
    filter.text = e.target.value;
    refilter();
  });
  $("status-list").addEventListener("change", () => {
    filter.statuses = new Set([...$("status-list").querySelectorAll("input:checked")].map((i) => i.value));
    refilter();
  });
  $("changes").addEventListener("change", (e) => {
    filter.changes = e.target.checked;
    refilter();
  });
  $("run-a").addEventListener("change", (e) => {
    filter.a = +e.target.value;
    refilter();
  });
  $("run-b").addEventListener("change", (e) => {
    filter.b = +e.target.value;
    refilter();
  });
  $("expand").addEventListener("click", () => {
    expanded = new Set();
    for (let t = 0; t < G.nrows; t = G.end[t]) if (G.end[t] > t + 1) expanded.add(t);
    refilter();
  });
  $("collapse").addEventListener("click", () => {
    expanded = new Set();
    refilter();
  });
  $("rowheads").addEventListener("click", (e) => {
    const button = e.target.closest(".tog[data-row]");
    if (!button) return;
    const r = +button.dataset.row;
    if (expanded.has(r)) expanded.delete(r);
    else expanded.add(r);
    refilter();
  });
  $("cells").addEventListener("click", (e) => {
    const cell = e.target.closest(".cell");
    if (cell && cell.dataset.kind !== "absent") openDetails(+cell.dataset.col, +cell.dataset.row);
  });
  $("close").addEventListener("click", closeDetails);
  document.addEventListener("keydown", (e) => e.key === "Escape" && !$("details").hidden && closeDetails());
  scroller.addEventListener("scroll", () => G && draw(false), { passive: true });
  window.addEventListener("resize", () => G && layout());

  function show(data) {
    const keep = G ? [...expanded].map((r) => G.names[G.rowName[r]]) : [];
    G = load(data);
    if (keep.length) {
      const names = new Set(keep);
      expanded = new Set();
      for (let t = 0; t < G.nrows; t = G.end[t]) if (names.has(G.names[G.rowName[t]])) expanded.add(t);
    }
    selected = null;
    detailIndex = null;
    controls();
    rebuild();
    layout();
    document.body.dataset.ready = "1";
    performance.mark("grid-drawn");
  }

  // -- live: the dashboard ---------------------------------------------------------------------------

  let source = null, reloadTimer = null, frame = 0;
  const dirtyRuns = new Set();

  function setLive(on, text) {
    const el = $("live");
    el.hidden = false;
    el.className = on ? "on" : "off";
    el.textContent = text || (on ? "● live" : "○ reconnecting…");
    el.dataset.seq = G ? G.seq : "";
  }

  function fetchGrid() {
    return fetch("api/grid" + location.search, { cache: "no-store" }).then((res) =>
      res.ok ? res.json() : res.text().then((t) => Promise.reject(new Error(t || res.statusText))),
    );
  }

  function connect(seq) {
    if (source) source.close();
    source = new EventSource("api/events?since=" + seq);
    source.addEventListener("change", (e) => applyEvent(JSON.parse(e.data)));
    source.addEventListener("reload", () => reload(0));
    source.onopen = () => setLive(true);
    source.onerror = () => setLive(false);
  }

  function reload(delay) {
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(() => {
      fetchGrid()
        .then((data) => {
          show(data);
          connect(data.seq);
        })
        .catch((err) => setLive(false, "○ " + err.message));
    }, delay === undefined ? 300 : delay);
  }

  function rowOf(testname, item) {
    if (G.rowIndex === null) {
      G.rowIndex = new Map();
      for (let r = 0; r < G.nrows; r++) G.rowIndex.set(G.names[G.rowName[r]] + "\u0000" + G.rowItem[r], r);
    }
    return G.rowIndex.get(testname + "\u0000" + item);
  }

  function applyEvent(ev) {
    G.seq = ev.seq;
    $("live").dataset.seq = ev.seq;
    const c = G.runIndex.get(ev.run_id);
    if (c === undefined) {
      if (ev.run_id > G.maxRunId) reload(); // a new run
      return;
    }
    const run = G.runs[c];
    if (ev.test_id == null) {
      if (ev.state === "deleted") return reload();
      if (ev.state != null) run.state = ev.state;
      if (ev.status != null) run.status = ev.status;
      if (ev.state == null && ev.status == null) return reload(); // e.g. a JUnit part stored: many tests at once
      return later(run);
    }
    if (ev.state == null && ev.status == null) return;
    if (ev.state === "DELETED") return reload();
    const r = rowOf(ev.testname, ev.item_path || "");
    if (r === undefined) return reload(); // a new test
    const old = cellCode(run, r);
    const state = ev.state != null ? ev.state : old ? G.pairs[old - 1][0] : null;
    const status = ev.status != null ? ev.status : old ? G.pairs[old - 1][1] : null;
    let code = G.pairIndex.get(state + "\u0000" + status);
    if (code === undefined) {
      if (ev.state == null || ev.status == null || !ev.kind) return reload();
      G.pairs.push([state, status]);
      G.kinds.push(ev.kind);
      G.labels.push(ev.label);
      G.final.push(ev.final ? 1 : 0);
      code = G.pairs.length;
      G.pairIndex.set(state + "\u0000" + status, code);
    }
    if (run.codes) run.codes[r] = code;
    else {
      const at = findRow(run.rows, r);
      if (at < 0) return reload();
      run.sparse[at] = code;
    }
    later(run);
  }

  function later(run) {
    dirtyRuns.add(run);
    if (frame) return;
    frame = requestAnimationFrame(() => {
      frame = 0;
      for (const r of dirtyRuns) count(r);
      dirtyRuns.clear();
      if (filter.text || filter.statuses.size || filter.changes) refilter();
      else draw(true);
    });
  }

  if (LIVE) {
    setLive(false, "○ loading…");
    fetchGrid()
      .then((data) => {
        show(data);
        connect(data.seq);
      })
      .catch((err) => setLive(false, "○ " + err.message));
  } else {
    show(JSON.parse($("grid-data").textContent));
  }
})();
