/* Garrison console UI. Plain modern JS, no dependencies: every page is a server-rendered shell
 * filled from the REST API (/api/v1) with the bearer token from POST /api/v1/authenticate.
 * All text from the API goes through textContent (never innerHTML), so audit data cannot inject. */
"use strict";

const API = "/api/v1";
const TOKEN_KEY = "garrison.token";
const POLL_MS = 2000;
const TYPE_COLORS = {
  process: "#2f5bea", drift: "#7c3aed", network: "#0ea5e9", listen: "#14b8a6", dns: "#f59e0b",
  fork_bomb: "#ef4444", port_scan: "#ec4899", bad_reputation: "#b91c1c", cnaf: "#16a34a",
  assurance: "#64748b", kernel: "#475569", defender: "#94a3b8",
};
const EFFECT_COLORS = { prevent: "#d33a3a", ban: "#991b1b", alert: "#e0a030", info: "#3b6fd6" };

// ---------------------------------------------------------------------------------------------
// helpers

function $(sel, root = document) { return root.querySelector(sel); }
function $all(sel, root = document) { return Array.from(root.querySelectorAll(sel)); }

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function pill(text, kind) { return el("span", { class: `pill ${kind || text}`, text }); }

function fmtTime(t) {
  if (!t) return "–";
  const d = new Date(t * 1000);
  return d.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
}

function ago(t) {
  if (!t) return "never";
  const s = Math.max(0, Date.now() / 1000 - t);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return fmtTime(t);
}

let toastTimer = null;
function toast(message, isError = false) {
  const t = $("#toast");
  if (!t) return;
  t.textContent = message;
  t.classList.toggle("error", isError);
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, isError ? 6000 : 2500);
}

function showError(box, message) {
  if (!box) return;
  box.textContent = message || "";
  box.hidden = !message;
}

function token() { return sessionStorage.getItem(TOKEN_KEY); }

/** Where to go after signing in: a same-origin path only. `next` comes from the URL, so anyone can
 * craft it: `//host`, `/\\host`, `/<TAB>/host` and absolute URLs would leave the console. */
function safeNext(raw) {
  const local = /^\/(?![\/\\])[\x21-\x7e]*$/;  // one leading '/', then printable ASCII only
  if (!raw || !local.test(raw)) return "/dashboard";
  let url;
  try { url = new URL(raw, location.origin); } catch (_) { return "/dashboard"; }
  const target = url.pathname + url.search + url.hash;  // normalised: '/..//host' becomes '//host'
  return url.origin === location.origin && local.test(target) ? target : "/dashboard";
}

function toLogin() {
  const next = encodeURIComponent(location.pathname + location.search);
  location.replace(`/login?next=${next}`);
}

class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : `request failed (${status})`);
    this.status = status;
    this.detail = detail;
  }
}

