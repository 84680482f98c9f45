// The console's one script: it keeps the page live from one Server-Sent
// Events stream (polling when the stream drops) and draws the charts.
(function () {
  "use strict";
  var body = document.body;
  var base = body.dataset.base;
  var page = body.dataset.page;
  var liveEl = document.getElementById("live");
  var charts = [];
  var data = [[], [], [], []];
  var pollTimer = null;
  var source = null;

  function get(obj, path) {
    return path.split(".").reduce(function (o, k) { return o == null ? undefined : o[k]; }, obj);
  }

  function setLive(mode) {
    if (!liveEl) return;
    liveEl.textContent = mode === "stream" ? "live" : mode === "poll" ? "live (polling)" : "offline";
    liveEl.className = "live " + (mode === "stream" ? "on" : mode === "poll" ? "poll" : "");
  }

  function apply(s) {
    document.querySelectorAll("[data-live]").forEach(function (el) {
      var v = get(s, el.dataset.live);
      if (v === undefined || v === null || v === "") {
        if (el.dataset.prefix !== undefined) el.textContent = "";
        return;
      }
      el.textContent = (el.dataset.prefix || "") + v;
      if (el.hasAttribute("data-status")) el.className = "big " + (v === "ok" ? "ok" : "down");
    });
    document.querySelectorAll("[data-live-progress]").forEach(function (el) {
      var v = get(s, el.dataset.liveProgress);
      if (typeof v === "number") el.value = v;
    });
    var st = document.getElementById("purge-state");
    if (st && s.purge) {
      st.textContent = s.purge.running ? "running" : "removed " + s.purge.removed + " in " + (s.purge.duration || "") + (s.purge.error ? "; error: " + s.purge.error : "");
    }
    nodes(s);
    warming(s);
    consistency(s);
    if (page === "sweeps") sweeps(s);
    series(s);
  }

  function text(tag, t) { var e = document.createElement(tag); e.textContent = t; return e; }

  function nodes(s) {
    var ul = document.getElementById("redis-nodes");
    if (!ul || !s.health) return;
    ul.replaceChildren.apply(ul, (s.health.nodes || []).map(function (n) {
      return text("li", n.addr + " " + n.role + " " + n.state + (n.role === "master" ? " ping " + n.ping : ""));
    }));
  }

  function warming(s) {
    var w = document.getElementById("warming"), b = document.getElementById("breakers");
    if (!w || !b) return;
    if (!s.warming) { w.textContent = "off"; b.textContent = "no warm rules"; return; }
    var o = s.warming.outcomes || {};
    w.textContent = (o.stored || 0) + " stored";
    var open = s.warming.open_breakers || [];
    b.textContent = (open.length ? "breaker open: " + open.join(", ") : "breakers closed") + "; " + (o.failed || 0) + " failed, " + (o.shed || 0) + " shed";
  }

  function consistency(s) {
    var ul = document.getElementById("consistency");
    if (!ul || !s.consistency) return;
    ul.replaceChildren.apply(ul, s.consistency.map(function (c) {
      var li = text("li", c.timescale + ": " + c.text);
      if (c.stale) li.className = "bad";
      return li;
    }));
  }

  function sweeps(s) {
    var tb = document.getElementById("sweeps");
    if (!tb) return;
    var rows = (s.sweeps || []).map(function (w, i) {
      var tr = document.createElement("tr");
      var prog = document.createElement("td");
      var bar = document.createElement("progress");
      bar.max = 1; bar.value = w.progress;
      prog.append(bar, " " + (100 * w.progress).toFixed(1) + "%");
      var pats = document.createElement("td");
      pats.append(String(w.active_patterns));
      (w.patterns || []).forEach(function (p) { pats.append(" ", text("code", p)); });
      tr.append(text("td", String(i + 1)), text("td", w.running ? "running" : "idle"), text("td", String(w.pass)), prog,
        text("td", String(w.examined)), text("td", String(w.scan_count)), text("td", String(s.scan_budget)), pats);
      return tr;
    });
    if (rows.length === 0) {
      var tr = document.createElement("tr"), td = text("td", "No sweep has run yet.");
      td.colSpan = 8; td.className = "muted"; tr.append(td); rows.push(tr);
    }
    tb.replaceChildren.apply(tb, rows);
  }

  function series(s) {
    if (!charts.length) return;
    if (s.series) {
      data = s.series.map(function (c) { return c.slice(); });
    } else if (s.point && s.point[0] > 0) {
      var last = data[0][data[0].length - 1];
      if (last !== s.point[0]) {
        for (var i = 0; i < 4; i++) data[i].push(s.point[i]);
        while (data[0].length > 900) for (var j = 0; j < 4; j++) data[j].shift();
      }
    }
    charts.forEach(function (c) { c.plot.setData([data[0], data[c.col]]); });
  }

  function initCharts() {
    if (typeof uPlot === "undefined") return;
    var css = getComputedStyle(document.documentElement);
    var colors = ["", css.getPropertyValue("--c1").trim(), css.getPropertyValue("--c2").trim(), css.getPropertyValue("--c3").trim()];
    var axis = { stroke: css.getPropertyValue("--muted").trim(), grid: { stroke: css.getPropertyValue("--line").trim(), width: 1 }, ticks: { show: false } };
    document.querySelectorAll(".chart").forEach(function (el) {
      var col = Number(el.dataset.series);
      var opts = {
        width: Math.max(200, el.clientWidth), height: 170, legend: { show: false }, cursor: { show: true, drag: { x: false, y: false } },
        scales: { x: { time: true }, y: { range: function (u, lo, hi) { return [0, Math.max(1, hi)]; } } },
        axes: [axis, axis],
        series: [{}, { stroke: colors[col], width: 2, fill: colors[col] + "22", points: { show: false } }]
      };
      charts.push({ el: el, col: col, plot: new uPlot(opts, [[], []], el) });
    });
    window.addEventListener("resize", function () {
      charts.forEach(function (c) { c.plot.setSize({ width: Math.max(200, c.el.clientWidth), height: 170 }); });
    });
  }

  function poll() {
    fetch(base + "poll", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (s) { setLive("poll"); apply(s); })
      .catch(function () { setLive("off"); });
  }

  function startPolling() {
    if (pollTimer) return;
    poll();
    pollTimer = setInterval(poll, 2000);
    setTimeout(function () { stopPolling(); connect(); }, 30000); // try the stream again
  }

  function stopPolling() {
    if (pollTimer) { clearInterval(pollTimer); pollTimer = null; }
  }

  function connect() {
    if (typeof EventSource === "undefined") { startPolling(); return; }
    var failures = 0;
    source = new EventSource(base + "events?page=" + encodeURIComponent(page));
    source.addEventListener("snapshot", function (e) {
      failures = 0;
      setLive("stream");
      apply(JSON.parse(e.data));
    });
    source.onerror = function () {
      failures++;
      if (source.readyState === EventSource.CLOSED || failures >= 3) {
        source.close();
        startPolling();
      }
    };
  }

  // Ticking "select" boxes: a click on a row's checkbox only; nothing else.
  window.addEventListener("pagehide", function () { if (source) source.close(); stopPolling(); });
  initCharts();
  connect();
})();
