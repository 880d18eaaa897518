/* Hosts (Diego cells): posture list and one cell's page, on top of /api/v1/hosts.
 * Loaded after app.js, whose helpers (api, el, pill, toast, fmtTime, ago, poll, download) it uses. */
"use strict";

const VERDICT_KIND = { pass: "ok", fail: "prevent", unknown: "off" };

function verdictPill(v) { return pill(v || "unknown", VERDICT_KIND[v || "unknown"]); }

function vulnCount(scan) {
  if (!scan) return "–";
  const s = scan.by_severity || {};
  const crit = (s.critical || 0) + (s.high || 0);
  return crit ? `${scan.vulnerabilities} (${crit} high+)` : String(scan.vulnerabilities);
}

function initHosts() {
  const tbody = $("#hosts-table tbody");
  const query = () => {
    const q = new URLSearchParams();
    if ($("#host-q").value.trim()) q.set("q", $("#host-q").value.trim());
    if ($("#host-verdict").value) q.set("verdict", $("#host-verdict").value);
    return q.toString();
  };
  async function load() {
    const { data } = await api(`/hosts?${query()}`);
    tbody.replaceChildren(...data.map((h) => {
      const p = h.posture || {};
      const cis = p.cis || {};
      const c = p.counters || {};
      const link = el("a", { href: `/hosts/${encodeURIComponent(h.name)}`, text: h.name });
      return el("tr", { dataset: { host: h.name } },
        el("td", {}, el("strong", {}, link)),
        el("td", {}, verdictPill(p.verdict)),
        el("td", { text: cis.applicable ? String(cis.score) : (cis.profile ? "n/a" : "–"), title: cis.reason || "" }),
        el("td", { text: cis.failed ? String(cis.failed.length) : "–" }),
        el("td", { text: vulnCount(p.scan) }),
        el("td", { text: p.scan ? String(p.scan.malware) : "–" }),
        el("td", { text: String(c.fim_changes || 0) }),
        el("td", { text: String(c.login_failures || 0) }),
        el("td", { text: p.last_login ? `${p.last_login.user} · ${ago(p.last_login.time)}` : "–" }),
        el("td", { text: ago(h.last_seen) }));
    }));
    $("#hosts-empty").hidden = data.length > 0;
    $("#hosts-table").hidden = data.length === 0;
    const scores = data.map((h) => h.posture?.cis).filter((c) => c && c.applicable).map((c) => c.score);
    $("#stat-hosts").textContent = data.length;
    $("#stat-failing").textContent = data.filter((h) => h.posture?.verdict === "fail").length;
    $("#stat-lowest").textContent = scores.length ? Math.min(...scores) : "–";
    $("#stat-fim").textContent = data.reduce((n, h) => n + (h.posture?.counters?.fim_changes || 0), 0);
  }
  $("#host-q").addEventListener("input", () => load().catch((e) => toast(e.message, true)));
  $("#host-verdict").addEventListener("change", () => load().catch((e) => toast(e.message, true)));
  $("#hosts-csv").addEventListener("click", () => download(`/hosts/export.csv?${query()}`, "hosts.csv"));
  load().catch((e) => toast(e.message, true));
  poll(load, 5000);
}

function drawTrend(box, trend) {
  const pts = trend.filter((t) => t.applicable && t.score != null);
  if (pts.length < 2) { box.replaceChildren(el("div", { class: "muted small", text: pts.length ? "One run so far." : "" })); return; }
  const W = 600, H = 120, pad = 8;
  const x = (i) => pad + (i * (W - 2 * pad)) / (pts.length - 1);
  const y = (s) => H - pad - (s / 100) * (H - 2 * pad);
  const line = svg("polyline", { points: pts.map((t, i) => `${x(i)},${y(t.score)}`).join(" "), fill: "none", stroke: "#3b6fd6", "stroke-width": 2 });
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img" });
  root.append(line);
  for (const [i, t] of pts.entries()) {
    const dot = svg("circle", { cx: x(i), cy: y(t.score), r: 3, fill: "#3b6fd6" });
    dot.append(svg("title", {}));
    dot.firstChild.textContent = `${fmtTime(t.time)}: ${t.score}`;
    root.append(dot);
  }
  box.replaceChildren(root);
}

function initHost() {
  const name = decodeURIComponent(location.pathname.split("/").pop());
  document.querySelector(".topbar h1").textContent = `Cell ${name}`;
  async function load() {
    const { data: h } = await api(`/hosts/${encodeURIComponent(name)}`);
    const p = h.posture || {};
    const cis = p.cis || {};
    $("#h-verdict").replaceChildren(verdictPill(p.verdict));
    $("#h-score").textContent = cis.applicable ? cis.score : "n/a";
    $("#h-vulns").textContent = vulnCount(p.scan);
    $("#h-fim").textContent = (p.counters || {}).fim_changes || 0;
    $("#h-reasons-card").hidden = !(p.reasons || []).length;
    $("#h-reasons").replaceChildren(...(p.reasons || []).map((r) => el("li", { text: r })));
    $("#h-cis-meta").textContent = cis.profile ? `${cis.profile} · ${fmtTime(cis.time)}` : "";
    $("#h-cis-note").textContent = cis.profile ? (cis.applicable ? "" : cis.reason) : "No CIS run reported yet.";
    drawTrend($("#h-trend"), h.cis_trend || []);
    const events = h.events || [];
    $("#h-access tbody").replaceChildren(...events.filter((e) => e.type === "access").slice(0, 30).map((e) =>
      el("tr", {}, el("td", { text: fmtTime(e.time) }), el("td", { text: e.action.replace(/_/g, " ") }),
        el("td", { text: e.user || "–" }), el("td", { text: e.source || "–" }))));
    $("#h-events tbody").replaceChildren(...events.filter((e) => e.type !== "access").map((e) =>
      el("tr", {}, el("td", { text: fmtTime(e.time) }), el("td", {}, pill(e.severity, e.severity === "high" || e.severity === "critical" ? "prevent" : "alert")),
        el("td", { text: `${e.type} · ${e.action}` }), el("td", { class: "mono", text: e.path || e.message }),
        el("td", { text: e.pid ? `${e.process || "?"} (pid ${e.pid}, ${e.user || "?"})` : "–" }))));
    if (cis.profile && cis.applicable) {
      try {
        const { data: full } = await api(`/hosts/${encodeURIComponent(name)}/cis/latest`);
        const failed = (full.rules || []).filter((r) => r.result === "fail");
        $("#h-rules tbody").replaceChildren(...failed.map((r) => {
          const row = el("tr", { class: "clickable", title: "Show the remediation" },
            el("td", {}, pill(r.severity, r.severity === "high" ? "prevent" : "alert")),
            el("td", { class: "mono", text: r.id.replace("xccdf_org.ssgproject.content_rule_", "") }),
            el("td", { text: r.title }));
          row.addEventListener("click", () => {
            const next = row.nextElementSibling;
            if (next && next.classList.contains("detail")) { next.remove(); return; }
            row.after(el("tr", { class: "detail" }, el("td", { colspan: 3 }, el("pre", { class: "code", text: r.remediation || "No remediation text in the content." }))));
          });
          return row;
        }));
      } catch (e) { toast(e.message, true); }
    }
  }
  load().catch((e) => toast(e.message, true));
  poll(load, 10000);
}

PAGES.hosts = initHosts;
PAGES.host = initHost;
