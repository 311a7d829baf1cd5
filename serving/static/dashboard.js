// The live dashboard: snapshots from /dashboard/stream (server-sent events), drawn with uPlot.
// Every figure shown carries the /metrics series it equals (data-series) and that series' value
// (data-value), so that a test can compare the page with a scrape of the same snapshot.
"use strict";

const KEEP = 900;  // snapshots drawn (15 minutes at one a second)
const COLORS = ["#1565c0", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f", "#c62828", "#5d4037", "#455a64"];
const MARKS = {rollback: "#c62828", poisoning: "#ad1457", quarantine: "#ad1457", drift: "#ef6c00",
               quality: "#6a1b9a", retrain: "#6a1b9a"};
const MODEL_FIGURES = [  // [snapshot field, /metrics gauge, digits shown]
  ["version", "streamml_model_version", 0], ["age_s", "streamml_model_age_seconds", "duration"],
  ["labels", "streamml_model_window_labels", 0], ["logloss", "streamml_model_window_logloss", 4],
  ["rocauc", "streamml_model_window_rocauc", 4], ["ctr", "streamml_model_window_ctr", 4],
  ["calibration", "streamml_model_window_calibration", 3], ["label_delay_s", "streamml_model_label_delay_seconds", "duration"]];

let snapshots = [];
const events = new Map();  // id -> event
window.__seen = {};  // event id -> Date.now() when it was first drawn (benchmarks.dashboard reads it)
window.__seq = 0;    // the snapshot shown

function series(name, labels) {  // as tests/test_dashboard.py keys a parsed /metrics sample
  const keys = Object.keys(labels || {}).sort();
  return keys.length ? `${name}{${keys.map(k => `${k}="${labels[k]}"`).join(",")}}` : name;
}

function show(el, name, value, digits, scale) {
  el.dataset.series = name;
  el.dataset.value = value === null || value === undefined ? "NaN" : String(value);
  el.textContent = value === null || value === undefined ? "–" :
    digits === "duration" ? duration(value) : (value / (scale || 1)).toFixed(digits);
}

function duration(s) {  // seconds, as a person reads them
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${(s / 60).toFixed(1)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

// ---- charts ----
const charts = {};  // name -> {plot, lines: [label], pick: snapshot -> [values]}

function chartSpecs(models) {
  const perModel = field => ({lines: models, pick: s => models.map(m => s.models[m] ? s.models[m][field] : null)});
  return {
    logloss: perModel("logloss"), rocauc: perModel("rocauc"), ctr: perModel("ctr"),
    calibration: perModel("calibration"), label_delay_s: perModel("label_delay_s"),
    requests_per_s: {lines: ["requests/s"], pick: s => [s.traffic.requests_per_s]},
    latency: {lines: ["p50", "p99"], pick: s => [s.traffic.latency_p50_ms, s.traffic.latency_p99_ms]},
    consumer_lag: {lines: ["lag"], pick: s => [s.consumer_lag]},
  };
}

function markEvents(u) {  // a vertical line at each alert or rollback
  const {ctx} = u, top = u.bbox.top, height = u.bbox.height;
  ctx.save();
  ctx.lineWidth = 2;
  for (const e of events.values()) {
    const x = u.valToPos(e.t, "x", true);
    if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
    ctx.strokeStyle = MARKS[e.kind] || "#000";
    ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + height); ctx.stroke();
  }
  ctx.restore();
}

function compact(v) {  // an axis tick: 29088000 -> 29.1M
  const a = Math.abs(v);
  return a >= 1e6 ? `${+(v / 1e6).toFixed(1)}M` : a >= 1e4 ? `${+(v / 1e3).toFixed(1)}k` : `${+v.toFixed(4)}`;
}

function yRange(u, min, max) {  // a chart with nothing to draw yet keeps an axis
  return min === null || max === null ? [0, 1] : uPlot.rangeNum(min, max, 0.1, true);
}

function rebuildCharts(models) {
  const specs = chartSpecs(models);
  for (const section of document.querySelectorAll("[data-chart]")) {
    const name = section.dataset.chart, spec = specs[name];
    if (charts[name]) { charts[name].plot.destroy(); }
    const plot = new uPlot({
      width: Math.max(300, section.clientWidth - 24), height: 180,
      series: [{}, ...spec.lines.map((label, i) => ({label, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true}))],
      scales: {x: {time: true}, y: {range: yRange}}, axes: [{}, {size: 56, values: (u, ticks) => ticks.map(compact)}], hooks: {draw: [markEvents]}, legend: {live: false},
    }, [[], ...spec.lines.map(() => [])], section);
    charts[name] = {plot, spec};
  }
  redraw();
}

function redraw() {
  for (const {plot, spec} of Object.values(charts)) {
    const data = [snapshots.map(s => s.t)];
    spec.lines.forEach((_, i) => data.push(snapshots.map(s => { const v = spec.pick(s)[i]; return v === undefined ? null : v; })));
    plot.setData(data);
  }
}

// ---- panels ----
function showModels(s) {
  const body = document.querySelector("#models tbody");
  body.replaceChildren();
  for (const [key, m] of Object.entries(s.models)) {
    const row = body.insertRow(), labels = {model: key, variant: m.variant || ""};
    row.dataset.model = key;
    row.insertCell().textContent = key;
    row.insertCell().textContent = m.variant || "–";
    for (const [field, gauge, digits] of MODEL_FIGURES) {
      const cell = row.insertCell();
      cell.className = "value";
      show(cell, series(gauge, labels), m[field], digits);
    }
  }
}

function showTraffic(s) {
  show(document.getElementById("rps"), "streamml_recent_requests_per_second", s.traffic.requests_per_s, 1);
  for (const q of ["p50", "p99"]) {
    const ms = s.traffic[`latency_${q}_ms`];
    show(document.getElementById(q), series("streamml_recent_latency_seconds", {quantile: `0.${q.slice(1)}`}),
         ms === null ? null : ms / 1000, 2, 0.001);
  }
  show(document.getElementById("lag"), "streamml_kafka_consumer_lag", s.consumer_lag, 0);
}

function showExperiment(s) {
  const dl = document.getElementById("experiment"), e = s.experiment;
  dl.replaceChildren();
  const add = (term, value, name) => {
    dl.append(Object.assign(document.createElement("dt"), {textContent: term}));
    const dd = document.createElement("dd");
    if (name) { dd.className = "value"; show(dd, name, value, 3); } else { dd.textContent = value; }
    dl.append(dd);
  };
  if (!e) { add("none", "this server routes no experiment"); return; }
  add("name", e.name); add("kind", e.kind); add("state", e.state);
  add("stage", e.stage === null || e.stage === undefined ? "–" : e.stage);
  add("canary weight", e.canary_weight, "streamml_experiment_canary_weight");
  dl.dataset.series = series("streamml_experiment_state",
                             {experiment: e.name, kind: e.kind, state: e.state, stage: e.stage === null ? "" : String(e.stage)});
}

function showEvents(s) {
  let fresh = false;
  for (const e of s.events) {
    if (events.has(e.id)) continue;
    events.set(e.id, e);
    fresh = true;
    const li = document.createElement("li");
    li.className = "event";
    li.dataset.id = e.id;
    li.dataset.kind = e.kind;
    li.innerHTML = `<span class="kind kind-${e.kind}"></span> <time></time> <span class="text"></span>`;
    li.querySelector(".kind").textContent = e.kind;
    li.querySelector("time").textContent = new Date(e.t * 1000).toLocaleTimeString();
    li.querySelector(".text").textContent = e.text;
    document.getElementById("events").prepend(li);
    window.__seen[e.id] = Date.now();
  }
  const counts = document.getElementById("counts");
  counts.replaceChildren();
  for (const [kind, n] of Object.entries(s.counts).sort()) {
    const span = document.createElement("span");
    span.className = `value count-${kind}`;
    show(span, series("streamml_alerts", {kind}), n, 0);
    span.textContent = `${kind}: ${n}`;
    counts.append(span);
  }
  return fresh;
}

let shownModels = "";

function render(s) {
  const models = Object.keys(s.models);
  if (models.join("\n") !== shownModels) { shownModels = models.join("\n"); rebuildCharts(models); }
  const fresh = showEvents(s);
  showModels(s); showTraffic(s); showExperiment(s);
  document.getElementById("seq").textContent = s.seq;
  document.getElementById("time").textContent = new Date(s.t * 1000).toLocaleTimeString();
  window.__seq = s.seq;
  redraw();
  if (fresh) Object.values(charts).forEach(c => c.plot.redraw());
}

const source = new EventSource("/dashboard/stream");
const status = document.getElementById("status");
source.onopen = () => { status.textContent = "live"; status.className = "status live"; };
source.onerror = () => { status.textContent = "reconnecting…"; status.className = "status down"; };
source.addEventListener("history", e => { snapshots = JSON.parse(e.data).slice(-KEEP); });
source.addEventListener("snapshot", e => {
  const s = JSON.parse(e.data);
  if (!snapshots.length || snapshots[snapshots.length - 1].seq !== s.seq) snapshots.push(s);
  if (snapshots.length > KEEP) snapshots.shift();
  render(s);
});