async function api(path, { method = "GET", body, raw = false } = {}) {
  const headers = { Authorization: `Bearer ${token()}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(API + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, "the console is unreachable; retrying");
  }
  if (resp.status === 401) { sessionStorage.removeItem(TOKEN_KEY); toLogin(); throw new ApiError(401, "signed out"); }
  if (!resp.ok) {
    let detail = `${resp.status} ${resp.statusText}`;
    try { detail = (await resp.json()).detail ?? detail; } catch (_) { /* not JSON */ }
    throw new ApiError(resp.status, detail);
  }
  if (raw) return resp;
  if (resp.status === 204) return { data: null, headers: resp.headers };
  return { data: await resp.json(), headers: resp.headers };
}

async function download(path, filename) {
  const resp = await api(path, { raw: true });
  saveBlob(await resp.blob(), filename);
}

function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = el("a", { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (_) {
    const ta = el("textarea", {}, text);
    document.body.append(ta);
    ta.select();
    document.execCommand("copy");
    ta.remove();
  }
  toast("Copied to the clipboard");
}

function errorText(detail) {
  if (Array.isArray(detail)) return detail.map((d) => `${(d.loc || []).filter((x) => x !== "body").join(".")}: ${cleanMsg(d.msg)}`).join("\n");
  return String(detail);
}

function cleanMsg(msg) { return String(msg || "").replace(/^Value error, /, ""); }

function poll(fn, ms = POLL_MS) {
  const live = $("#live-indicator");
  let stopped = false;
  const tick = async () => {
    if (stopped) return;
    try { await fn(); if (live) live.hidden = false; } catch (e) { if (live) live.hidden = true; }
    setTimeout(tick, document.hidden ? ms * 3 : ms);
  };
  setTimeout(tick, ms);
  return () => { stopped = true; };
}

/* Server push: reads the console's Server-Sent Events stream with fetch (so the bearer token stays in a
 * header, never in a URL), calls handlers[event](data), and reconnects with back-off from the last
 * cursor it was given. The Live badge shows whether the stream is up. Returns a stop function. */
function liveStream(path, handlers, start = null) {
  const live = $("#live-indicator");
  let cursor = start; // the list's Stream-Cursor: audits stored after that list was read are streamed
  let stopped = false;
  let ctrl = null;
  let backoff = 1000;
  let reconnecting = false;
  const setLive = (on) => { if (live) { live.hidden = false; live.classList.toggle("down", !on); live.lastChild.textContent = on ? "Live" : "Reconnecting…"; } };

  function dispatch(block) {
    let event = "message", data = "";
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue;
      const i = line.indexOf(":");
      const field = i < 0 ? line : line.slice(0, i);
      const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
      if (field === "event") event = value;
      else if (field === "data") data += (data ? "\n" : "") + value;
      else if (field === "id" && /^\d+$/.test(value)) cursor = value;
    }
    if (event === "signed-out") { sessionStorage.removeItem(TOKEN_KEY); toLogin(); return; }
    if (handlers[event]) { try { handlers[event](data ? JSON.parse(data) : null); } catch (e) { console.error(e); } }
  }

  async function run() {
    while (!stopped) {
      ctrl = new AbortController();
      const sep = path.includes("?") ? "&" : "?";
      try {
        const resp = await fetch(API + path + (cursor !== null ? `${sep}after=${cursor}` : ""), {
          headers: { Authorization: `Bearer ${token()}`, Accept: "text/event-stream" }, signal: ctrl.signal, cache: "no-store",
        });
        if (resp.status === 401) { sessionStorage.removeItem(TOKEN_KEY); toLogin(); return; }
        if (!resp.ok || !resp.body) throw new Error(`stream ${resp.status}`);
        setLive(true);
        backoff = 1000;
        if (reconnecting) handlers.reconnected?.();
        reconnecting = true;
        const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value.replace(/\r\n?/g, "\n");
          let k;
          while ((k = buf.indexOf("\n\n")) >= 0) { dispatch(buf.slice(0, k)); buf = buf.slice(k + 2); }
        }
      } catch (e) {
        if (stopped) return;
      }
      setLive(false);
      await new Promise((r) => setTimeout(r, backoff));
      backoff = Math.min(backoff * 2, 10000);
    }
  }
  run();
  return () => { stopped = true; ctrl?.abort(); };
}

// ---------------------------------------------------------------------------------------------
// session

let SESSION = null;

async function fetchSession() {
  if (!token()) { toLogin(); return null; }
  const resp = await fetch("/ui/session", { headers: { Authorization: `Bearer ${token()}` } });
  if (resp.status === 401) { sessionStorage.removeItem(TOKEN_KEY); toLogin(); return null; }
  if (!resp.ok) throw new ApiError(resp.status, "cannot load the session");
  return resp.json();
}

function applySession(s) {
  SESSION = s;
  document.body.dataset.canWrite = s.can_write ? "true" : "false";
  document.body.dataset.role = s.role;
  const badge = $("#user-badge");
  if (badge) { badge.replaceChildren(s.username, pill(s.role, "role")); }
}

// ---------------------------------------------------------------------------------------------
// login

function initLogin() {
  const form = $("#login-form");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const err = $("#login-error");
    showError(err, "");
    const body = { username: $("#username").value.trim(), password: $("#password").value };
    let resp;
    try {
      resp = await fetch(`${API}/authenticate`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    } catch (_) { showError(err, "The console is unreachable."); return; }
    if (resp.status === 401 && resp.headers.get("Retry-After")) {
      showError(err, `Too many failed sign-ins: try again in ${resp.headers.get("Retry-After")} s.`);
      return;
    }
    if (resp.status === 401) { showError(err, "Wrong username or password."); return; }
    if (!resp.ok) { showError(err, `Sign-in failed (${resp.status}).`); return; }
    sessionStorage.setItem(TOKEN_KEY, (await resp.json()).token);
    location.replace(safeNext(new URLSearchParams(location.search).get("next")));
  });
}

// ---------------------------------------------------------------------------------------------
// dashboard

function initDashboard() {
  const DAY = 86400;
  const events = new Map();
  const counts = { audits: 0, prevented: 0 };
  let mode = "type";
  let fresh = new Set();
  let timer = null;

  function showDefenders(data) {
    $("#stat-connected").textContent = data.connected;
    $("#stat-disconnected").textContent = data.disconnected;
  }

  async function summary() { showDefenders((await api("/defenders/summary")).data); }

  // Exact 24-hour counts come from the API's Total-Count; the chart and feed use the newest 1,000 audits.
  async function loadCounts() {
    const since = Math.floor(Date.now() / 1000 - DAY);
    const total = async (q) => Number((await api(`/audits/runtime/app-embedded?limit=1&from=${since}${q}`)).headers.get("Total-Count") || 0);
    const [all, prevent, ban] = await Promise.all([total(""), total("&effect=prevent"), total("&effect=ban")]);
    counts.audits = all;
    counts.prevented = prevent + ban;
  }

  let streamFrom = null;
  async function loadAudits() {
    const { data, headers } = await api(`/audits/runtime/app-embedded?limit=1000&from=${Math.floor(Date.now() / 1000 - DAY)}`);
    for (const e of data) events.set(e.id, e);
    streamFrom = headers.get("Stream-Cursor");
  }

  function render() {
    const cutoff = Date.now() / 1000 - DAY;
    for (const [id, e] of events) if (e.time < cutoff) events.delete(id);
    const all = Array.from(events.values()).sort((a, b) => b.time - a.time);
    $("#stat-audits").textContent = counts.audits;
    $("#stat-prevented").textContent = counts.prevented;
    drawChart(all, mode);
    const feed = $("#feed");
    feed.replaceChildren(...all.slice(0, 20).map((e) => el("li", { class: fresh.has(e.id) ? "fresh" : "", dataset: { id: e.id } },
      pill(e.effect),
      el("div", { class: "what" }, el("strong", { text: `${e.type.replace("_", " ")} · ${e.app_name || e.app_id || "unknown app"}` }), el("div", { class: "cell-sub", text: e.message || e.exe || "" })),
      el("time", { text: ago(e.time), title: fmtTime(e.time) }))));
    $("#feed-empty").hidden = all.length > 0;
    fresh = new Set();
  }

  function later() { if (!timer) timer = setTimeout(() => { timer = null; render(); }, 150); }

  async function reload() {
    await Promise.all([summary(), loadCounts(), loadAudits()]);
    render();
  }

  $all("#chart-mode button").forEach((b) => b.addEventListener("click", () => {
    $all("#chart-mode button").forEach((x) => x.classList.toggle("active", x === b));
    mode = b.dataset.mode;
    render();
  }));

  reload().catch((e) => toast(e.message, true)).finally(() => {
    liveStream("/audits/runtime/app-embedded/stream", {
      audit(e) {
        if (events.has(e.id)) return;
        events.set(e.id, e);
        fresh.add(e.id);
        counts.audits += 1;
        if (e.effect === "prevent" || e.effect === "ban") counts.prevented += 1;
        later();
      },
      defenders: showDefenders,
      skipped() { reload().catch(() => {}); },
      reconnected() { reload().catch(() => {}); },
    }, streamFrom);
    setInterval(() => { loadCounts().then(render).catch(() => {}); }, 60000); // audits age out of the 24 h window
  });
}

function drawChart(events, mode) {
  const box = $("#chart");
  const W = 720, H = 220, PADL = 34, PADB = 22, BINS = 24;
  const now = Date.now() / 1000;
  const start = now - BINS * 3600;
  const palette = mode === "type" ? TYPE_COLORS : EFFECT_COLORS;
  const keys = Array.from(new Set(events.map((e) => e[mode]))).sort();
  const bins = Array.from({ length: BINS }, () => ({}));
  for (const e of events) {
    const i = Math.min(BINS - 1, Math.floor((e.time - start) / 3600));
    if (i >= 0) bins[i][e[mode]] = (bins[i][e[mode]] || 0) + 1;
  }
  const max = Math.max(1, ...bins.map((b) => Object.values(b).reduce((s, n) => s + n, 0)));
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img", "aria-label": `Audits per hour by ${mode}` });
  const plotH = H - PADB - 6, bw = (W - PADL) / BINS;
  for (const f of max % 2 === 0 ? [0, 0.5, 1] : [0, 1]) {
    const y = 6 + plotH * (1 - f);
    root.append(svg("line", { x1: PADL, x2: W, y1: y, y2: y, stroke: "#e3e8ef", "stroke-width": 1 }));
    const t = svg("text", { x: PADL - 6, y: y + 4, "text-anchor": "end", class: "axis" });
    t.textContent = String(Math.round(max * f));
    root.append(t);
  }
  bins.forEach((b, i) => {
    let y = 6 + plotH;
    for (const k of keys) {
      const n = b[k] || 0;
      if (!n) continue;
      const h = (n / max) * plotH;
      y -= h;
      const r = svg("rect", { x: PADL + i * bw + 2, y, width: Math.max(1, bw - 4), height: h, rx: 2, fill: palette[k] || "#94a3b8" });
      const title = svg("title", {});
      title.textContent = `${n} ${k}`;
      r.append(title);
      root.append(r);
    }
    if (i % 4 === 0) {
      const t = svg("text", { x: PADL + i * bw + bw / 2, y: H - 6, "text-anchor": "middle", class: "axis" });
      t.textContent = new Date((start + i * 3600) * 1000).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
      root.append(t);
    }
  });
  box.replaceChildren(root);
  $("#chart-legend").replaceChildren(...(keys.length ? keys : ["no audits in the last 24 hours"]).map((k) =>
    swatch(k.replace("_", " "), keys.length ? palette[k] || "#94a3b8" : "transparent")));
}

function swatch(text, color) {
  const s = el("span", { text });
  s.style.setProperty("--c", color); // CSSOM, allowed by the page's CSP (inline style attributes are not)
  return s;
}

// ---------------------------------------------------------------------------------------------
// defenders

function initDefenders() {
  const tbody = $("#defenders-table tbody");
  async function load() {
    const q = new URLSearchParams({ limit: "500" });
    if ($("#def-app").value.trim()) q.set("app", $("#def-app").value.trim());
    if ($("#def-connected").value) q.set("connected", $("#def-connected").value);
    const { data } = await api(`/defenders?${q}`);
    tbody.replaceChildren(...data.map((d) => el("tr", { dataset: { id: d.id } },
      el("td", {}, d.connected ? pill("connected", "ok") : pill("disconnected", "off")),
      el("td", {}, el("div", { class: "mono", text: d.id }), el("div", { class: "cell-sub", text: d.hostname || d.remote_addr || "" })),
      d.defender_type === "cell"
        ? el("td", {}, pill("cell", "info"), " ", el("a", { class: "link", href: `/defenders/cell?id=${encodeURIComponent(d.id)}`, text: `${d.workloads ?? 0} app container(s)` }))
        : el("td", {}, el("strong", { text: d.app_name || "–" }), el("div", { class: "cell-sub", text: d.app_id || "" })),
      el("td", { text: [d.org, d.space].filter(Boolean).join(" / ") || "–" }),
      el("td", { text: String(d.instance ?? "") }),
      el("td", { text: d.version || "–" }),
      el("td", { text: ago(d.last_seen), title: fmtTime(d.last_seen) }),
      el("td", { class: "writer-only" }, el("button", { class: "btn btn-small btn-danger", type: "button", text: "Remove", onclick: () => remove(d) })))));
    $("#defenders-empty").hidden = data.length > 0;
    $("#defenders-table").hidden = data.length === 0;
  }
  async function remove(d) {
    if (!confirm(`Remove defender ${d.id}? Its certificate will be refused from now on.`)) return;
    try { await api(`/defenders/${encodeURIComponent(d.id)}`, { method: "DELETE" }); toast("Defender removed"); await load(); }
    catch (e) { toast(e.message, true); }
  }
  $("#def-app").addEventListener("input", () => load().catch((e) => toast(e.message, true)));
  $("#def-connected").addEventListener("change", () => load().catch((e) => toast(e.message, true)));
  load().catch((e) => toast(e.message, true));
  poll(load, 3000);
}

// ---------------------------------------------------------------------------------------------
// deploy

function initDeploy() {
  let bundle = null;
  let addon = null; // runtime config of the cell add-on, once generated
  $("#consoleaddr").value = location.hostname;

  function wsAddress() {
    if (bundle) { try { return JSON.parse(atob(bundle)).ws_address; } catch (_) { /* fall through */ } }
    return `wss://${$("#consoleaddr").value.trim() || location.hostname}:8084`;
  }

  function renderCell() {
    $all(".app-only").forEach((n) => { n.hidden = true; });
    $("#generate").textContent = "Generate the BOSH add-on";
    $("#snippet-title").textContent = "2. Runtime config for every Diego cell";
    $("#snippet-name").textContent = "garrison-runtime-config.yml";
    $("#steps-title").textContent = "3. Upload and apply";
    $("#manifest-snippet").textContent = addon || "Generate the BOSH add-on: it carries this console's address and CA, a new API token for the cells, and the runtime policy.";
    $("#steps-snippet").textContent = [
      "bosh upload-release garrison-<version>.tgz          # bosh create-release --dir bosh/ --final --tarball ...",
      "bosh update-runtime-config --name garrison garrison-runtime-config.yml",
      "bosh -d cf deploy cf.yml                             # the add-on lands on every Diego cell (rep job)",
    ].join("\n");
  }

  function render() {
    if ($("#deftype").value === "cell") { renderCell(); return; }
    $all(".app-only").forEach((n) => { n.hidden = false; });
    $("#generate").textContent = "Generate install bundle";
    $("#snippet-title").textContent = "3. Add to manifest.yml";
    $("#snippet-name").textContent = "manifest.yml";
    $("#steps-title").textContent = "4. Embed and push";
    const inDroplet = $("#deftype").value === "app-embedded";
    const path = inDroplet ? ".garrison/defender" : "./defender";
    const appId = $("#appid").value.trim() || "my-app";
    const lines = [
      "applications:",
      `- name: ${appId}`,
      ...(inDroplet ? ["  # the droplet's start command is wrapped by `garrison embed`"] : [`  command: ${path} app-embedded <your start command>`]),
      "  env:",
      "    DEFENDER_TYPE: app-embedded",
      `    DEFENDER_APP_ID: ${appId}`,
      `    WS_ADDRESS: ${wsAddress()}`,
      `    DATA_FOLDER: ${$("#datafolder").value.trim() || "/tmp"}`,
      `    INSTALL_BUNDLE: ${bundle || "<generate an install bundle>"}`,
    ];
    $("#manifest-snippet").textContent = lines.join("\n");
    const steps = inDroplet ? [
      `cf download-droplet ${appId} --path droplet.tgz`,
      "garrison embed droplet.tgz -m manifest.yml \\",
      "  --defender garrison_defender_app_embedded.tar.gz --install-bundle @install_bundle.txt" + ($("#appid").value.trim() ? ` --app-id ${appId}` : ""),
      `cf push ${appId} --droplet droplet.tgz -f manifest.yml`,
      "",
      "# undo: garrison embed --undo droplet.tgz -m manifest.yml",
    ] : [
      "tar -xzf garrison_defender_app_embedded.tar.gz -C path/to/app   # ./defender + ./defender_lib/",
      "garrison embed -m manifest.yml --install-bundle @install_bundle.txt --defender-path ./defender",
      "cf push -f manifest.yml",
      "",
      "# undo: garrison embed --undo -m manifest.yml   (or cf push -c null)",
    ];
    $("#steps-snippet").textContent = steps.join("\n");
  }

  $("#deploy-form").addEventListener("input", render);
  $("#deploy-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    showError($("#deploy-error"), "");
    if ($("#deftype").value === "cell") {
      try {
        const { data } = await api("/hosts/bosh-addon", { method: "POST" });
        addon = data.runtime_config;
        render();
        toast("BOSH add-on generated (its API token is shown only here)");
      } catch (e) { showError($("#deploy-error"), errorText(e.detail ?? e.message)); }
      return;
    }
    const q = new URLSearchParams();
    if ($("#consoleaddr").value.trim()) q.set("consoleaddr", $("#consoleaddr").value.trim());
    try {
      const { data } = await api(`/defenders/install-bundle?${q}`);
      bundle = data.bundle;
      $("#dl-bundle").disabled = false;
      render();
      toast("Install bundle generated");
    } catch (e) {
      showError($("#deploy-error"), errorText(e.detail ?? e.message));
    }
  });
  $("#dl-tarball").addEventListener("click", () => download("/images/garrison_defender_app_embedded.tar.gz", "garrison_defender_app_embedded.tar.gz").catch((e) => toast(e.message, true)));
  $("#dl-bundle").addEventListener("click", () => { if (bundle) saveBlob(new Blob([bundle + "\n"], { type: "text/plain" }), "install_bundle.txt"); });
  render();
}

