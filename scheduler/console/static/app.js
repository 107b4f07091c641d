// wattmux console: plain JavaScript, no library, no outside request.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const ROW_H = 30;
  const ROLE_RANK = { viewer: 1, operator: 2, admin: 3 };
  const REASONS = {
    price_below_breakeven: "power costs less than mining earns",
    price_above_breakeven: "power costs more than mining earns",
    within_hysteresis: "price near break-even: kept as it was",
    pool_down: "its pool is down",
    pools_down: "every pool is down",
    lower_pool_fee: "a pool with a lower fee",
    power_cap: "site power cap",
    dr_event: "demand-response event",
    schedule_window: "schedule window",
    "4cp_window": "4CP peak window",
    ai_lease: "AI lease in force",
    ai_demand: "AI work pays more than mining",
    ai_job_running: "AI jobs running pay more",
    queue_empty: "no AI work; mining pays",
    mining_above_ai_rate: "mining pays more than AI",
    mining_below_cost: "mining does not pay; kept available",
    preemption_cost: "not worth stopping the running job",
    stale_price: "power price is stale: safe state",
    stale_input: "an input is stale: safe state",
    thermal: "too hot",
    min_dwell: "held: minimum dwell time not over",
    below_min_gain: "held: change gains too little",
    ramp_limit: "held: ramp limit",
    override: "operator override",
    curtail: "operator curtail",
    manual: "manual mode: held",
    paused: "paused: held",
    failsafe: "failsafe",
  };
  const words = (r) => (r ? (REASONS[r] ? REASONS[r] + " (" + r + ")" : r) : "");
  const S = {
    me: null, csrf: null, fleet: null, v: -1, summary: null, history: [], es: null,
    filtered: [], sortKey: "id", sortDir: 1, page: "overview", mapCells: [],
    dOffset: 0, aOffset: 0,
  };
  window.__wattmux = { updates: [], firstRows: null };

  const fmt = (x, d) => (x === null || x === undefined || Number.isNaN(x) ? "–" :
    Number(x).toLocaleString("en-US", { maximumFractionDigits: d === undefined ? 1 : d, minimumFractionDigits: d === undefined ? 0 : d }));
  const when = (iso) => (iso ? new Date(iso).toLocaleString("en-GB", { hour12: false }) : "–");
  const esc = (s) => String(s === null || s === undefined ? "" : s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const can = (role) => S.me && ROLE_RANK[S.me.role] >= ROLE_RANK[role];

  async function api(method, url, body) {
    const headers = { accept: "application/json" };
    if (method !== "GET") headers["x-csrf-token"] = S.csrf || "";
    if (body !== undefined) headers["content-type"] = "application/json";
    const r = await fetch(url, { method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body) });
    if (r.status === 401 && !url.startsWith("/console/login")) { showLogin("Your session has ended: log in again."); throw new Error("session ended"); }
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (!r.ok) {
      const detail = data && data.detail ? (typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail)) : r.statusText;
      const err = new Error(detail); err.status = r.status; err.retry = Number(r.headers.get("retry-after") || 0); throw err;
    }
    return data;
  }

  // --- login ------------------------------------------------------------------------------
  function showLogin(message) {
    if (S.es) { S.es.close(); S.es = null; }
    S.me = null;
    $("nav").hidden = true; $("logout").hidden = true; $("who").textContent = ""; $("live").textContent = "";
    for (const p of document.querySelectorAll(".page")) p.hidden = p.id !== "page-login";
    $("login-error").textContent = message || "";
    $("token").focus();
  }
  async function login(token) {
    try {
      const me = await api("POST", "/console/login", { token });
      await start(me);
    } catch (e) { showLogin(e.status === 401 ? "Wrong token." : "Login failed: " + e.message); }
  }
  $("login-form").addEventListener("submit", (ev) => { ev.preventDefault(); const t = $("token").value.trim(); $("token").value = ""; login(t); });
  $("logout").addEventListener("click", async () => {
    try { await api("POST", "/console/logout"); } catch (e) { /* shown below anyway */ }
    showLogin("Logged out.");
  });

  async function start(me) {
    // Controls a lower role removed from this page come back only with a fresh page.
    if (S.trimmed && ROLE_RANK[me.role] > S.trimmed) { location.reload(); return; }
    S.me = me; S.csrf = me.csrf;
    $("who").textContent = me.name + " (" + me.role + ")";
    $("nav").hidden = false; $("logout").hidden = false;
    if (!can("operator")) for (const e of document.querySelectorAll(".ctl")) e.remove();
    if (!can("admin")) for (const e of document.querySelectorAll(".admin")) e.remove();
    if (!can("admin")) S.trimmed = Math.min(S.trimmed || 3, ROLE_RANK[me.role]);
    await loadFleet();
    connect();
    loadHistory();
    route();
  }

  // --- data -------------------------------------------------------------------------------
  async function loadFleet() {
    const f = await api("GET", "/console/api/fleet");
    const sc = f.static_columns, lc = f.live_columns;
    S.cols = {};
    S.fleet = f.static.map((s, i) => {
      const m = {};
      sc.forEach((c, j) => (m[c] = s[j]));
      lc.forEach((c, j) => (m[c] = f.rows[i][j]));
      m.i = i;
      return m;
    });
    S.lc = lc; S.v = f.v; S.summary = f.summary;
    const models = [...new Set(S.fleet.map((m) => m.model))].sort();
    $("f-model").innerHTML = '<option value="">any</option>' + models.map((m) => "<option>" + esc(m) + "</option>").join("");
    applyFilter();
    renderOverview();
  }
  async function loadHistory() {
    const h = await api("GET", "/console/api/history");
    S.history = h.points;
    renderCharts();
  }
  function connect() {
    if (S.es) S.es.close();
    const es = new EventSource("/console/api/events");
    S.es = es;
    es.addEventListener("hello", (ev) => {
      const d = JSON.parse(ev.data);
      $("live").textContent = "live";
      if (d.v !== S.v) loadFleet();
    });
    es.addEventListener("update", (ev) => onUpdate(JSON.parse(ev.data)));
    es.addEventListener("expired", () => showLogin("Your session has ended: log in again."));
    es.onerror = async () => {
      $("live").textContent = "reconnecting…";
      if (es.readyState === EventSource.CLOSED) {
        try { await api("GET", "/console/api/me"); setTimeout(connect, 2000); } catch (e) { /* login shown */ }
      }
    };
  }
  function onUpdate(d) {
    S.summary = d.summary;
    const ids = [];
    if (d.rows && S.fleet) {
      for (const r of d.rows) {
        const m = S.fleet[r[0]];
        if (!m) continue;
        S.lc.forEach((c, j) => (m[c] = r[j + 1]));
        ids.push(m.id);
      }
      S.v = d.v;
      refreshFleetView();
    }
    if (d.point) { S.history.push(d.point); if (S.history.length > 2000) S.history.shift(); if (S.page === "overview") renderCharts(); }
    if (S.page === "overview") renderOverview();
    if (S.page === "machine") renderMachineNow();
    if (S.page === "map") drawMap();
    const log = window.__wattmux.updates;
    log.push({ t: Date.now(), ids });
    if (log.length > 2000) log.splice(0, 1000);
  }

  // --- routing ----------------------------------------------------------------------------
  function route() {
    if (!S.me) return;
    const hash = location.hash || "#/overview";
    const parts = hash.slice(2).split("/");
    let page = parts[0] || "overview";
    if (!["overview", "fleet", "machine", "map", "decisions", "audit"].includes(page)) page = "overview";
    S.page = page;
    for (const p of document.querySelectorAll(".page")) p.hidden = p.id !== "page-" + page;
    for (const a of document.querySelectorAll("nav a")) {
      if (a.dataset.page === page) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    }
    if (page === "overview") { renderOverview(); renderCharts(); }
    if (page === "fleet") { applyFilter(); }
    if (page === "machine") showMachine(decodeURIComponent(parts.slice(1).join("/")));
    if (page === "map") drawMap();
    if (page === "decisions") { S.dOffset = 0; loadDecisions(false); }
    if (page === "audit") { S.aOffset = 0; loadAudit(false); }
  }
  window.addEventListener("hashchange", route);

  // --- overview ---------------------------------------------------------------------------
  function renderOverview() {
    const s = S.summary;
    if (!s || S.page !== "overview") return;
    $("site-title").textContent = "Site " + s.site;
    $("ov-power").textContent = fmt(s.site_kw) + " kW";
    $("ov-cap").textContent = "cap " + fmt(s.cap_kw) + " kW, effective cap " + fmt(s.effective_cap_kw) + " kW";
    const share = s.effective_cap_kw > 0 ? Math.min(1, s.site_kw / s.effective_cap_kw) : 1;
    $("ov-meter-bar").style.width = (share * 100).toFixed(1) + "%";
    $("ov-meter").classList.toggle("over", s.site_kw > s.effective_cap_kw);
    $("ov-meter").setAttribute("aria-label", "site power " + fmt(share * 100, 0) + " % of the effective cap");
    $("ov-price").textContent = s.price_usd_mwh === null ? "no price yet" : fmt(s.price_usd_mwh, 2) + " USD/MWh";
    $("ov-breakeven").tBodies[0].innerHTML = Object.entries(s.breakeven_usd_mwh).map(([m, b]) =>
      "<tr><td>" + esc(m) + "</td><td>" + fmt(b, 2) + "</td><td>" + (s.price_usd_mwh !== null && s.price_usd_mwh < b ? "yes" : "no") + "</td></tr>").join("");
    $("ov-hash").textContent = fmt(s.hashrate_ths / 1000, 2) + " PH/s";
    $("ov-margin").textContent = fmt(s.margin_usd_h, 2) + " USD/h";
    const c = s.counts;
    $("ov-counts").innerHTML = [["all", s.devices], ["mining", c.mining], ["asleep", c.asleep], ["on AI", c.ai], ["off", c.off], ["unreachable", c.unreachable], ["drifted", s.drifted]]
      .map(([k, v]) => "<dt>" + k + "</dt><dd id=\"count-" + k.replace(" ", "-") + "\">" + fmt(v, 0) + "</dd>").join("");
    const cur = s.curtail;
    const dr = s.dr_events.map((e) => e.id + (e.active ? " (active)" : "") + ": " + (e.target_kw !== null ? "hold " + fmt(e.target_kw) + " kW" : "shed " + fmt(e.reduction_kw) + " kW") + " until " + when(e.end)).join("; ");
    $("ov-state").innerHTML =
      "<dt>Mode</dt><dd id=\"ov-mode\">" + esc(s.mode) + (s.mode_by && s.mode_by.by ? " (set by " + esc(s.mode_by.by) + " " + when(s.mode_by.at) + ")" : "") + "</dd>" +
      "<dt>Policy</dt><dd>" + esc(s.policy) + "</dd>" +
      "<dt>Curtail</dt><dd id=\"ov-curtail\">" + (cur ? "hold " + (cur.target_kw === null ? "0 (all asleep)" : fmt(cur.target_kw)) + " kW until " + when(cur.until) + " by " + esc(cur.by) : "none") + "</dd>" +
      "<dt>Demand response</dt><dd>" + (dr ? esc(dr) : "none") + "</dd>" +
      "<dt>Pools down</dt><dd>" + (s.pools_down.length ? esc(s.pools_down.join(", ")) : "none") + "</dd>";
    $("ov-override-count").textContent = s.override_count + " in force" + (s.override_count > s.overrides.length ? " (first " + s.overrides.length + " shown)" : "");
    $("ov-overrides").tBodies[0].innerHTML = s.overrides.map((o) =>
      "<tr><td><a href=\"#/machine/" + encodeURIComponent(o.device) + "\">" + esc(o.device) + "</a></td><td>" + esc(o.workload) + "</td><td>" + when(o.until) + "</td><td>" + esc(o.by) + "</td></tr>").join("");
    const ps = $("policy-select");
    if (ps && !ps.dataset.filled && s.policies.length) { ps.innerHTML = s.policies.map((p) => "<option>" + esc(p) + "</option>").join(""); ps.dataset.filled = "1"; }
    if (ps && document.activeElement !== ps) ps.value = s.policy;
    const ms = $("mode-select");
    if (ms && document.activeElement !== ms) ms.value = s.mode;
  }

  function chart(svg, series, note) {
    const W = 400, H = 120, L = 44, B = 16;
    const pts = S.history;
    if (!svg) return;
    if (pts.length < 1) { svg.innerHTML = '<text x="10" y="60" class="axis">collecting data (one point a minute)…</text>'; return; }
    const t0 = pts[0][0], t1 = Math.max(pts[pts.length - 1][0], t0 + 1);
    let lo = Infinity, hi = -Infinity;
    for (const s of series) for (const p of pts) { const v = p[s.col]; if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); } }
    if (!Number.isFinite(lo)) { svg.innerHTML = '<text x="10" y="60" class="axis">no data</text>'; return; }
    if (hi === lo) { hi += 1; lo -= 1; }
    const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - 4);
    const y = (v) => 4 + (1 - (v - lo) / (hi - lo)) * (H - B - 8);
    let out = '<text x="2" y="12" class="axis">' + fmt(hi) + '</text><text x="2" y="' + (H - B) + '" class="axis">' + fmt(lo) + "</text>";
    out += '<text x="' + L + '" y="' + (H - 2) + '" class="axis">' + new Date(t0 * 1000).toLocaleTimeString("en-GB") + '</text><text x="' + (W - 60) + '" y="' + (H - 2) + '" class="axis">' + new Date(t1 * 1000).toLocaleTimeString("en-GB") + "</text>";
    for (const s of series) {
      const d = pts.filter((p) => p[s.col] !== null).map((p) => x(p[0]).toFixed(1) + "," + y(p[s.col]).toFixed(1)).join(" ");
      out += '<polyline fill="none" stroke="' + s.color + '" stroke-width="1.5" points="' + d + '"></polyline>';
    }
    svg.innerHTML = out;
    svg.setAttribute("aria-label", note + ": " + pts.length + " points, from " + fmt(lo) + " to " + fmt(hi));
  }
  function renderCharts() {
    if (S.page !== "overview") return;
    chart($("ch-power"), [{ col: 1, color: "#0b5cad" }, { col: 2, color: "#a4161a" }], "site power and cap");
    chart($("ch-price"), [{ col: 3, color: "#8a5a00" }], "power price");
    chart($("ch-hash"), [{ col: 4, color: "#1b6e2d" }], "hash rate");
    chart($("ch-margin"), [{ col: 5, color: "#5b2a86" }], "margin");
  }

  function msg(text) { const m = $("control-msg"); if (m) m.textContent = text; }
  async function control(fn, okText) {
    try { await fn(); msg(okText); } catch (e) { msg("Refused: " + e.message); }
  }
  if ($("curtail-form")) {
    $("curtail-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const kw = Number($("curtail-kw").value);
      try {
        const p = await api("GET", "/v1/demand-response/preview?target_kw=" + encodeURIComponent(kw));
        $("curtail-preview-text").textContent = "Holding the site at " + fmt(kw) + " kW puts " + p.machines.length + " machines to sleep, shedding " + fmt(p.shed_kw) +
          " kW (site " + fmt(p.site_kw_before) + " → " + fmt(p.site_kw_after) + " kW)" + (p.margin_lost_usd_per_hour === null ? "" : ", losing " + fmt(p.margin_lost_usd_per_hour, 2) + " USD/h") + (p.feasible ? "." : ". Not enough to reach the target.");
        $("curtail-preview-table").tBodies[0].innerHTML = p.machines.slice(0, 10).map((m) => "<tr><td>" + m.order + "</td><td>" + esc(m.device) + "</td><td>" + esc(m.model) + "</td><td>" + fmt(m.shed_kw, 2) + "</td></tr>").join("");
        $("curtail-preview-box").hidden = false;
        $("curtail-confirm").focus();
      } catch (e) { msg("Preview failed: " + e.message); }
    });
    $("curtail-cancel").addEventListener("click", () => { $("curtail-preview-box").hidden = true; });
    $("curtail-confirm").addEventListener("click", () => control(async () => {
      await api("PUT", "/v1/curtail", { target_kw: Number($("curtail-kw").value), duration_seconds: Number($("curtail-min").value) * 60 });
      $("curtail-preview-box").hidden = true;
    }, "Curtail in force."));
    $("curtail-clear").addEventListener("click", () => control(() => api("DELETE", "/v1/curtail"), "Curtail cleared."));
    $("mode-form").addEventListener("submit", (ev) => { ev.preventDefault(); control(() => api("PUT", "/v1/mode", { mode: $("mode-select").value }), "Mode set."); });
    if ($("policy-form")) $("policy-form").addEventListener("submit", (ev) => { ev.preventDefault(); control(() => api("PUT", "/v1/policy", { name: $("policy-select").value }), "Policy set."); });
  }

  // --- fleet ------------------------------------------------------------------------------
  const COLS = [
    ["id", "Machine", 130], ["model", "Model", 90], ["state", "State", 90], ["workload", "Workload", 110], ["desired", "Desired", 110],
    ["power_w", "kW", 60], ["hashrate_ths", "TH/s", 60], ["temp_c", "°C", 50], ["reason", "Reason", 170], ["pools", "Pools", 100],
    ["rack", "Rack", 70], ["health", "Health", 60], ["override", "Override", 130],
  ];
  function head() {
    $("fleet-head").innerHTML = COLS.map(([k, label, w]) => {
      const sort = S.sortKey === k ? (S.sortDir > 0 ? "ascending" : "descending") : "none";
      return '<th scope="col" style="width:' + w + 'px" aria-sort="' + sort + '"><button type="button" data-sort="' + k + '">' + label + "</button></th>";
    }).join("") + (can("operator") ? '<th scope="col" style="width:90px">Action</th>' : "");
  }
  $("fleet-head").addEventListener("click", (ev) => {
    const k = ev.target.dataset && ev.target.dataset.sort;
    if (!k) return;
    if (S.sortKey === k) S.sortDir = -S.sortDir; else { S.sortKey = k; S.sortDir = 1; }
    applyFilter();
  });
  for (const id of ["f-text", "f-state", "f-model", "f-health"]) $(id).addEventListener("input", () => applyFilter());
  $("fleet-filters").addEventListener("submit", (ev) => ev.preventDefault());
  function matches(m) {
    const t = $("f-text").value.trim().toLowerCase(), st = $("f-state").value, mo = $("f-model").value, h = $("f-health").value;
    if (st && m.state !== st) return false;
    if (mo && m.model !== mo) return false;
    if (h && m.health !== h) return false;
    if (t) {
      const hay = (m.id + " " + m.model + " " + m.reason + " " + m.pools + " " + (m.rack || "") + " " + m.workload + " " + m.address).toLowerCase();
      if (!hay.includes(t)) return false;
    }
    return true;
  }
  function applyFilter() {
    if (!S.fleet) return;
    const k = S.sortKey, dir = S.sortDir;
    S.filtered = S.fleet.filter(matches);
    S.filtered.sort((a, b) => {
      let x = a[k], y = b[k];
      if (k === "override") { x = x ? x[0] : ""; y = y ? y[0] : ""; }
      if (k === "rack") { x = (a.rack || "") + String(a.position || 0).padStart(5, "0"); y = (b.rack || "") + String(b.position || 0).padStart(5, "0"); }
      if (x === y) return a.i - b.i;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * dir;
    });
    $("f-count").textContent = fmt(S.filtered.length, 0) + " of " + fmt(S.fleet.length, 0) + " machines";
    head();
    renderRows(true);
  }
  let pending = false;
  function refreshFleetView() {
    if (S.page !== "fleet" || pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      // A filter or sort on a live column: the selection moves with the site.
      const live = $("f-text").value || $("f-state").value || $("f-health").value || S.lc.includes(S.sortKey);
      if (live) applyFilter(); else renderRows(true);
    });
  }
  function cell(m, k) {
    const v = m[k];
    if (k === "id") return '<a href="#/machine/' + encodeURIComponent(v) + '">' + esc(v) + "</a>";
    if (k === "state") return '<span class="st-' + v + '">' + esc(v) + "</span>";
    if (k === "health") return '<span class="h-' + v + '">' + esc(v) + "</span>";
    if (k === "power_w") return v === null ? "–" : fmt(v / 1000, 2);
    if (k === "hashrate_ths" || k === "temp_c") return fmt(v);
    if (k === "override") return v ? esc(v[0]) + " by " + esc(v[2]) : "";
    if (k === "rack") return m.rack ? esc(m.rack) + "/" + m.position : "";
    if (k === "reason") return '<span title="' + esc(words(v)) + '">' + esc(v) + "</span>";
    return esc(v);
  }
  let lastRange = "";
  function renderRows(force) {
    const box = $("fleet-scroll");
    if (!S.fleet || S.page !== "fleet") return;
    const n = S.filtered.length;
    const first = Math.max(0, Math.floor(box.scrollTop / ROW_H) - 10);
    const count = Math.ceil((box.clientHeight || 600) / ROW_H) + 20;
    const last = Math.min(n, first + count);
    const key = first + ":" + last + ":" + n;
    if (!force && key === lastRange) return;
    lastRange = key;
    const ncol = COLS.length + (can("operator") ? 1 : 0);
    let html = first > 0 ? '<tr aria-hidden="true" style="height:' + first * ROW_H + 'px"><td colspan="' + ncol + '"></td></tr>' : "";
    const op = can("operator");
    for (let r = first; r < last; r++) {
      const m = S.filtered[r];
      html += '<tr data-id="' + esc(m.id) + '">' + COLS.map(([k]) => "<td>" + cell(m, k) + "</td>").join("") +
        (op ? '<td><button type="button" class="row-override" data-id="' + esc(m.id) + '" aria-label="Override ' + esc(m.id) + '">Override</button></td>' : "") + "</tr>";
    }
    if (last < n) html += '<tr aria-hidden="true" style="height:' + (n - last) * ROW_H + 'px"><td colspan="' + ncol + '"></td></tr>';
    $("fleet-body").innerHTML = html;
    if (window.__wattmux.firstRows === null && last > first) window.__wattmux.firstRows = Date.now();
  }
  $("fleet-scroll").addEventListener("scroll", () => renderRows(false), { passive: true });
  $("fleet-body").addEventListener("click", (ev) => {
    const b = ev.target.closest("button.row-override");
    if (b) openOverride([b.dataset.id]);
  });
  if ($("bulk-override")) {
    $("bulk-override").addEventListener("click", () => openOverride(S.filtered.map((m) => m.id)));
    $("bulk-clear").addEventListener("click", () => bulkClear(S.filtered.filter((m) => m.override).map((m) => m.id)));
  }

  // --- overrides (one machine or a selection) --------------------------------------------
  let target = [];
  const MAX_OVERRIDES = 1000; // the daemon keeps at most this many active (409 past it)
  function openOverride(ids) {
    if (!ids.length) return;
    if (ids.length > MAX_OVERRIDES) { alert(ids.length + " machines selected: at most " + MAX_OVERRIDES + " overrides can be active at once. Filter further."); return; }
    target = ids;
    const m = S.fleet.find((x) => x.id === ids[0]);
    const pools = new Set();
    for (const id of ids.slice(0, 1000)) { const d = S.fleet.find((x) => x.id === id); if (d) d.pools.split(",").filter(Boolean).forEach((p) => pools.add(p)); }
    $("ovr-workload").innerHTML = ["sleep", ...[...pools].map((p) => "mine(" + p + ")")].map((w) => "<option>" + esc(w) + "</option>").join("");
    $("ovr-what").textContent = ids.length === 1 ? "Machine " + ids[0] + " (" + (m ? m.model : "") + ")" : ids.length + " machines (the filtered selection)";
    $("ovr-progress").textContent = "";
    $("ovr-dialog").showModal();
  }
  $("ovr-cancel").addEventListener("click", () => $("ovr-dialog").close());
  $("ovr-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { workload: $("ovr-workload").value, duration_seconds: Number($("ovr-min").value) * 60, note: $("ovr-note").value };
    const done = await each(target, (id) => api("PUT", "/v1/overrides/" + encodeURIComponent(id), body));
    if (done.failed === 0) $("ovr-dialog").close();
  });
  async function bulkClear(ids) {
    if (!ids.length || !confirm("End the overrides of " + ids.length + " machines?")) return;
    await each(ids, (id) => api("DELETE", "/v1/overrides/" + encodeURIComponent(id)));
  }
  async function each(ids, call) {
    // One request per machine, in order; a 429 waits as the daemon asks, then retries.
    let ok = 0, failed = 0, last = "";
    for (const id of ids) {
      for (;;) {
        try { await call(id); ok++; break; } catch (e) {
          if (e.status === 429) { $("ovr-progress").textContent = "rate limit: waiting " + (e.retry || 1) + " s"; await new Promise((r) => setTimeout(r, (e.retry || 1) * 1000)); continue; }
          failed++; last = id + ": " + e.message; break;
        }
      }
      $("ovr-progress").textContent = ok + " of " + ids.length + " done" + (failed ? ", " + failed + " refused (" + last + ")" : "");
    }
    return { ok, failed };
  }

  // --- machine page -----------------------------------------------------------------------
  let machineId = null;
  function renderMachineNow() {
    const m = S.fleet && S.fleet.find((x) => x.id === machineId);
    if (!m) { $("m-now").innerHTML = "<dt>Machine</dt><dd>unknown</dd>"; return; }
    const o = m.override;
    $("m-now").innerHTML = [
      ["Model", m.model], ["Address", m.address], ["State", m.state], ["Workload", m.workload || "–"], ["Desired", m.desired || "–"],
      ["Reason", words(m.reason) || "–"], ["Power", m.power_w === null ? "–" : fmt(m.power_w / 1000, 2) + " kW (nominal " + fmt(m.nominal_w / 1000, 2) + ")"],
      ["Hash rate", m.hashrate_ths === null ? "–" : fmt(m.hashrate_ths) + " TH/s (nominal " + fmt(m.nominal_ths) + ")"],
      ["Temperature", m.temp_c === null ? "–" : fmt(m.temp_c) + " °C (max " + fmt(m.max_temp_c) + ")"], ["Health", m.health],
      ["Pools", m.pools], ["Rack", m.rack ? m.rack + " position " + m.position : "–"],
      ["Override", o ? o[0] + " until " + when(o[1]) + " by " + o[2] + (o[3] ? " (" + o[3] + ")" : "") : "none"], ["Last error", m.error || "none"],
    ].map(([k, v]) => "<dt>" + k + "</dt><dd>" + esc(v) + "</dd>").join("");
  }
  async function showMachine(id) {
    machineId = id;
    $("m-title").textContent = "Machine " + id;
    renderMachineNow();
    const [d, c] = await Promise.all([
      api("GET", "/v1/decisions?limit=50&kind=decision&device=" + encodeURIComponent(id)),
      api("GET", "/v1/decisions?limit=50&kind=command&device=" + encodeURIComponent(id)),
    ]);
    const items = [...d.items, ...c.items].sort((a, b) => (a.at < b.at ? 1 : -1));
    $("m-history").tBodies[0].innerHTML = items.map((x) => "<tr><td>" + when(x.at) + "</td><td>" + x.kind + "</td><td>" + esc(x.previous || "–") + "</td><td>" + esc(x.workload) +
      "</td><td>" + esc(words(x.reason)) + "</td><td>" + esc(x.outcome || "") + (x.detail ? " " + esc(x.detail) : "") + "</td></tr>").join("") || '<tr><td colspan="6">none yet</td></tr>';
  }
  if ($("m-override")) {
    $("m-override").addEventListener("click", () => openOverride([machineId]));
    $("m-clear").addEventListener("click", async () => { try { await api("DELETE", "/v1/overrides/" + encodeURIComponent(machineId)); } catch (e) { alert(e.message); } });
  }

  // --- site map ---------------------------------------------------------------------------
  const STATE_COLOURS = { mining: "#1b6e2d", asleep: "#6b7280", ai: "#5b2a86", off: "#111827", unreachable: "#a4161a" };
  function heat(f) { const h = 240 - 240 * Math.max(0, Math.min(1, f)); return "hsl(" + h.toFixed(0) + ",70%,42%)"; }
  function colour(m, metric) {
    if (metric === "state") return STATE_COLOURS[m.state] || "#999";
    if (m.state === "unreachable") return "#d1d5db";
    if (metric === "temp") return m.temp_c === null ? "#d1d5db" : heat((m.temp_c - 30) / Math.max(10, m.max_temp_c - 30));
    if (metric === "hash") return heat(1 - (m.hashrate_ths || 0) / Math.max(1, m.nominal_ths));
    if (metric === "eff") { if (!m.hashrate_ths || !m.power_w) return "#d1d5db"; return heat((m.power_w / m.hashrate_ths - 12) / 25); }
    return "#999";
  }
  function drawMap() {
    if (!S.fleet || S.page !== "map") return;
    const metric = $("map-metric").value;
    const racks = new Map();
    let unplaced = 0;
    for (const m of S.fleet) { if (!m.rack) { unplaced++; continue; } if (!racks.has(m.rack)) racks.set(m.rack, []); racks.get(m.rack).push(m); }
    const names = [...racks.keys()].sort();
    const C = 12, GAP = 10, TOP = 18;
    let maxPos = 1;
    for (const n of names) for (const m of racks.get(n)) maxPos = Math.max(maxPos, m.position);
    const cv = $("map-canvas");
    const perRow = Math.max(1, Math.floor(1200 / (C + GAP)));
    const rows = Math.ceil(names.length / perRow) || 1;
    cv.width = Math.min(names.length, perRow) * (C + GAP) + GAP;
    cv.height = rows * (maxPos * C + TOP + GAP);
    const g = cv.getContext("2d");
    g.clearRect(0, 0, cv.width, cv.height);
    g.font = "9px sans-serif"; g.fillStyle = "#1b1f24";
    S.mapCells = [];
    names.forEach((n, k) => {
      const x0 = GAP + (k % perRow) * (C + GAP), y0 = Math.floor(k / perRow) * (maxPos * C + TOP + GAP) + TOP;
      g.fillStyle = "#1b1f24"; g.fillText(n.slice(-4), x0 - 2, y0 - 5);
      for (const m of racks.get(n)) {
        const y = y0 + (m.position - 1) * C;
        g.fillStyle = colour(m, metric); g.fillRect(x0, y, C - 1, C - 1);
        S.mapCells.push([x0, y, m]);
      }
    });
    $("map-note").textContent = names.length + " racks, " + (S.fleet.length - unplaced) + " machines placed" + (unplaced ? ", " + unplaced + " without a location" : "") +
      ((S.summary && S.summary.location_problems.length) ? "; " + S.summary.location_problems.length + " bad lines in the locations file (first: " + S.summary.location_problems[0] + ")" : "");
    cv.setAttribute("aria-label", "heat map of " + names.length + " racks by " + $("map-metric").selectedOptions[0].text);
    const sw = (c, label) => '<span class="sw" style="background:' + c + '"></span>' + label + " ";
    $("map-legend").innerHTML = metric === "state" ? Object.entries(STATE_COLOURS).map(([k, c]) => sw(c, k)).join("") :
      sw(heat(0), "low") + sw(heat(0.5), "mid") + sw(heat(1), "high") + sw("#d1d5db", "no reading");
  }
  function cellAt(ev) {
    const r = $("map-canvas").getBoundingClientRect();
    const x = ev.clientX - r.left, y = ev.clientY - r.top;
    return S.mapCells.find(([cx, cy]) => x >= cx && x < cx + 12 && y >= cy && y < cy + 12);
  }
  $("map-canvas").addEventListener("mousemove", (ev) => {
    const c = cellAt(ev);
    $("map-hover").textContent = c ? c[2].id + " rack " + c[2].rack + "/" + c[2].position + ": " + c[2].state + ", " + fmt(c[2].temp_c) + " °C, " + fmt(c[2].hashrate_ths) + " TH/s" : "";
  });
  $("map-canvas").addEventListener("click", (ev) => { const c = cellAt(ev); if (c) location.hash = "#/machine/" + encodeURIComponent(c[2].id); });
  $("map-metric").addEventListener("input", drawMap);

  // --- decisions and audit ----------------------------------------------------------------
  async function loadDecisions(more) {
    const q = new URLSearchParams({ limit: "100", offset: String(S.dOffset) });
    const dev = $("d-device").value.trim(), rs = $("d-reason").value.trim(), k = $("d-kind").value;
    if (dev) q.set("device", dev); if (rs) q.set("reason", rs); if (k) q.set("kind", k);
    const p = await api("GET", "/v1/decisions?" + q);
    const html = p.items.map((x) => "<tr><td>" + when(x.at) + '</td><td><a href="#/machine/' + encodeURIComponent(x.device) + '">' + esc(x.device) + "</a></td><td>" + x.kind + "</td><td>" + esc(x.previous || "–") +
      "</td><td>" + esc(x.workload) + "</td><td>" + esc(words(x.reason)) + "</td><td>" + esc(x.outcome || "") + "</td></tr>").join("");
    const body = $("d-table").tBodies[0];
    body.innerHTML = (more ? body.innerHTML : "") + html;
    $("d-more").hidden = p.next_offset === null;
    S.dOffset = p.next_offset || S.dOffset;
  }
  $("d-filters").addEventListener("submit", (ev) => { ev.preventDefault(); S.dOffset = 0; loadDecisions(false); });
  $("d-more").addEventListener("click", () => loadDecisions(true));
  async function loadAudit(more) {
    const p = await api("GET", "/v1/audit?limit=100&offset=" + S.aOffset);
    const html = p.items.map((x) => "<tr><td>" + when(x.at) + "</td><td>" + esc(x.principal) + "</td><td>" + esc(x.role) + "</td><td>" + esc(x.remote) + "</td><td>" + esc(x.method + " " + x.path) +
      "</td><td>" + esc(x.result) + "</td><td>" + x.status_code + "</td></tr>").join("");
    const body = $("a-table").tBodies[0];
    body.innerHTML = (more ? body.innerHTML : "") + html;
    $("a-more").hidden = p.next_offset === null;
    S.aOffset = p.next_offset || S.aOffset;
  }
  $("a-more").addEventListener("click", () => loadAudit(true));

  // --- start ------------------------------------------------------------------------------
  (async function boot() {
    const m = /token=([^&]+)/.exec(location.hash);
    if (m) {
      // The token never stays in the address bar or the history: #/fleet&token=... opens the fleet.
      const rest = location.hash.replace(/[#&]?token=[^&]*/, "").replace(/^#?/, "#");
      history.replaceState(null, "", location.pathname + (rest.length > 2 ? rest : "#/overview"));
      await login(decodeURIComponent(m[1]));
      return;
    }
    try {
      const r = await fetch("/console/api/me", { credentials: "same-origin" });
      if (r.ok) { await start(await r.json()); return; }
    } catch (e) { /* not logged in */ }
    showLogin("");
  })();
})();
