"use strict";
// The dashboard's script: redraws the page from GET /dashboard/data every config.refresh_s
// seconds. Every value from the gateway reaches the DOM through textContent or setAttribute,
// never as HTML: provider, key and experiment names come from config files and users.
(() => {
  const KEY_STORE = "agency.dashboard.key";
  const SVG = "http://www.w3.org/2000/svg";
  const config = JSON.parse(document.getElementById("dashboard-config").textContent);
  const DASH = "\u2014";
  let key = null;
  let waiting = false;
  let refreshes = 0;
  let lastOk = null;

  // -- the master key: taken from ?key= once, then kept for this tab only --------------------
  function storedKey() {
    try {
      return window.sessionStorage.getItem(KEY_STORE);
    } catch (e) {
      return null; // storage disabled: the key lives in this page only
    }
  }

  function takeKeyFromUrl() {
    const url = new URL(window.location.href);
    const sent = url.searchParams.get("key");
    if (sent === null) return storedKey();
    try {
      window.sessionStorage.setItem(KEY_STORE, sent);
    } catch (e) {
      // storage disabled: refreshes still send the key held in memory
    }
    url.searchParams.delete("key");
    // Out of the address bar, the history and screenshots.
    window.history.replaceState(null, "", url.pathname + url.search + url.hash);
    return sent;
  }

  // -- DOM helpers: text only -----------------------------------------------------------------
  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function cell(text, cls, sub) {
    const td = el("td", cls, text);
    if (sub) td.append(el("span", "sub", sub));
    return td;
  }

  function emptyRow(columns, text) {
    const td = el("td", "empty", text);
    td.colSpan = columns;
    const tr = el("tr");
    tr.append(td);
    return tr;
  }

  function svgEl(tag, attrs, cls) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
    if (cls) node.setAttribute("class", cls);
    return node;
  }

  function svgText(x, y, text, anchor, cls) {
    const node = svgEl("text", { x: x, y: y, "text-anchor": anchor }, cls);
    node.textContent = text;
    return node;
  }

  // -- formatting (the server's first render formats the same way) ----------------------------
  const isNum = (v) => typeof v === "number" && Number.isFinite(v);

  function fmtInt(v) {
    return isNum(v) ? Math.round(v).toLocaleString("en-US") : DASH;
  }

  function fmtUsd(v) {
    if (!isNum(v)) return DASH;
    if (v === 0) return "$0";
    if (Math.abs(v) >= 1) return "$" + v.toFixed(2);
    if (Math.abs(v) >= 0.01) return "$" + v.toFixed(4);
    return "$" + v.toFixed(6);
  }

  function fmtMs(v) {
    if (!isNum(v)) return DASH;
    if (v === 0) return "0 ms";
    if (v >= 10000) return (v / 1000).toFixed(1) + " s";
    if (v < 10) return v.toFixed(1) + " ms";
    return Math.round(v) + " ms";
  }

  function fmtSeconds(v) {
    if (!isNum(v)) return DASH;
    if (v < 10) return v.toFixed(1) + " s";
    return fmtDuration(v);
  }

  function fmtDuration(s) {
    if (!isNum(s)) return DASH;
    s = Math.max(0, Math.floor(s));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
    return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
  }

  function fmtCompact(v) {
    if (!isNum(v)) return DASH;
    if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(1).replace(/\.0$/, "") + "M";
    if (Math.abs(v) >= 1e4) return (v / 1e3).toFixed(1).replace(/\.0$/, "") + "k";
    return String(Math.round(v * 10) / 10);
  }

  function clock(t, seconds) {
    const options = { hour: "2-digit", minute: "2-digit", hour12: false };
    if (seconds) options.second = "2-digit";
    return new Date(t * 1000).toLocaleTimeString("en-GB", options);
  }

  // -- providers ------------------------------------------------------------------------------
  function healthOf(row) {
    if (row.unconfigured !== undefined) return "unconfigured";
    const breaker = row.breaker || {};
    if (breaker.state === "open") return "down";
    if (breaker.state === "half_open") return "probing";
    if ((breaker.consecutive_failures || 0) > 0) return "degraded";
    return "healthy";
  }

  function limitsText(limits) {
    const parts = [];
    if (!limits) return DASH;
    if (isNum(limits.rpm)) parts.push("rpm " + fmtCompact(limits.rpm));
    if (isNum(limits.tpm)) parts.push("tpm " + fmtCompact(limits.tpm));
    if (isNum(limits.blocked_for) && limits.blocked_for > 0) {
      parts.push("blocked " + fmtSeconds(limits.blocked_for));
    }
    for (const [name, w] of Object.entries(limits.server || {})) {
      if (isNum(w.remaining) && isNum(w.limit)) {
        parts.push(name + " " + fmtCompact(w.remaining) + "/" + fmtCompact(w.limit) + " left");
      }
    }
    return parts.length ? parts.join(" \u00b7 ") : "none";
  }

  function providerRow(name, row) {
    const tr = el("tr");
    const health = healthOf(row);
    tr.dataset.provider = name;
    tr.dataset.health = health;
    if (health === "down") tr.className = "down";
    const first = cell(null, null);
    first.append(el("span", "name", name));
    if (row.spec) first.append(el("span", "sub", row.spec));
    const healthCell = el("td");
    healthCell.append(el("span", "health " + health, health));
    tr.append(first, healthCell);
    if (health === "unconfigured") {
      tr.dataset.state = "unconfigured";
      tr.append(cell("not configured", null, row.unconfigured));
      for (let i = 0; i < 5; i++) tr.append(cell(DASH, i === 2 ? null : "num"));
      return tr;
    }
    const breaker = row.breaker || {};
    const state = String(breaker.state || "unknown");
    tr.dataset.state = state;
    let trips = "";
    if (isNum(breaker.trips) && breaker.trips > 0) trips = " \u00b7 tripped " + breaker.trips + "\u00d7";
    tr.append(
      cell(state.replace("_", "-") + trips, null, breaker.reason || null),
      cell(fmtInt(breaker.failures), "num"),
      cell(state === "closed" ? DASH : fmtSeconds(breaker.retry_in), "num"),
      cell(limitsText(row.limits)),
      cell(fmtInt(row.in_flight), "num"),
      cell(fmtMs(row.latency_ewma_ms), "num"),
    );
    return tr;
  }

  function drawProviders(providers) {
    const rows = Object.entries(providers || {}).map(([name, row]) => providerRow(name, row));
    if (!rows.length) rows.push(emptyRow(8, "no providers configured"));
    document.querySelector("#providers tbody").replaceChildren(...rows);
  }

  // -- charts: inline SVG, one bucket per bar ---------------------------------------------------
  function niceCeil(v) {
    if (!(v > 0)) return 1;
    const exp = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * exp >= v * (1 - 1e-9)) return m * exp;
    return 10 * exp;
  }

  function chart(svg, traffic, now, spec) {
    const W = 480, H = 170, L = 58, R = 10, T = 8, B = 22;
    const w = W - L - R, h = H - T - B;
    const points = traffic.series || [];
    const since = traffic.since, bucket = traffic.bucket_s || 60;
    // The axis runs to the end of the current bucket, so its bar is as wide as the others.
    const until = Math.max(now, Math.ceil(now / bucket) * bucket);
    const span = Math.max(until - since, bucket);
    const keys = spec.bars.map((b) => b.key).concat(spec.lines.map((l) => l.key));
    const values = [];
    for (const p of points) for (const k of keys) if (isNum(p[k])) values.push(p[k]);
    const top = niceCeil(Math.max(0, ...values));
    const x = (t) => Math.min(L + w, Math.max(L, L + ((t - since) / span) * w));
    const y = (v) => T + h - (v / top) * h;
    const nodes = [];
    for (const f of [0, 0.5, 1]) {
      const v = top * f;
      nodes.push(svgEl("line", { x1: L, y1: y(v), x2: L + w, y2: y(v) }, f === 0 ? "axis" : "grid"));
      nodes.push(svgText(L - 6, y(v) + 4, spec.fmt(v), "end"));
    }
    nodes.push(svgText(L, H - 5, clock(since), "start"));
    nodes.push(svgText(L + w / 2, H - 5, clock(since + span / 2), "middle"));
    nodes.push(svgText(L + w, H - 5, clock(until), "end"));
    if (!points.length) {
      nodes.push(svgText(L + w / 2, T + h / 2, "no requests in this window", "middle", "nodata"));
    }
    const width = Math.max(3, (bucket / span) * w - 1);
    for (const p of points) {
      const x0 = x(p.t);
      const bw = Math.max(2, Math.min(width, L + w - x0));
      const group = svgEl("g", {});
      const title = svgEl("title", {});
      title.textContent = clock(p.t) + "  " + spec.tip(p);
      group.append(title);
      let base = 0; // bars stack: each starts where the one before ended
      for (const bar of spec.bars) {
        const v = bar.value ? bar.value(p) : p[bar.key];
        if (!isNum(v) || v <= 0) continue;
        group.append(svgEl("rect", { x: x0, y: y(base + v), width: bw, height: y(base) - y(base + v) }, bar.cls));
        base += v;
      }
      nodes.push(group);
    }
    for (const line of spec.lines) {
      const pts = points.filter((p) => isNum(p[line.key]));
      if (!pts.length) continue;
      const d = pts.map((p, i) => (i ? "L" : "M") + x(p.t + bucket / 2).toFixed(1) + " " + y(p[line.key]).toFixed(1));
      nodes.push(svgEl("path", { d: d.join(" ") }, "line-" + line.key.replace("_ms", "")));
      for (const p of pts) {
        const dot = svgEl("circle", { cx: x(p.t + bucket / 2), cy: y(p[line.key]), r: 3 }, "dot-" + line.key.replace("_ms", ""));
        const title = svgEl("title", {});
        title.textContent = clock(p.t) + "  " + line.key.replace("_ms", "") + " " + fmtMs(p[line.key]);
        dot.append(title);
        nodes.push(dot);
      }
    }
    svg.replaceChildren(...nodes);
  }

  function drawCharts(traffic, now) {
    chart(document.getElementById("chart-requests"), traffic, now, {
      bars: [
        { key: "errors", cls: "bar-err" },
        { key: "requests", cls: "bar-ok", value: (p) => p.requests - (p.errors || 0) },
      ],
      lines: [],
      fmt: fmtCompact,
      tip: (p) => fmtInt(p.requests) + " requests, " + fmtInt(p.errors) + " errors",
    });
    chart(document.getElementById("chart-latency"), traffic, now, {
      bars: [],
      lines: [{ key: "p50_ms" }, { key: "p95_ms" }],
      fmt: fmtMs,
      tip: () => "",
    });
    chart(document.getElementById("chart-cost"), traffic, now, {
      bars: [{ key: "cost_usd", cls: "bar-cost" }],
      lines: [],
      fmt: fmtUsd,
      tip: (p) => fmtUsd(p.cost_usd) + ", " + fmtInt(p.tokens) + " tokens",
    });
  }

  // -- keys, experiments, totals ------------------------------------------------------------------
  function drawKeys(keys) {
    const rows = (keys || []).map((k) => {
      const tr = el("tr");
      const named = k.key_name !== null && k.key_name !== undefined;
      tr.append(
        cell(named ? k.key_name : "(no key)", named ? "name" : "empty"),
        cell(k.key_id || DASH),
        cell(fmtInt(k.requests), "num"),
        cell(fmtUsd(k.cost_usd), "num"),
      );
      return tr;
    });
    if (!rows.length) rows.push(emptyRow(4, "no requests in this window"));
    document.querySelector("#keys tbody").replaceChildren(...rows);
  }

  function drawExperiments(experiments) {
    const rows = (experiments || []).map((e) => {
      const tr = el("tr");
      tr.append(
        cell(e.name, "name"),
        cell(e.model),
        cell((e.arms || []).join(", ")),
        cell(e.enabled ? "running" : "stopped"),
      );
      return tr;
    });
    if (!rows.length) rows.push(emptyRow(4, "no experiments configured"));
    document.querySelector("#experiments tbody").replaceChildren(...rows);
  }

  function setText(id, text) {
    document.getElementById(id).textContent = text;
  }

  function drawTotals(data) {
    const totals = (data.traffic && data.traffic.totals) || {};
    setText("total-requests", fmtInt(totals.requests));
    setText("total-errors", fmtInt(totals.errors));
    setText("error-rate", totals.requests ? ((100 * totals.errors) / totals.requests).toFixed(1) + "%" : DASH);
    setText("total-cost", fmtUsd(totals.cost_usd));
    setText("in-flight", fmtInt(data.in_flight));
    setText("uptime", fmtDuration(data.uptime_s));
  }

  function draw(data) {
    drawTotals(data);
    drawProviders(data.providers);
    drawCharts(data.traffic || { series: [], since: data.now - 3600, bucket_s: 60 }, data.now);
    drawKeys(data.traffic && data.traffic.top_keys);
    drawExperiments(data.experiments);
  }

  function setStatus(cls, text) {
    const pill = document.getElementById("status");
    pill.className = "pill " + cls;
    pill.textContent = text;
  }

  // -- refreshing ---------------------------------------------------------------------------------
  function schedule() {
    window.setTimeout(tick, config.refresh_s * 1000);
  }

  function tick() {
    if (document.hidden) {
      waiting = true; // a background tab does not poll; it refreshes when shown again
      return;
    }
    refresh();
  }

  async function refresh() {
    let denied = false;
    try {
      const headers = { Accept: "application/json" };
      if (key) headers.Authorization = "Bearer " + key;
      const resp = await fetch(config.data_url, { headers: headers, cache: "no-store", credentials: "same-origin" });
      if (resp.status === 401 || resp.status === 403) {
        let message = "the master key was refused";
        try {
          message = (await resp.json()).error.message || message;
        } catch (e) {
          // not the gateway's JSON error: keep the generic message
        }
        setStatus("denied", message + " \u2014 open /dashboard?key=<master key>");
        denied = true; // polling cannot succeed without a new key: stop
        return;
      }
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      const data = await resp.json();
      draw(data);
      lastOk = data.now;
      refreshes += 1;
      document.body.dataset.refreshes = String(refreshes);
      setStatus("live", "live \u00b7 " + clock(data.now, true));
    } catch (err) {
      const since = lastOk === null ? "" : " since " + clock(lastOk, true);
      setStatus("stale", "no answer" + since + " (" + String(err.message || err) + "), retrying");
    } finally {
      if (!denied) schedule();
    }
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && waiting) {
      waiting = false;
      refresh();
    }
  });

  document.documentElement.classList.add("js"); // the charts show only where drawn
  key = takeKeyFromUrl();
  const initial = JSON.parse(document.getElementById("dashboard-initial").textContent);
  if (initial) {
    draw(initial);
    lastOk = initial.now;
    setStatus("live", "live \u00b7 " + clock(initial.now, true));
    schedule();
  } else {
    refresh(); // the server refused the page without a key: try the one this tab kept
  }
})();
