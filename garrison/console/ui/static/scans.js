/* Scan results, one scan report, verdict history and the assurance policy editor: pages on top of
 * /api/v1/scans and /api/v1/policies/assurance. Loaded after app.js, whose helpers (api, el, pill,
 * toast, poll, fmtTime, ...) and PAGES registry it uses. All API text goes through textContent. */
"use strict";

const SEVERITIES = ["critical", "high", "medium", "low", "unknown"];
const SEV_KIND = { critical: "prevent", high: "prevent", medium: "alert", low: "info", unknown: "off" };

function verdictPill(v) { return pill(v || "unknown", v === "pass" ? "ok" : v === "fail" ? "prevent" : "off"); }
function sevPill(s) { return pill(s || "unknown", SEV_KIND[s] || "off"); }
function shortDigest(d) { return String(d || "").replace(/^sha256:/, "").slice(0, 12); }

function appLabel(r) {
  const parts = [r.org, r.space, r.app_name].filter(Boolean);
  return parts.length ? parts.join("/") : "";
}

function appCell(r) {
  const label = appLabel(r);
  return el("td", {},
    el("strong", { text: label || "(app unknown)" }),
    el("div", { class: "cell-sub mono", text: r.app_guid || r.blob || "" }));
}

function dropletCell(r) {
  return el("td", {},
    el("a", { class: "mono", href: `/scans/view?id=${r.id}`, title: r.digest, text: shortDigest(r.digest) }),
    el("div", { class: "cell-sub", text: r.source || "" }));
}

function sevChips(bySev) {
  const chips = SEVERITIES.filter((s) => (bySev || {})[s]).map((s) => pill(`${s} ${bySev[s]}`, SEV_KIND[s]));
  return el("div", { class: "chips" }, ...(chips.length ? chips : [el("span", { class: "muted", text: "none" })]));
}

function dbCell(r) { return el("td", { class: "mono small", text: r.db_revision || "no database" }); }

// ---------------------------------------------------------------------------------------------
// scan results: the newest report per (app, droplet)

function initScans() {
  const tbody = $("#scans-table tbody");
  const filter = $("#scan-filter");
  const verdict = $("#scan-verdict");
  let rows = [];

  function render() {
    const q = filter.value.trim().toLowerCase();
    const want = verdict.value;
    const shown = rows.filter((r) => (!want || r.verdict === want)
      && (!q || [appLabel(r), r.app_guid, r.digest, r.blob].some((x) => String(x || "").toLowerCase().includes(q))));
    tbody.replaceChildren(...shown.map((r) => el("tr", { class: `scan-row verdict-${r.verdict}`, dataset: { id: String(r.id) } },
      appCell(r),
      dropletCell(r),
      el("td", {}, verdictPill(r.verdict)),
      el("td", {}, sevChips((r.summary || {}).by_severity)),
      el("td", { class: "num", text: String((r.summary || {}).secrets ?? 0) }),
      el("td", { class: "num", text: String((r.summary || {}).malware ?? 0) }),
      dbCell(r),
      el("td", { text: fmtTime(r.created_at) }))));
    $("#scans-empty").hidden = shown.length > 0;
    $("#scans-table").hidden = shown.length === 0;
  }

  async function load() {
    rows = (await api("/scans/latest?limit=1000")).data;
    render();
  }
  filter.addEventListener("input", render);
  verdict.addEventListener("change", render);
  load().catch((e) => toast(e.message, true));
  poll(load, 5000);
}

// ---------------------------------------------------------------------------------------------
// one report

function fillTable(name, items, row) {
  $(`#${name}-table tbody`).replaceChildren(...items.map(row));
  $(`#${name}-table`).hidden = items.length === 0;
  const empty = $(`#${name}-empty`);
  if (empty) empty.hidden = items.length > 0;
  const count = $(`#${name}-count`);
  if (count) count.textContent = `(${items.length})`;
}

function fact(dt, dd, mono) {
  return [el("dt", { text: dt }), el("dd", { class: mono ? "mono" : "", text: dd || "–" })];
}