// ---------------------------------------------------------------------------------------------
// runtime policy editor

const FULL_RANGE = (r) => r.start === 0 && r.end === 65535;
const fmtRange = (r) => (r.start === r.end ? String(r.start) : `${r.start}-${r.end}`);

function fmtTarget(t) {
  if (typeof t === "string") return t;
  if (t.protocol && t.protocol !== "any") return JSON.stringify(t);
  const ports = (t.ports || []).every(FULL_RANGE) ? "" : (t.ports || []).map(fmtRange).join(",");
  const host = t.cidr.includes(":") && ports ? `[${t.cidr}]` : t.cidr;
  return ports ? `${host}:${ports}` : host;
}

function fmtPattern(p) { return typeof p === "string" ? p : JSON.stringify(p); }

function parseLines(text, commas) {
  const parts = commas ? text.split(/[\n,]/) : text.split("\n");
  return parts.map((s) => s.trim()).filter(Boolean);
}

function parseObjLines(text, commas) {
  return parseLines(text, commas).map((s) => { if (s.startsWith("{")) { try { return JSON.parse(s); } catch (_) { /* keep text: the API names it */ } } return s; });
}

function defaultRule(name) {
  return {
    name, disabled: false,
    scope: { orgs: ["*"], spaces: ["*"], apps: ["*"], app_ids: ["*"] },
    processes: { effect: "alert", allow: [], deny: [], drift_prevention: false, fork_bomb_guard: null },
    network: { effect: "alert", outbound: { allow: [], deny: [] }, listening: { allow: [], deny: [] }, port_scan: null, bad_reputation_ips: [] },
    dns: { effect: "alert", allow: [], deny: [] },
  };
}

