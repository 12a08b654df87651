// tunwall dashboard: polls the control API once a second and draws the
// live flows, recent refusals, counters, throughput and rule hits.
"use strict";

const tokenKey = "tunwall-token";
const samples = []; // {t, out, in}: byte totals, newest last
const historySpan = 120; // seconds shown in the chart
let token = sessionStorage.getItem(tokenKey) || "";
let filterText = "";

function takeTokenFromLink() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    token = decodeURIComponent(m[1]);
    sessionStorage.setItem(tokenKey, token);
    window.history.replaceState(null, "", location.pathname + location.search);
  }
}

async function api(method, path) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const r = await fetch(path, { method, headers, cache: "no-store" });
  let body = null;
  try { body = await r.json(); } catch (e) { /* not JSON */ }
  if (!r.ok) {
    const err = new Error((body && body.error) || r.status + " " + r.statusText);
    err.status = r.status;
    throw err;
  }
  return body;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.appendChild(c instanceof Node ? c : el("td", c));
  return tr;
}

function num(v) { return el("td", v, "num"); }

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

function duration(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0");
  return Math.floor(s / 3600) + "h" + String(Math.floor(s / 60) % 60).padStart(2, "0");
}

function clock(iso) { return new Date(iso).toLocaleTimeString(); }

function setStatus(text, ok) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.className = "status " + (ok ? "ok" : "bad");
}

function fillBody(id, rows) {
  const tbody = document.querySelector("#" + id + " tbody");
  tbody.replaceChildren(...rows);
}

function drawCards(st) {
  const cards = [
    ["live flows", st.flows_active],
    ["allowed", st.flows_allowed],
    ["refused", st.flows_refused],
    ["out", bytes(st.bytes_out || 0)],
    ["in", bytes(st.bytes_in || 0)],
    ["refused by limits", (st.refused_max_flows || 0) + (st.refused_pending_tcp || 0) + (st.refused_udp_sessions || 0) + (st.refused_per_source || 0)],
    ["blocked names", st.blocked_names],
    ["upstream unreachable", st.dial_errors],
    ["malformed packets", st.malformed],
    ["pending handshakes", st.pending_tcp],
    ["UDP sessions", st.udp_sessions],
  ];
  document.getElementById("cards").replaceChildren(...cards.map(([label, v]) => {
    const c = el("div", null, "card");
    c.appendChild(el("b", v === undefined ? "–" : v));
    c.appendChild(el("span", label));
    return c;
  }));
}

function drawChart(st) {
  const now = Date.now() / 1000;
  samples.push({ t: now, out: st.bytes_out || 0, in: st.bytes_in || 0 });
  while (samples.length > 2 && samples[0].t < now - historySpan - 2) samples.shift();
  const rates = [];
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1], b = samples[i], dt = b.t - a.t;
    if (dt > 0) rates.push({ t: b.t, out: Math.max(0, b.out - a.out) / dt, in: Math.max(0, b.in - a.in) / dt });
  }
  const last = rates[rates.length - 1];
  document.getElementById("rate").textContent = last ? "out " + bytes(Math.round(last.out)) + "/s, in " + bytes(Math.round(last.in)) + "/s" : "";
  const cv = document.getElementById("chart");
  const ctx = cv.getContext("2d");
  const w = cv.width, h = cv.height, pad = 4;
  ctx.clearRect(0, 0, w, h);
  const peak = Math.max(1, ...rates.map(r => Math.max(r.out, r.in)));
  const css = getComputedStyle(document.documentElement);
  ctx.fillStyle = css.getPropertyValue("--muted");
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillText(bytes(Math.round(peak)) + "/s", 6, 12);
  for (const [key, color] of [["out", "--out"], ["in", "--in"]]) {
    ctx.strokeStyle = css.getPropertyValue(color);
    ctx.lineWidth = 2;
    ctx.beginPath();
    rates.forEach((r, i) => {
      const x = w - (now - r.t) / historySpan * w;
      const y = h - pad - r[key] / peak * (h - 2 * pad - 14);
      i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
    });
    ctx.stroke();
  }
}

function killButton(id) {
  const b = el("button", "close", "kill");
  b.title = "close flow " + id;
  b.addEventListener("click", async () => {
    b.disabled = true;
    b.textContent = "closing…";
    try {
      await api("DELETE", "/v1/flows/" + id);
      refresh();
    } catch (e) {
      b.textContent = "failed";
      b.title = e.message;
    }
  });
  return b;
}