async function initScan() {
  const id = Number(new URLSearchParams(location.search).get("id"));
  if (!Number.isInteger(id) || id < 1) { showError($("#scan-error"), "no scan id in the address (?id=N)"); return; }
  let row;
  try {
    row = (await api(`/scans/${id}`)).data;
  } catch (e) {
    showError($("#scan-error"), e.status === 404 ? `there is no scan report #${id}` : e.message);
    return;
  }
  const body = row.body || {};
  const app = body.app || {};
  const label = appLabel(row);
  document.title = `${label || "Scan"} · Garrison`;
  $("#scan-app").textContent = label || "Droplet (app unknown)";
  $("#scan-verdict").replaceChildren(verdictPill(row.verdict));
  $("#scan-facts").replaceChildren(
    ...fact("App guid", row.app_guid || app.guid, true),
    ...fact("Droplet (content digest)", row.digest, true),
    ...fact("Source", row.source || "report"),
    ...fact("Blob", row.blob, true),
    ...fact("Tarball sha256", body.archive_sha256, true),
    ...fact("Assurance policy", body.policy),
    ...fact("Vulnerability database", row.db_revision || "none used", true),
    ...fact("Scanned", fmtTime(row.created_at)),
    ...fact("Scanner", body.scanner_version));
  $("#scan-reasons").replaceChildren(...(body.reasons || []).map((r) => el("li", { text: r })));
  $("#scan-warnings").replaceChildren(...(body.warnings || []).map((r) => el("li", { text: r })));

  const vulns = [...(body.vulnerabilities || [])].sort((a, b) => SEVERITIES.indexOf(a.severity) - SEVERITIES.indexOf(b.severity));
  const waivedIds = new Set((body.waived || []).map((w) => `${w.id}\0${w.package}\0${w.version}`));
  fillTable("vulns", vulns, (v) => el("tr", {},
    el("td", {}, sevPill(v.severity), waivedIds.has(`${v.id}\0${v.package}\0${v.version}`) ? pill("waived", "off") : null,
      v.cvss_score != null ? el("div", { class: "cell-sub", text: `CVSS ${v.cvss_score}` }) : null),
    el("td", {}, el("strong", { class: "mono", text: v.id }), el("div", { class: "cell-sub", text: [...(v.aliases || [])].join(", ") }),
      v.summary ? el("div", { class: "cell-sub", text: v.summary }) : null),
    el("td", {}, el("span", { text: v.package }), el("div", { class: "cell-sub", text: v.ecosystem })),
    el("td", { class: "mono", text: v.version }),
    el("td", { class: "mono fixed", text: (v.fixed_versions || []).join(", ") || "no fix" }),
    el("td", { class: "cell-sub mono", text: (v.locations || []).slice(0, 3).join("\n") })));
  const bySev = {};
  for (const v of vulns) bySev[v.severity] = (bySev[v.severity] || 0) + 1;
  $("#vulns-sev").replaceChildren(sevChips(bySev));
  fillTable("waived", body.waived || [], (w) => el("tr", {},
    el("td", {}, sevPill(w.severity)),
    el("td", { class: "mono", text: w.id }),
    el("td", { text: `${w.package} ${w.version}` }),
    el("td", { text: w.rule === "package" ? "package exception" : "vulnerability exception" }),
    el("td", { text: w.reason }),
    el("td", { text: w.expires || "never" })));
  fillTable("secrets", body.secrets || [], (s) => el("tr", {},
    el("td", { text: s.kind }), el("td", { class: "mono", text: `${s.path}:${s.line}` }), el("td", { class: "mono small", text: s.fingerprint })));
  fillTable("malware", body.malware || [], (m) => el("tr", {},
    el("td", { class: "mono", text: m.path }), el("td", { text: m.rule }), el("td", { class: "mono small", text: shortDigest(m.sha256) })));
  const notices = body.notices || [];
  $("#notices-card").hidden = notices.length === 0;
  $("#notices-table tbody").replaceChildren(...notices.map((n) => el("tr", {}, el("td", { class: "mono", text: n.path }), el("td", { text: n.message }))));

  // what the defender's run-time gate answers for this droplet and app right now
  try {
    const q = new URLSearchParams({ digest: row.digest, app_guid: row.app_guid || "" });
    const gate = (await api(`/scans/verdict?${q}`)).data;
    const box = $("#scan-gate");
    const blocks = gate.verdict === "fail" && gate.effect === "prevent";
    box.replaceChildren(el("span", {},
      el("strong", { text: "Run-time gate: " }), verdictPill(gate.verdict), " ",
      blocks ? "a start of this droplet is refused" : `a start is allowed (effect ${gate.effect})`,
      gate.scan_id && gate.scan_id !== row.id ? el("span", {}, " — decided by ", el("a", { href: `/scans/view?id=${gate.scan_id}`, text: `report #${gate.scan_id}` }), ` (${gate.db_revision || "no database"})`) : null));
    box.hidden = false;
  } catch (e) { /* the report is still shown */ }

  const hq = row.app_guid ? `app_guid=${encodeURIComponent(row.app_guid)}` : `digest=${encodeURIComponent(row.digest)}`;
  $("#history-link").href = row.app_guid ? `/scans/history?app_guid=${encodeURIComponent(row.app_guid)}` : "/scans/history";
  const history = (await api(`/scans?${hq}&limit=50`)).data;
  $("#app-history-table tbody").replaceChildren(...history.map((h) => el("tr", { class: h.id === row.id ? "current" : "" },
    el("td", {}, el("a", { href: `/scans/view?id=${h.id}`, text: fmtTime(h.created_at) })),
    el("td", { class: "mono", title: h.digest, text: shortDigest(h.digest) }),
    el("td", { text: h.source || "report" }),
    el("td", {}, verdictPill(h.verdict)),
    dbCell(h))));
}