function initPolicy() {
  let policy = { rules: [], revision: 0 };
  let editing = null; // index being edited, or -1 for a new rule
  const dialog = $("#rule-dialog");
  const form = $("#rule-form");

  function summaryCell(effect, parts) {
    return el("td", {}, pill(effect), el("div", { class: "cell-sub", text: parts.filter(Boolean).join(" · ") || "no lists" }));
  }

  function render() {
    $("#policy-revision").textContent = `Revision ${policy.revision}.`;
    const n = policy.rules.length;
    $("#rules-table tbody").replaceChildren(...policy.rules.map((r, i) => el("tr", { class: r.disabled ? "disabled-rule" : "", dataset: { rule: r.name } },
      el("td", { class: "num", text: String(i + 1) }),
      el("td", {}, el("strong", { text: r.name }), r.disabled ? el("div", {}, pill("disabled", "off")) : null),
      el("td", {}, el("div", { class: "chips" }, ...["orgs", "spaces", "apps", "app_ids"].flatMap((k) =>
        (r.scope[k] || []).filter((g) => g !== "*").map((g) => el("span", { class: "chip", text: `${k.replace("_ids", " id").replace(/s$/, "")}: ${g}` })))),
        (["orgs", "spaces", "apps", "app_ids"].every((k) => (r.scope[k] || []).every((g) => g === "*"))) ? el("span", { class: "muted", text: "all apps" }) : null),
      summaryCell(r.processes.effect, [r.processes.deny.length && `${r.processes.deny.length} denied`, r.processes.allow.length && `${r.processes.allow.length} allowed`, r.processes.drift_prevention && "drift", r.processes.fork_bomb_guard && "fork bomb"]),
      summaryCell(r.network.effect, [r.network.outbound.deny.length && `${r.network.outbound.deny.length} denied`, r.network.outbound.allow.length && `${r.network.outbound.allow.length} allowed`, r.network.port_scan && r.network.port_scan.enabled && "port scan", r.network.bad_reputation_ips.length && "reputation"]),
      summaryCell(r.dns.effect, [r.dns.deny.length && `${r.dns.deny.length} denied`, r.dns.allow.length && `${r.dns.allow.length} allowed`]),
      el("td", { class: "writer-only" }, el("div", { class: "actions" },
        el("button", { class: "btn btn-small btn-icon", type: "button", title: "Move up", "aria-label": `Move ${r.name} up`, disabled: i === 0, onclick: () => move(i, -1), text: "↑" }),
        el("button", { class: "btn btn-small btn-icon", type: "button", title: "Move down", "aria-label": `Move ${r.name} down`, disabled: i === n - 1, onclick: () => move(i, 1), text: "↓" }),
        el("button", { class: "btn btn-small", type: "button", text: "Edit", onclick: () => openEditor(i) }),
        el("button", { class: "btn btn-small btn-danger", type: "button", text: "Delete", onclick: () => remove(i) }))))));
    $("#rules-empty").hidden = n > 0;
    $("#rules-table").hidden = n === 0;
  }

  async function load() {
    const { data } = await api("/policies/runtime/app-embedded");
    policy = data;
    render();
  }

  async function save(rules) {
    showError($("#policy-error"), "");
    const { data } = await api("/policies/runtime/app-embedded", { method: "PUT", body: { rules, revision: policy.revision } });
    policy = data;
    render();
    toast(`Policy saved (revision ${policy.revision})`);
  }

  async function move(i, d) {
    const rules = policy.rules.slice();
    [rules[i], rules[i + d]] = [rules[i + d], rules[i]];
    try { await save(rules); } catch (e) { showError($("#policy-error"), errorText(e.detail ?? e.message)); }
  }

  async function remove(i) {
    if (!confirm(`Delete rule "${policy.rules[i].name}"?`)) return;
    const rules = policy.rules.filter((_, j) => j !== i);
    try { await save(rules); } catch (e) { showError($("#policy-error"), errorText(e.detail ?? e.message)); }
  }

  function field(path) { return form.querySelector(`[data-path="${path}"]`); }

  function clearErrors() {
    $all(".field-error", form).forEach((n) => n.remove());
    $all(".invalid", form).forEach((n) => n.classList.remove("invalid"));
    showError($("#rule-error"), "");
  }

  function fill(r) {
    clearErrors();
    const set = (p, v) => { const f = field(p); if (!f) return; if (f.type === "checkbox") f.checked = !!v; else f.value = v ?? ""; };
    set("name", r.name);
    set("disabled", r.disabled);
    for (const k of ["orgs", "spaces", "apps", "app_ids"]) set(`scope.${k}`, (r.scope[k] || []).join("\n"));
    set("processes.effect", r.processes.effect);
    set("processes.drift_prevention", r.processes.drift_prevention);
    set("processes.allow", r.processes.allow.map(fmtPattern).join("\n"));
    set("processes.deny", r.processes.deny.map(fmtPattern).join("\n"));
    $("#fork-guard").checked = !!r.processes.fork_bomb_guard;
    set("processes.fork_bomb_guard.max_procs", r.processes.fork_bomb_guard?.max_procs ?? 512);
    set("processes.fork_bomb_guard.max_forks_per_s", r.processes.fork_bomb_guard?.max_forks_per_s ?? 200);
    set("network.effect", r.network.effect);
    set("network.outbound.allow", r.network.outbound.allow.map(fmtTarget).join("\n"));
    set("network.outbound.deny", r.network.outbound.deny.map(fmtTarget).join("\n"));
    set("network.listening.allow", r.network.listening.allow.map(fmtRange).join("\n"));
    set("network.bad_reputation_ips", r.network.bad_reputation_ips.join("\n"));
    $("#port-scan").checked = !!(r.network.port_scan && r.network.port_scan.enabled);
    set("network.port_scan.threshold", r.network.port_scan?.threshold ?? 50);
    set("dns.effect", r.dns.effect);
    set("dns.allow", r.dns.allow.join("\n"));
    set("dns.deny", r.dns.deny.join("\n"));
  }

  function collect(base) {
    const r = structuredClone(base);
    const v = (p) => field(p).value;
    const num = (p) => (v(p) === "" ? null : Number(v(p)));
    r.name = v("name").trim();
    r.disabled = field("disabled").checked;
    for (const k of ["orgs", "spaces", "apps", "app_ids"]) r.scope[k] = parseLines(v(`scope.${k}`), true);
    r.processes.effect = v("processes.effect");
    r.processes.drift_prevention = field("processes.drift_prevention").checked;
    r.processes.allow = parseObjLines(v("processes.allow"), false);
    r.processes.deny = parseObjLines(v("processes.deny"), false);
    r.processes.fork_bomb_guard = $("#fork-guard").checked
      ? { max_procs: num("processes.fork_bomb_guard.max_procs"), max_forks_per_s: num("processes.fork_bomb_guard.max_forks_per_s") } : null;
    r.network.effect = v("network.effect");
    r.network.outbound.allow = parseObjLines(v("network.outbound.allow"), false);
    r.network.outbound.deny = parseObjLines(v("network.outbound.deny"), false);
    r.network.listening.allow = parseLines(v("network.listening.allow"), true);
    r.network.bad_reputation_ips = parseLines(v("network.bad_reputation_ips"), true);
    r.network.port_scan = $("#port-scan").checked
      ? { ...(base.network.port_scan || { window_s: 10 }), enabled: true, threshold: num("network.port_scan.threshold") } : null;
    r.dns.effect = v("dns.effect");
    r.dns.allow = parseLines(v("dns.allow"), true);
    r.dns.deny = parseLines(v("dns.deny"), true);
    return r;
  }

  function openEditor(i) {
    editing = i;
    let n = policy.rules.length + 1;
    while (policy.rules.some((r) => r.name === `Rule ${n}`)) n += 1;
    const rule = i >= 0 ? policy.rules[i] : defaultRule(`Rule ${n}`);
    $("#rule-dialog-title").textContent = i >= 0 ? `Edit rule "${rule.name}"` : "Add rule";
    fill(rule);
    dialog.showModal();
    field("name").focus();
  }

  function markErrors(detail, index) {
    const general = [];
    for (const d of Array.isArray(detail) ? detail : [{ loc: [], msg: String(detail) }]) {
      const loc = (d.loc || []).filter((x) => x !== "body");
      if (loc[0] === "rules" && loc[1] !== index && typeof loc[1] === "number") { general.push(`rule ${loc[1] + 1}: ${cleanMsg(d.msg)}`); continue; }
      const rest = loc[0] === "rules" ? loc.slice(2) : loc;
      const names = rest.filter((x) => typeof x === "string" && !x.includes("["));
      let target = null;
      for (let k = names.length; k > 0 && !target; k -= 1) target = field(names.slice(0, k).join("."));
      const item = rest.find((x) => typeof x === "number");
      const msg = (item !== undefined ? `line ${item + 1}: ` : "") + cleanMsg(d.msg);
      if (!target) { general.push(msg); continue; }
      if (!form.querySelector(".invalid")) target.scrollIntoView({ block: "center" });
      target.classList.add("invalid");
      target.closest("label")?.append(el("span", { class: "field-error", text: msg }));
    }
    showError($("#rule-error"), general.join("\n"));
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors();
    const base = editing >= 0 ? policy.rules[editing] : defaultRule("");
    const rule = collect(base);
    if (!rule.name) { markErrors([{ loc: ["name"], msg: "a rule needs a name" }], editing); return; }
    const rules = policy.rules.slice();
    const index = editing >= 0 ? editing : 0; // new rules go first: most specific rules belong on top
    if (editing >= 0) rules[editing] = rule; else rules.unshift(rule);
    try {
      await save(rules);
      dialog.close();
    } catch (e) {
      if (e.status === 422) markErrors(e.detail, index);
      else showError($("#rule-error"), errorText(e.detail ?? e.message));
    }
  });
  $("#rule-cancel").addEventListener("click", () => dialog.close());
  $("#rule-cancel-x").addEventListener("click", () => dialog.close());
  $("#add-rule").addEventListener("click", () => openEditor(-1));
  load().catch((e) => showError($("#policy-error"), e.message));
}

