// aerostack-meter dashboard: reads /api/* and draws with plotly.js (served by the dashboard itself).
(function () {
  "use strict";
  var FILTERS = ["consumer", "api", "metric", "range"];
  var query = new URLSearchParams(window.location.search);
  var token = query.get("token");
  var refreshSeconds = Number(window.AEROSTACK_REFRESH_SECONDS) || 0;
  var timer = null;
  var fmt = new Intl.NumberFormat("en-US");
  var config = { displayModeBar: false, responsive: true };
  // plotly.js (4.8 MB) downloads in parallel (preload) but runs only after the first numbers are
  // on screen: parsing it blocks the page for a second or more.
  var plotlyLoading = null;
  function plotlyReady() {
    if (!plotlyLoading) {
      plotlyLoading = new Promise(function (resolve, reject) {
        if (window.Plotly) { resolve(); return; }
        var tag = document.createElement("script");
        tag.src = "/assets/plotly.min.js";
        tag.addEventListener("load", function () { resolve(); });
        tag.addEventListener("error", function () { reject(new Error("could not load /assets/plotly.min.js")); });
        document.head.appendChild(tag);
      });
    }
    return plotlyLoading;
  }

  function el(id) { return document.getElementById(id); }

  function filterParams() {
    var out = new URLSearchParams();
    FILTERS.forEach(function (k) { var v = query.get(k); if (v) out.set(k, v); });
    return out;
  }

  function api(view, extra) {
    var params = filterParams();
    Object.keys(extra || {}).forEach(function (k) { params.set(k, extra[k]); });
    var headers = token ? { Authorization: "Bearer " + token } : {};
    var first = view === "overview" ? window.AEROSTACK_FIRST : null;  // started by the page itself
    window.AEROSTACK_FIRST = null;
    return (first || fetch("/api/" + view + "?" + params.toString(), { headers: headers, cache: "no-store" }))
      .then(function (r) {
        return r.json().then(function (body) {
          if (!r.ok) throw new Error(view + ": " + (body.message || r.status));
          return body;
        });
      });
  }

  function setNumber(id, value) {
    var node = el(id);
    node.textContent = value == null ? "–" : fmt.format(value);
    node.dataset.value = value == null ? "" : String(value);
  }

  function when(ts) {
    if (ts == null) return "–";
    var d = new Date(ts * 1000);
    var ago = Math.max(0, Math.round(Date.now() / 1000 - ts));
    var rel = ago < 120 ? ago + " s ago" : ago < 7200 ? Math.round(ago / 60) + " min ago"
      : ago < 172800 ? Math.round(ago / 3600) + " h ago" : Math.round(ago / 86400) + " days ago";
    return d.toISOString().replace("T", " ").slice(0, 19) + " UTC (" + rel + ")";
  }

  function bytes(n) {
    if (n == null) return "–";
    if (n < 1024) return n + " B";
    if (n < 1048576) return (n / 1024).toFixed(1) + " KiB";
    return (n / 1048576).toFixed(1) + " MiB";
  }

  function count(n) { return n == null ? "–" : fmt.format(n); }

  function layout(extra) {
    var base = {
      margin: { l: 56, r: 16, t: 8, b: 40 }, barmode: "stack", showlegend: true,
      legend: { orientation: "h", y: -0.18 }, font: { size: 12 },
      paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
      xaxis: { type: "date" }, yaxis: { rangemode: "tozero", title: { text: "units" } }
    };
    return Object.assign(base, extra || {});
  }

  function empty(div) {
    Plotly.react(div, [], layout({
      xaxis: { visible: false }, yaxis: { visible: false },
      annotations: [{ text: "no usage in this view", showarrow: false, font: { size: 14, color: "#6b7385" } }]
    }), config);
  }

  function stacked(div, data) {
    if (!data.series.length) { empty(div); return; }
    var x = data.buckets.map(function (t) { return new Date(t * 1000).toISOString(); });
    var traces = data.series.map(function (s) {
      return { type: "bar", name: s.name, x: x, y: s.units,
               hovertemplate: "%{x}<br>" + s.name + ": %{y:,} units<extra></extra>" };
    });
    Plotly.react(div, traces, layout({ bargap: 0.1 }), config);
  }

  function renderNumbers(s) {
    setNumber("total-units", s.units);
    setNumber("exact-units", s.exact_units);
    setNumber("total-events", s.events);
    setNumber("total-consumers", s.consumers);
    var metrics = Object.keys(s.by_metric);
    el("total-units-sub").textContent = metrics.length > 1
      ? metrics.map(function (m) { return m + " " + fmt.format(s.by_metric[m]); }).join(" · ")
      : (metrics[0] || "");
    el("estimated-units-sub").textContent = fmt.format(s.estimated_units) + " estimated";
    el("estimated-units-sub").dataset.value = String(s.estimated_units);
    el("total-requests-sub").textContent = fmt.format(s.requests) + " billing requests";
    el("grain-sub").textContent = "buckets: " + s.grain;
    var cost = s.cost_micro_usd;
    el("cost-card").hidden = cost == null;
    if (cost != null) {
      el("total-cost").textContent = "$" + (cost / 1e6).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 6 });
      el("total-cost").dataset.value = String(cost);
    }
  }

  function renderPie(s) {
    var pie = el("chart-exact");
    if (!s.units) { empty(pie); return; }
    Plotly.react(pie, [{
      type: "pie", hole: 0.55, sort: false, labels: ["exact", "estimated"],
      values: [s.exact_units, s.estimated_units], marker: { colors: ["#3056d3", "#f0a020"] },
      textinfo: "label+percent", textposition: "outside", automargin: true,
      hovertemplate: "%{label}: %{value:,} units (%{percent})<extra></extra>"
    }], { margin: { l: 40, r: 40, t: 30, b: 30 }, showlegend: false, paper_bgcolor: "rgba(0,0,0,0)" }, config);
  }

  function renderTable(top) {
    var rows = top.consumers;
    var body = el("top-table").querySelector("tbody");
    body.innerHTML = "";
    rows.forEach(function (r) {
      var tr = document.createElement("tr");
      var link = document.createElement("a");
      link.textContent = r.consumer_id;
      link.title = "filter by this consumer";
      link.addEventListener("click", function () { setFilter("consumer", r.consumer_id); });
      var cells = [link, fmt.format(r.units), (r.share * 100).toFixed(1) + "%", fmt.format(r.estimated_units)];
      cells.forEach(function (c, i) {
        var td = document.createElement("td");
        if (i) td.className = "num";
        if (typeof c === "string") td.textContent = c; else td.appendChild(c);
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
  }

  function renderTopChart(top) {
    var rows = top.consumers;
    var div = el("chart-top");
    if (!rows.length) { empty(div); return; }
    var ordered = rows.slice().reverse();
    Plotly.react(div, [{
      type: "bar", orientation: "h", y: ordered.map(function (r) { return r.consumer_id; }),
      x: ordered.map(function (r) { return r.units; }),
      text: ordered.map(function (r) { return (r.share * 100).toFixed(1) + "%"; }),
      textposition: "auto", hovertemplate: "%{y}: %{x:,} units (%{text})<extra></extra>",
      marker: { color: "#3056d3" }
    }], { margin: { l: 110, r: 16, t: 8, b: 30 }, showlegend: false, paper_bgcolor: "rgba(0,0,0,0)",
          plot_bgcolor: "rgba(0,0,0,0)", xaxis: { rangemode: "tozero" }, yaxis: { type: "category" } }, config);
  }

  function renderHealth(h) {
    var body = el("health-table").querySelector("tbody");
    body.innerHTML = "";
    var rows = h.sources.concat(h.sources.length > 1 ? [h.total] : []);
    rows.forEach(function (s) {
      var tr = document.createElement("tr");
      var cells = s.error
        ? [s.source, { text: s.error, span: 7, bad: true }]
        : [s.source, count(s.backlog_records), count(s.backlog_units), bytes(s.backlog_bytes),
           { text: count(s.dropped), bad: s.dropped > 0 }, { text: count(s.dead_lettered), bad: s.dead_lettered > 0 },
           count(s.ambiguous_retries), when(s.last_success)];
      cells.forEach(function (c, i) {
        var td = document.createElement("td");
        var cell = typeof c === "string" ? { text: c } : c;
        td.textContent = cell.text;
        if (cell.span) td.colSpan = cell.span;
        var cls = [];
        if (i > 0 && i < 7 && !cell.span) cls.push("num");
        if (cell.bad) cls.push("bad");
        td.className = cls.join(" ");
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
  }

  function fillSelect(id, values, current) {
    var select = el(id);
    var keep = select.options[0];
    select.innerHTML = "";
    select.appendChild(keep);
    var all = values.slice();
    if (current && all.indexOf(current) < 0) all.push(current);
    all.forEach(function (v) {
      var o = document.createElement("option");
      o.value = v; o.textContent = v;
      select.appendChild(o);
    });
    select.value = current || "";
  }

  function renderOptions(o) {
    fillSelect("f-consumer", o.consumers, query.get("consumer"));
    fillSelect("f-api", o.api_ids, query.get("api"));
    fillSelect("f-metric", o.metrics, query.get("metric"));
    el("f-range").value = query.get("range") || "all";
  }

  function showError(err) {
    var box = el("error");
    if (err) { box.textContent = String(err.message || err); box.hidden = false; }
    else { box.hidden = true; }
  }

  var loading = null;
  var again = false;
  function refresh() {
    if (loading) { again = true; return loading; }  // a filter changed mid-load: load once more
    loading = api("overview").then(function (o) {
      // the same numbers as /api/options, summary, series (by consumer, metric, api), top, health
      var r = [o.options, o.summary, o.series.consumer, o.series.metric, o.series.api, o.top, o.health];
      renderOptions(r[0]);
      renderNumbers(r[1]);
      renderTable(r[5]);
      renderHealth(r[6]);
      document.body.dataset.numbers = String(Number(document.body.dataset.numbers || 0) + 1);
      return new Promise(function (done) { requestAnimationFrame(function () { setTimeout(done, 0); }); })
        .then(plotlyReady).then(function () {
        renderPie(r[1]);
        stacked(el("chart-consumers"), r[2]);
        stacked(el("chart-metric"), r[3]);
        stacked(el("chart-api"), r[4]);
        renderTopChart(r[5]);
      });
    }).then(function () {
      showError(null);
      el("updated").textContent = "updated " + new Date().toLocaleTimeString();
      document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
    }).catch(showError).then(function () {
      loading = null;
      if (again) { again = false; refresh(); } else schedule();
    });
    return loading;
  }

  function schedule() {
    if (timer) { clearTimeout(timer); timer = null; }
    if (refreshSeconds > 0 && el("f-refresh").checked) timer = setTimeout(refresh, refreshSeconds * 1000);
  }

  function setFilter(name, value) {
    if (value) query.set(name, value); else query.delete(name);
    if (name === "range" && value === "all") query.delete("range");
    window.history.replaceState(null, "", "?" + query.toString());
    refresh();
  }

  document.addEventListener("DOMContentLoaded", function () {
    [["f-consumer", "consumer"], ["f-api", "api"], ["f-metric", "metric"], ["f-range", "range"]].forEach(function (p) {
      el(p[0]).addEventListener("change", function (e) { setFilter(p[1], e.target.value); });
    });
    el("f-refresh").checked = refreshSeconds > 0;
    el("f-refresh").addEventListener("change", schedule);
    window.addEventListener("popstate", function () { query = new URLSearchParams(window.location.search); refresh(); });
    refresh();
  });
})();