// ---------------------------------------------------------------------------------------------
// verdict history

function initScanHistory() {
  const params = new URLSearchParams(location.search);
  const app = $("#history-app");
  const verdict = $("#history-verdict");
  app.value = params.get("app_guid") || "";
  verdict.value = params.get("verdict") || "";

  async function load() {
    const q = new URLSearchParams({ limit: "500" });
    if (app.value.trim()) q.set("app_guid", app.value.trim());
    if (verdict.value) q.set("verdict", verdict.value);
    const rows = (await api(`/scans?${q}`)).data;
    $("#history-table tbody").replaceChildren(...rows.map((r) => el("tr", { class: "history-row" },
      el("td", {}, el("a", { href: `/scans/view?id=${r.id}`, text: fmtTime(r.created_at) })),
      appCell(r),
      el("td", { class: "mono", title: r.digest, text: shortDigest(r.digest) }),
      el("td", { text: r.source || "report" }),
      el("td", {}, verdictPill(r.verdict)),
      dbCell(r),
      el("td", {}, sevChips((r.summary || {}).by_severity)))));
    $("#history-empty").hidden = rows.length > 0;
    $("#history-table").hidden = rows.length === 0;
  }
  const reload = () => {
    const q = new URLSearchParams();
    if (app.value.trim()) q.set("app_guid", app.value.trim());
    if (verdict.value) q.set("verdict", verdict.value);
    history.replaceState(null, "", `/scans/history${q.toString() ? "?" + q : ""}`);
    load().catch((e) => toast(e.message, true));
  };
  app.addEventListener("change", reload);
  verdict.addEventListener("change", reload);
  load().catch((e) => toast(e.message, true));
  poll(load, 5000);
}

// ---------------------------------------------------------------------------------------------
// assurance policy editor

function excRow(kind, e = {}) {
  const input = (cls, value, attrs = {}) => el("input", { class: cls, value: value ?? "", ...attrs });
  const cells = kind === "vexc"
    ? [input("x-id", e.id, { placeholder: "CVE-2024-1234 / GHSA-…", maxlength: "200" }),
       input("x-packages", (e.packages || []).join(", "), { placeholder: "any package" })]
    : [input("x-name", e.name, { placeholder: "django*", maxlength: "200" }),
       input("x-ecosystem", e.ecosystem, { placeholder: "any", maxlength: "64" }),
       input("x-version", e.version, { placeholder: "any", maxlength: "100" })];
  const tr = el("tr", { class: "exc-row" },
    ...cells.map((c) => el("td", {}, c)),
    el("td", {}, input("x-reason", e.reason, { placeholder: "why this is accepted", maxlength: "500" })),
    el("td", {}, input("x-expires", e.expires, { type: "date" })),
    el("td", { class: "writer-only" }, el("button", { class: "btn btn-small btn-ghost", type: "button", text: "Remove", onclick: () => tr.remove() })));
  return tr;
}

function readExceptions(kind) {
  return $all(`#${kind}-table tbody tr`).map((tr) => {
    const v = (cls) => $(`.${cls}`, tr).value.trim();
    const base = { reason: v("x-reason"), expires: v("x-expires") || null };
    if (kind === "vexc") {
      return { id: v("x-id"), packages: v("x-packages").split(/[,\s]+/).filter(Boolean), ...base };
    }
    return { name: v("x-name"), ecosystem: v("x-ecosystem") || null, version: v("x-version") || null, ...base };
  });
}