// ---------------------------------------------------------------------------------------------
// audits

// What the two context columns mean for each audit type: [first column, second column].
const AUDIT_COLUMNS = {
  process: ["Process", "Command line"], drift: ["Process", "Command line"], fork_bomb: ["Process", "Command line"],
  kernel: ["Process", "Detail"], network: ["Process", "Destination"], port_scan: ["Process", "Destination"],
  bad_reputation: ["Process", "Destination"], listen: ["Process", "Listening on"], dns: ["Process", "Name queried"],
  cnaf: ["Request", "Client IP"], assurance: ["Subject", "Detail"], defender: ["Subject", "Detail"],
};
const MIXED_COLUMNS = ["Process / request", "Target"];

function hostPort(ip, port) { return ip ? (ip.includes(":") && port != null ? `[${ip}]:${port}` : `${ip}${port != null ? ":" + port : ""}`) : ""; }

// [text, label] of the two context cells; the label names the value when the table mixes types.
function auditContext(e) {
  const x = e.extra || {};
  const proc = e.exe || (e.argv || [])[0] || "";
  if (e.type === "cnaf") return [[x.request_line || "", "request"], [x.client_ip || e.dest_ip || "", "client"]];
  if (e.type === "dns") return [[proc, ""], [e.dest_name || "", "name"]];
  if (e.type === "listen") return [[proc, ""], [hostPort(e.dest_ip, e.dest_port), "listen"]];
  if (["network", "port_scan", "bad_reputation"].includes(e.type)) {
    const dest = [e.dest_name, hostPort(e.dest_ip, e.dest_port)].filter(Boolean).join(" ");
    return [[proc, ""], [dest + (e.protocol && dest ? `/${e.protocol}` : ""), "to"]];
  }
  return [[proc, ""], [(e.argv || []).join(" "), "cmd"]];
}