// flowRows keeps each shown flow's row, so a refresh updates rows in
// place: a close button being clicked is never swapped for a new one.
const flowRows = new Map(); // id -> {tr, cells}
const flowClasses = ["", "", "", "wrap", "wrap", "wrap", "", "num", "num", "num", "num"];

function flowRow(id) {
  let r = flowRows.get(id);
  if (!r) {
    const tr = document.createElement("tr");
    tr.dataset.flowId = id;
    const cells = flowClasses.map(cls => tr.appendChild(el("td", null, cls)));
    tr.appendChild(el("td")).appendChild(killButton(id));
    r = { tr, cells };
    flowRows.set(id, r);
  }
  return r;
}

function drawFlows(flows) {
  document.getElementById("flow-count").textContent = "(" + flows.length + ")";
  const f = filterText.toLowerCase();
  const shown = flows.filter(x => !f || [x.src, x.dst, x.domain, x.exe, x.user, x.rule, x.proto].some(v => v && String(v).toLowerCase().includes(f)));
  const now = Date.now();
  const tbody = document.querySelector("#flows tbody");
  const keep = new Set();
  let prev = null;
  for (const x of shown) {
    keep.add(x.id);
    const r = flowRow(x.id);
    const app = x.exe ? x.exe.split("/").pop() + (x.pid ? " (" + x.pid + ")" : "") : (x.user || "");
    const values = [
      x.id, x.proto, x.src, x.dst, x.domain ? x.domain + " (" + x.domain_source + ")" : "", app, x.rule + (x.enforced ? "" : " (monitor)"),
      bytes(x.bytes_out), bytes(x.bytes_in), duration(now - Date.parse(x.start)), duration(x.idle_ms),
    ];
    values.forEach((v, i) => { if (r.cells[i].textContent !== String(v)) r.cells[i].textContent = String(v); });
    r.cells[6].className = x.enforced ? "" : "monitor";
    const at = prev ? prev.nextSibling : tbody.firstChild;
    if (at !== r.tr) tbody.insertBefore(r.tr, at);
    prev = r.tr;
  }
  for (const [id, r] of flowRows) {
    if (!keep.has(id)) {
      r.tr.remove();
      flowRows.delete(id);
    }
  }
}

function drawDenied(denied) {
  fillBody("denied", denied.map(d => row([
    clock(d.last), d.proto, d.src, el("td", d.dst, "wrap"), el("td", d.domain || "", "wrap"),
    d.limit ? "limit " + d.limit : (d.rule || "(default)"),
    el("td", d.action, d.action), num(d.count),
  ])));
}

function drawPolicy(p) {
  document.getElementById("policy").textContent = p.source + " · " + p.mode + " · default " + p.default + " · " + (p.hash || "").slice(0, 12);
  const rules = (p.rules || []).map(r => row([r.line, r.name, el("td", r.action, r.action), num(r.hits)]));
  rules.push(row(["", "(default)", el("td", p.default, p.default), num(p.default_hits)]));
  fillBody("rules", rules);
}

async function refresh() {
  try {
    const [st, flows, denied, pol] = await Promise.all([
      api("GET", "/v1/stats"), api("GET", "/v1/flows"), api("GET", "/v1/denied"), api("GET", "/v1/policy"),
    ]);
    document.getElementById("login").hidden = true;
    document.getElementById("main").hidden = false;
    drawCards(st);
    drawChart(st);
    drawFlows(flows);
    drawDenied(denied);
    drawPolicy(pol);
    setStatus("live · " + new Date().toLocaleTimeString(), true);
  } catch (e) {
    if (e.status === 401) {
      document.getElementById("login").hidden = false;
      document.getElementById("main").hidden = true;
      setStatus("token needed", false);
    } else {
      setStatus("unreachable: " + e.message, false);
    }
  }
}

function start() {
  takeTokenFromLink();
  document.getElementById("filter").addEventListener("input", e => { filterText = e.target.value; refresh(); });
  document.getElementById("login").addEventListener("submit", e => {
    e.preventDefault();
    token = document.getElementById("token").value.trim();
    sessionStorage.setItem(tokenKey, token);
    refresh();
  });
  refresh();
  setInterval(refresh, 1000);
}

document.addEventListener("DOMContentLoaded", start);