function initAssurance() {
  const form = $("#assurance-form");
  const errBox = $("#assurance-error");
  let loaded = {};

  function fill(p) {
    loaded = p;
    $("#a-name").value = p.name ?? "";
    $("#a-enabled").checked = p.enabled !== false;
    $("#a-effect").value = p.runtime_effect || "alert";
    $("#a-unknown").value = p.unknown_severity || "fail";
    for (const s of SEVERITIES) {
      const v = (p.thresholds || {})[s];
      $(`#a-th-${s}`).value = v === null || v === undefined ? "" : String(v);
    }
    $("#a-secrets").checked = !!p.block_secrets;
    $("#a-malware").checked = !!p.block_malware;
    $("#a-dbage").value = p.max_db_age_days === null || p.max_db_age_days === undefined ? "" : String(p.max_db_age_days);
    $("#vexc-table tbody").replaceChildren(...(p.vulnerability_exceptions || []).map((e) => excRow("vexc", e)));
    $("#pexc-table tbody").replaceChildren(...(p.package_exceptions || []).map((e) => excRow("pexc", e)));
    $("#assurance-revision").textContent = p.revision ? `Revision ${p.revision}.` : "Default policy (never saved).";
    const readOnly = document.body.dataset.canWrite !== "true";
    $all("input, select", form).forEach((n) => { n.disabled = readOnly; });
  }

  function numOrNull(id) {
    const raw = $(id).value.trim();
    return raw === "" ? null : Number(raw);
  }

  function collect() {
    const { revision, ...rest } = loaded;  // settings this form does not know are kept as they are
    const thresholds = { ...(rest.thresholds || {}) };
    for (const s of SEVERITIES) thresholds[s] = numOrNull(`#a-th-${s}`);
    return {
      ...rest,
      name: $("#a-name").value.trim(),
      enabled: $("#a-enabled").checked,
      runtime_effect: $("#a-effect").value,
      unknown_severity: $("#a-unknown").value,
      thresholds,
      block_secrets: $("#a-secrets").checked,
      block_malware: $("#a-malware").checked,
      max_db_age_days: numOrNull("#a-dbage"),
      vulnerability_exceptions: readExceptions("vexc"),
      package_exceptions: readExceptions("pexc"),
    };
  }

  function markErrors(detail) {
    $all(".field-error", form).forEach((n) => n.remove());
    $all(".invalid", form).forEach((n) => n.classList.remove("invalid"));
    const general = [];
    for (const d of Array.isArray(detail) ? detail : [{ loc: [], msg: String(detail) }]) {
      const loc = (d.loc || []).filter((x) => x !== "body");
      let target = loc.length ? form.querySelector(`[data-path="${loc.join(".")}"]`) : null;
      if (!target && (loc[0] === "vulnerability_exceptions" || loc[0] === "package_exceptions") && Number.isInteger(loc[1])) {
        const tr = $all(`#${loc[0] === "vulnerability_exceptions" ? "vexc" : "pexc"}-table tbody tr`)[loc[1]];
        target = tr ? ($(`.x-${loc[2] || "reason"}`, tr) || tr) : null;
      }
      if (target) {
        target.classList.add("invalid");
        (target.closest("label") || target.closest("td") || target).append(el("span", { class: "field-error", text: cleanMsg(d.msg) }));
      }
      general.push(`${loc.join(".") || "policy"}: ${cleanMsg(d.msg)}`);
    }
    showError(errBox, general.join("\n"));
  }

  $("#add-vexc").addEventListener("click", () => $("#vexc-table tbody").append(excRow("vexc")));
  $("#add-pexc").addEventListener("click", () => $("#pexc-table tbody").append(excRow("pexc")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    markErrors([]);
    errBox.hidden = true;
    try {
      const { data } = await api("/policies/assurance", { method: "PUT", body: collect() });
      fill(data);
      toast(`Assurance policy saved (revision ${data.revision}); droplets are re-judged at the next rescan`);
    } catch (e) {
      if (e.status === 422) markErrors(e.detail);
      else showError(errBox, e.message);
    }
  });
  api("/policies/assurance").then(({ data }) => fill(data)).catch((e) => toast(e.message, true));
}

PAGES.scans = initScans;
PAGES.scan = initScan;
PAGES["scan-history"] = initScanHistory;
PAGES.assurance = initAssurance;