function auditHeaders(type) {
  const [a, b] = AUDIT_COLUMNS[type] || MIXED_COLUMNS;
  $("#col-a").textContent = a;
  $("#col-b").textContent = b;
}

function auditRow(e, fresh, mixed) {
  const [[a], [b, label]] = auditContext(e);
  const cell = (text, cls, lbl) => el("td", { class: cls, title: text || null }, lbl && mixed && text ? el("span", { class: "cell-label", text: lbl }) : null, text || "–");
  return el("tr", { class: `audit${fresh ? " fresh" : ""}`, tabindex: "0", "aria-expanded": "false", dataset: { id: e.id, type: e.type } },
    el("td", { class: "time", text: fmtTime(e.time), title: new Date(e.time * 1000).toISOString() }),
    el("td", {}, pill(e.effect)),
    el("td", { text: e.type.replace("_", " ") }),
    cell(e.app_name, "app"),
    cell(e.rule ? `${e.rule}${e.control ? " · " + e.control : ""}` : e.control, "rule"),
    cell(a, "mono ctx-a"),
    cell(b, "mono ctx-b", label),
    el("td", { class: "msg", text: e.message || "", title: e.message || null }));
}

function auditDetails(e, span) {
  const x = e.extra || {};
  const fields = [
    ["Time", `${fmtTime(e.time)}  (${new Date(e.time * 1000).toISOString()})`],
    ["Effect / severity", `${e.effect} · ${e.severity || ""}`],
    ["App", [e.app_name, e.app_id && e.app_id !== e.app_name ? `id ${e.app_id}` : ""].filter(Boolean).join(" · ")],
    ["Org / space", [e.org, e.space].filter(Boolean).join(" / ")],
    ["Instance", e.instance ? String(e.instance) : ""],
    ["Defender", e.defender_id],
    ["Rule", e.rule], ["Control", e.control],
    ["Process", [e.exe, e.pid != null ? `pid ${e.pid}` : "", e.ppid != null ? `ppid ${e.ppid}` : ""].filter(Boolean).join(" · ")],
    ["Command line", (e.argv || []).map((a) => (/[\s'"]/.test(a) ? JSON.stringify(a) : a)).join(" ")],
    ["Working directory", e.cwd],
    [e.type === "cnaf" ? "Client" : "Destination", [e.dest_name, hostPort(e.dest_ip, e.dest_port), e.protocol].filter(Boolean).join(" · ")],
    ["Message", e.message],
    ...Object.entries(x).map(([k, v]) => [k.replaceAll("_", " "), typeof v === "string" ? v : JSON.stringify(v, null, 1)]),
    ["Audit id", e.id],
  ].filter(([, v]) => v !== undefined && v !== null && v !== "");
  return el("tr", { class: "audit-details" }, el("td", { colspan: String(span) },
    el("dl", {}, ...fields.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]))));
}

function initAudits() {
  const PAGE = 50;
  let offset = 0;
  let total = 0;
  const shown = new Map(); // id -> audit, rows on this page
  let stopStream = null;
  let streamFrom = null;
  const form = $("#audit-filters");
  const tbody = $("#audits-table tbody");
  const span = $all("#audits-table thead th").length;

  function filters() {
    const q = new URLSearchParams();
    const fd = new FormData(form);
    for (const k of ["app", "type", "effect"]) { const v = String(fd.get(k) || "").trim(); if (v) q.set(k, v); }
    for (const k of ["from", "to"]) { const v = String(fd.get(k) || ""); if (v) q.set(k, String(new Date(v).getTime() / 1000)); }
    return q;
  }

  function toggle(tr) {
    const open = tr.getAttribute("aria-expanded") === "true";
    if (open) tr.nextElementSibling?.classList.contains("audit-details") && tr.nextElementSibling.remove();
    else tr.after(auditDetails(shown.get(tr.dataset.id), span));
    tr.setAttribute("aria-expanded", String(!open));
  }
  tbody.addEventListener("click", (ev) => {
    const tr = ev.target.closest("tr.audit");
    if (tr && !window.getSelection()?.toString()) toggle(tr);
  });
  tbody.addEventListener("keydown", (ev) => {
    const tr = ev.target.closest("tr.audit");
    if (tr && (ev.key === "Enter" || ev.key === " ")) { ev.preventDefault(); toggle(tr); }
  });

  async function load() {
    showError($("#audits-error"), "");
    const q = filters();
    auditHeaders(q.get("type"));
    q.set("limit", String(PAGE));
    q.set("offset", String(offset));
    const { data, headers } = await api(`/audits/runtime/app-embedded?${q}`);
    total = Number(headers.get("Total-Count") || data.length);
    streamFrom = headers.get("Stream-Cursor");
    shown.clear();
    data.forEach((e) => shown.set(e.id, e));
    const mixed = !q.get("type");
    tbody.replaceChildren(...data.map((e) => auditRow(e, false, mixed)));
    renderMeta();
  }

  function renderMeta() {
    const rows = $all("tr.audit", tbody).length;
    $("#audits-empty").hidden = rows > 0;
    $("#audits-count").textContent = total ? `${offset + 1}–${offset + rows} of ${total}` : "";
    $("#prev").disabled = offset === 0;
    $("#next").disabled = offset + PAGE >= total;
  }

  function arrived(e) {
    if (shown.has(e.id)) return;
    total += 1;
    if (offset === 0) {
      shown.set(e.id, e);
      tbody.prepend(auditRow(e, true, !filters().get("type")));
      const rows = $all("tr.audit", tbody);
      for (const tr of rows.slice(PAGE)) {
        if (tr.nextElementSibling?.classList.contains("audit-details")) tr.nextElementSibling.remove();
        shown.delete(tr.dataset.id);
        tr.remove();
      }
    }
    renderMeta();
  }

  function follow() {
    stopStream?.();
    stopStream = null;
    const q = filters();
    if (q.has("to")) return; // a closed time range gets no new audits
    stopStream = liveStream(`/audits/runtime/app-embedded/stream?${q}`, {
      audit: arrived,
      skipped() { load().catch(() => {}); },
      reconnected() { load().catch(() => {}); },
    }, streamFrom);
  }

  // Filters live in the URL too (?app=&type=&effect=), so a filtered view can be linked and reloaded.
  const initial = new URLSearchParams(location.search);
  for (const k of ["app", "type", "effect"]) if (initial.get(k) && form.elements[k]) form.elements[k].value = initial.get(k);
  const reload = () => load().then(follow).catch((e) => showError($("#audits-error"), errorText(e.detail ?? e.message)));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    offset = 0;
    const q = new URLSearchParams();
    for (const k of ["app", "type", "effect"]) if (form.elements[k].value.trim()) q.set(k, form.elements[k].value.trim());
    history.replaceState(null, "", q.toString() ? `?${q}` : location.pathname);
    reload();
  });
  $("#prev").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); load().catch((e) => toast(e.message, true)); });
  $("#next").addEventListener("click", () => { offset += PAGE; load().catch((e) => toast(e.message, true)); });
  $("#csv-export").addEventListener("click", () => download(`/audits/runtime/app-embedded/download?${filters()}`, "runtime-audits.csv").catch((e) => toast(e.message, true)));
  reload();
}

