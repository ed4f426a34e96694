"use strict";
// The coilwork simulator page: polls the REST API (see the crate's README).
const $ = (sel) => document.querySelector(sel);
const state = { lastValues: new Map(), logSince: 0, messageTimer: null, server: null,
  trend: new Map(), rates: [], lastTotal: null, lastTime: null };
const TREND_SECONDS = 300;
const TREND_COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];

// With --http-token, open the page as http://HOST:PORT/#token=TOKEN: the
// token moves to this tab's session storage and leaves the address bar.
(function takeToken() {
  const m = location.hash.match(/(?:^#|&)token=([^&]*)/);
  if (!m) return;
  sessionStorage.setItem("coilworkToken", decodeURIComponent(m[1]));
  history.replaceState(null, "", location.pathname + location.search);
})();

async function api(method, path, body) {
  const init = { method, headers: {} };
  const token = sessionStorage.getItem("coilworkToken");
  if (token) init.headers["Authorization"] = "Bearer " + token;
  // The server refuses state changes without a JSON content type, bodiless ones too.
  if (method !== "GET") init.headers["Content-Type"] = "application/json";
  if (body !== undefined) init.body = JSON.stringify(body);
  // With several servers, every call is about the one chosen.
  if (state.server !== null && path.startsWith("/api/") && path !== "/api/servers") {
    path += (path.includes("?") ? "&" : "?") + "server=" + encodeURIComponent(state.server);
  }
  const res = await fetch(path, init);
  if (res.status === 204) return null;
  const data = await res.json().catch(() => ({ error: res.statusText }));
  if (!res.ok) throw new Error(data.error || res.statusText);
  return data;
}

function message(text, info) {
  const m = $("#message");
  m.textContent = text;
  m.className = info ? "message info" : "message";
  m.hidden = false;
  clearTimeout(state.messageTimer);
  state.messageTimer = setTimeout(() => { m.hidden = true; }, 5000);
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

async function refreshStatus() {
  const s = await api("GET", "/api/server");
  const m = s.modbus;
  const st = $("#status");
  st.innerHTML = "";
  const span = document.createElement("span");
  span.className = m.running ? "up" : "down";
  span.textContent = m.running ? "● running" : "● stopped";
  st.append(span, ` ${m.endpoint} · device "${s.device}" · ${s.size} registers · faults: ${s.faults}`);
  sampleRate(s.requests_total);
}

// Requests per second from the total's growth between polls.
function sampleRate(total) {
  const now = Date.now() / 1000;
  if (state.lastTotal !== null && total >= state.lastTotal && now > state.lastTime) {
    state.rates.push((total - state.lastTotal) / (now - state.lastTime));
    if (state.rates.length > 120) state.rates.shift();
  }
  state.lastTotal = total;
  state.lastTime = now;
  drawSparkline();
}

function drawSparkline() {
  const c = $("#rate");
  const ctx = c.getContext("2d");
  ctx.clearRect(0, 0, c.width, c.height);
  const r = state.rates;
  if (r.length < 2) return;
  const max = Math.max(1, ...r);
  ctx.strokeStyle = "#2563eb";
  ctx.beginPath();
  r.forEach((v, i) => {
    const x = (i / (r.length - 1)) * (c.width - 2) + 1;
    const y = c.height - 2 - (v / max) * (c.height - 4);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
  $("#rate-now").textContent = `${Math.round(r[r.length - 1])} req/s`;
}

// The addresses typed in the trend field.
function trendAddresses() {
  return $("#trend-addrs").value.split(/[\s,]+/).filter((a) => a !== "").map(Number).filter(Number.isInteger);
}

function sampleTrend(registers) {
  const now = Date.now() / 1000;
  const wanted = trendAddresses();
  for (const key of [...state.trend.keys()]) if (!wanted.includes(key)) state.trend.delete(key);
  for (const r of registers) {
    if (!wanted.includes(r.address) || typeof r.decoded !== "number") continue;
    const points = state.trend.get(r.address) || [];
    points.push([now, r.decoded]);
    while (points.length && points[0][0] < now - TREND_SECONDS) points.shift();
    state.trend.set(r.address, points);
  }
  drawTrend(now);
}

function drawTrend(now) {
  const c = $("#trend");
  const ctx = c.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, c.width, c.height);
  const series = [...state.trend.entries()].filter(([, p]) => p.length > 0);
  const legend = $("#trend-legend");
  legend.innerHTML = "";
  if (!series.length) return;
  const values = series.flatMap(([, p]) => p.map((q) => q[1]));
  let lo = Math.min(...values), hi = Math.max(...values);
  if (hi === lo) { hi += 1; lo -= 1; }
  const pad = 30;
  const x = (t) => pad + ((t - (now - TREND_SECONDS)) / TREND_SECONDS) * (c.width - pad - 4);
  const y = (v) => c.height - 14 - ((v - lo) / (hi - lo)) * (c.height - 24);
  ctx.strokeStyle = "#ddd";
  ctx.strokeRect(pad, 6, c.width - pad - 4, c.height - 20);
  ctx.fillStyle = "#666";
  ctx.font = "10px sans-serif";
  ctx.fillText(String(+hi.toPrecision(4)), 2, 14);
  ctx.fillText(String(+lo.toPrecision(4)), 2, c.height - 14);
  ctx.fillText("−5 min", pad, c.height - 2);
  ctx.fillText("now", c.width - 24, c.height - 2);
  series.forEach(([addr, points], i) => {
    const color = TREND_COLORS[i % TREND_COLORS.length];
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    points.forEach(([t, v], j) => { if (j === 0) ctx.moveTo(x(t), y(v)); else ctx.lineTo(x(t), y(v)); });
    if (points.length === 1) ctx.arc(x(points[0][0]), y(points[0][1]), 2, 0, 2 * Math.PI);
    ctx.stroke();
    const item = document.createElement("span");
    item.style.color = color;
    item.textContent = `■ ${addr}: ${points[points.length - 1][1]}`;
    legend.appendChild(item);
  });
}

async function refreshClients() {
  const data = await api("GET", "/api/clients");
  const body = $("#clients tbody");
  body.innerHTML = "";
  for (const c of data.clients) {
    const tr = document.createElement("tr");
    cell(tr, c.peer);
    cell(tr, c.recent_calls);
    cell(tr, c.last_seen.replace(/^.*T/, "").replace(/\+.*$/, ""));
    body.appendChild(tr);
  }
  $("#connections").textContent = `open connections: ${data.connections_active}`;
}

async function refreshRegisters() {
  if ($("#reg-paused").checked) return;
  const start = Number($("#reg-start").value) || 0;
  const count = Number($("#reg-count").value) || 100;
  const data = await api("GET", `/api/registers?start=${start}&count=${count}`);
  sampleTrend(data.registers);
  const body = $("#registers tbody");
  const rows = document.createDocumentFragment();
  for (const r of data.registers) {
    const tr = document.createElement("tr");
    tr.dataset.addr = r.address;
    tr.className = (r.type === "next" ? "next " : "") + (r.access === "rw" ? "rw" : "");
    cell(tr, r.address);
    cell(tr, r.name, "name");
    cell(tr, r.type);
    cell(tr, r.access, "access");
    cell(tr, r.action || "");
    cell(tr, r.value, "value raw");
    cell(tr, r.decoded, "value decoded");
    cell(tr, r.reads);
    cell(tr, r.writes);
    const key = `${r.address}`;
    if (state.lastValues.has(key) && state.lastValues.get(key) !== r.value) tr.classList.add("flash");
    state.lastValues.set(key, r.value);
    tr.addEventListener("click", () => {
      $("#set-addr").value = r.address;
      $("#set-value").value = r.decoded === null ? r.value : r.decoded;
      $("#set-raw").checked = r.decoded === null;
      $("#set-value").focus();
    });
    rows.appendChild(tr);
  }
  body.replaceChildren(rows);
}

function faultText(f) {
  switch (f.kind) {
    case "exception": return `exception ${f.code}`;
    case "no_response": return "no response";
    case "delay": return `delay ${f.delay_ms} ms`;
    case "split": return `split after ${f.split_at} B, ${f.pause_ms} ms`;
    case "garble": return "garbled frame";
    default: return f.kind;
  }
}

async function refreshFaults() {
  const data = await api("GET", "/api/faults");
  const body = $("#faults tbody");
  body.replaceChildren();
  for (const f of data.faults) {
    const tr = document.createElement("tr");
    tr.dataset.id = f.id;
    cell(tr, f.id);
    cell(tr, f.function === null ? "every" : f.function);
    cell(tr, faultText(f));
    cell(tr, f.remaining === null ? "∞" : f.remaining);
    cell(tr, f.applied);
    const td = cell(tr, "");
    const b = document.createElement("button");
    b.type = "button";
    b.className = "remove";
    b.textContent = "✕";
    b.title = "Remove this fault";
    b.addEventListener("click", () => run(async () => { await api("DELETE", `/api/faults/${f.id}`); await refreshFaults(); }));
    td.appendChild(b);
    body.appendChild(tr);
  }
}

async function refreshCalls() {
  const fc = $("#calls-function").value;
  const q = fc ? `?function=${fc}&limit=100` : "?limit=100";
  const data = await api("GET", "/api/calls" + q);
  const body = $("#calls tbody");
  const rows = document.createDocumentFragment();
  for (const c of data.calls.reverse()) {
    const tr = document.createElement("tr");
    cell(tr, c.seq);
    cell(tr, c.time.slice(11, 23));
    cell(tr, c.unit);
    cell(tr, c.function);
    cell(tr, c.address);
    cell(tr, c.count);
    const result = c.result === "exception" ? `exception ${c.exception}` : c.result.replace("_", " ");
    cell(tr, result, c.result);
    cell(tr, c.fault || "");
    rows.appendChild(tr);
  }
  body.replaceChildren(rows);
}

async function refreshLog() {
  const data = await api("GET", `/api/log?since=${state.logSince}`);
  const log = $("#log");
  for (const e of data.entries) {
    const line = document.createElement("div");
    line.className = e.level;
    line.textContent = `${e.time.slice(11, 19)} ${e.level.padEnd(5)} ${e.message}`;
    log.appendChild(line);
    state.logSince = e.seq;
  }
  if (data.entries.length) log.scrollTop = log.scrollHeight;
}

async function run(f) {
  try { await f(); } catch (e) { message(e.message); }
}

async function refresh() {
  await run(() => Promise.all([refreshStatus(), refreshRegisters(), refreshFaults(), refreshCalls(), refreshLog(), refreshClients()]));
}

function showFaultFields() {
  const kind = $("#fault-kind").value;
  for (const l of document.querySelectorAll("#fault label[data-for]")) l.hidden = l.dataset.for !== kind;
}

$("#set").addEventListener("submit", (ev) => {
  ev.preventDefault();
  run(async () => {
    const addr = $("#set-addr").value;
    const text = $("#set-value").value.trim();
    let body;
    if ($("#set-raw").checked) body = { raw: Number(text) };
    else if (text !== "" && !Number.isNaN(Number(text))) body = { value: Number(text) };
    else body = { value: text };
    await api("PUT", `/api/registers/${addr}`, body);
    message(`register ${addr} set`, true);
    await refreshRegisters();
  });
});

$("#fault").addEventListener("submit", (ev) => {
  ev.preventDefault();
  run(async () => {
    const kind = $("#fault-kind").value;
    const spec = { kind };
    const fc = $("#fault-function").value;
    if (fc) spec.function = Number(fc);
    const count = $("#fault-count").value;
    if (count) spec.count = Number(count);
    if (kind === "exception") spec.code = Number($("#fault-code").value);
    if (kind === "delay") spec.delay_ms = Number($("#fault-delay").value);
    if (kind === "split") { spec.split_at = Number($("#fault-split-at").value); spec.pause_ms = Number($("#fault-pause").value); }
    const f = await api("POST", "/api/faults", spec);
    message(`fault ${f.id} injected`, true);
    await refreshFaults();
  });
});

$("#faults-clear").addEventListener("click", () => run(async () => { await api("DELETE", "/api/faults"); await refreshFaults(); }));
$("#calls-clear").addEventListener("click", () => run(async () => { await api("DELETE", "/api/calls"); await refreshCalls(); }));
$("#calls-function").addEventListener("change", () => run(refreshCalls));
$("#range").addEventListener("submit", (ev) => { ev.preventDefault(); run(refreshRegisters); });
$("#reg-start").addEventListener("change", () => run(refreshRegisters));
$("#reg-count").addEventListener("change", () => run(refreshRegisters));
$("#fault-kind").addEventListener("change", showFaultFields);
for (const [id, path, done] of [["#server-stop", "stop", "Modbus server stopped"], ["#server-restart", "restart", "Modbus server restarted"], ["#server-reset", "reset", "registers reset"]]) {
  $(id).addEventListener("click", () => run(async () => { await api("POST", `/api/server/${path}`); message(done, true); await refresh(); }));
}

async function loadServers() {
  const { servers } = await api("GET", "/api/servers");
  if (servers.length < 2) return;
  const select = $("#server-select");
  for (const s of servers) {
    const o = document.createElement("option");
    o.value = s.server;
    o.textContent = `${s.server} (${s.device})`;
    select.appendChild(o);
  }
  state.server = servers[0].server;
  $("#server-choice").hidden = false;
  select.addEventListener("change", () => {
    state.server = select.value;
    state.lastValues.clear();
    state.logSince = 0;
    state.trend.clear();
    state.rates = [];
    state.lastTotal = null;
    $("#log").textContent = "";
    run(refresh);
  });
}

showFaultFields();
run(loadServers);
refresh();
setInterval(refresh, 1000);