// ---------------------------------------------------------------------------------------------
// incidents

function initIncidents() {
  async function load() {
    const { data } = await api("/incidents?limit=200");
    const view = (i) => `/incidents/view?id=${encodeURIComponent(i.id)}`;
    $("#incidents-table tbody").replaceChildren(...data.map((i) => el("tr", {
      class: "clickable", dataset: { id: i.id },
      onclick: (ev) => { if (!ev.target.closest("a") && !window.getSelection()?.toString()) location.assign(view(i)); },
    },
      el("td", { text: fmtTime(i.end) }),
      el("td", { text: fmtTime(i.start) }),
      el("td", {}, el("a", { href: view(i) }, el("strong", { text: i.app_name || "–" })),
        i.org || i.space ? el("div", { class: "cell-sub", text: [i.org, i.space].filter(Boolean).join(" / ") }) : null),
      el("td", { text: String(i.type || "").replace("_", " ") }),
      el("td", {}, el("div", { class: "chips" }, ...Object.entries(i.effects || {}).map(([k, n]) => pill(`${k} ×${n}`, k)))),
      el("td", { text: String(i.count) }),
      el("td", { class: "msg" }, el("div", { text: i.first_message || "" }), el("div", { class: "cell-sub", text: (i.rules || []).join(", ") })))));
    $("#incidents-empty").hidden = data.length > 0;
    $("#incidents-table").hidden = data.length === 0;
  }
  load().catch((e) => toast(e.message, true));
  poll(load, 5000);
}

// ---------------------------------------------------------------------------------------------
// one cell defender: the app containers it protects (one workload each)

function initCellDefender() {
  const id = new URLSearchParams(location.search).get("id") || "";
  const tbody = $("#workloads-table tbody");
  async function load() {
    const d = (await api(`/defenders/${encodeURIComponent(id)}`)).data;
    $("#cell-name").textContent = d.hostname || d.id;
    $("#cell-id").textContent = d.id;
    $("#cell-state").replaceChildren(d.connected ? pill("connected", "ok") : pill("disconnected", "off"));
    const q = new URLSearchParams({ limit: "5000" });
    if ($("#wl-running").value) q.set("running", $("#wl-running").value);
    const { data } = await api(`/defenders/${encodeURIComponent(id)}/workloads?${q}`);
    const shown = data.filter((w) => !$("#wl-app").value.trim() || w.app_name.includes($("#wl-app").value.trim()));
    $("#cell-count").textContent = String(data.filter((w) => !w.gone_at).length);
    tbody.replaceChildren(...shown.map((w) => el("tr", { dataset: { container: w.container_id } },
      el("td", {}, w.gone_at ? pill("stopped", "off") : pill("running", "ok")),
      el("td", {}, el("strong", { text: w.app_name || "(app not started)" }), el("div", { class: "cell-sub mono", text: w.app_guid || "" })),
      el("td", { text: [w.org, w.space].filter(Boolean).join(" / ") || "–" }),
      el("td", { text: w.app_name ? String(w.instance) : "–" }),
      el("td", { text: w.rule || "(no rule)" }),
      el("td", { text: (w.protections || []).join(", ") || "–" }),
      el("td", { class: "mono", text: (w.listening || []).join(" ") || "–" }),
      el("td", { class: "mono", text: w.container_id }),
      el("td", { text: ago(w.gone_at || w.first_seen), title: fmtTime(w.gone_at || w.first_seen) }))));
    $("#workloads-empty").hidden = shown.length > 0;
  }
  $("#wl-app").addEventListener("input", () => load().catch((e) => toast(e.message, true)));
  $("#wl-running").addEventListener("change", () => load().catch((e) => toast(e.message, true)));
  load().catch((e) => toast(e.message, true));
  poll(load, 2000);
}

// ---------------------------------------------------------------------------------------------

const PAGES = {
  dashboard: initDashboard, defenders: initDefenders, deploy: initDeploy, "cell-defender": initCellDefender,
  policy: initPolicy, audits: initAudits, incidents: initIncidents,
};

document.addEventListener("DOMContentLoaded", async () => {
  const page = document.body.dataset.page;
  if (page === "login") { initLogin(); return; }
  $("#logout")?.addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); location.replace("/login"); });
  document.addEventListener("click", (ev) => { // every code box's Copy button: <button class="copy" data-copy="ID">
    const b = ev.target.closest?.("button.copy[data-copy]");
    if (b) copyText($(`#${b.dataset.copy}`).textContent);
  });
  try {
    const s = await fetchSession();
    if (!s) return;
    applySession(s);
  } catch (e) {
    toast(e.message, true);
    return;
  }
  PAGES[page]?.();
});
