/* Learning: the profiles list (start learning for an app) and one profile's review page — what was
 * seen, the proposed rule with its diff against the current one, accept (alert) and enforce
 * (prevent). On top of /api/v1/profiles. Loaded after app.js, whose helpers it uses. */
"use strict";

const STATE_KIND = { learning: "info", accepted: "alert", enforcing: "ok" };

function statePill(s) { return pill(s || "learning", STATE_KIND[s] || "off"); }

function appPath(p) { return [p.org, p.space, p.app].filter(Boolean).join(" / "); }

function seenCounts(c) {
  c = c || {};
  return [["process", "programs"], ["destination", "destinations"], ["dns", "names"], ["listen", "ports"]]
    .map(([k, noun]) => `${c[k] || 0} ${noun}`).join(" · ");
}

const AUTO_ACCEPT = { off: "off (I review)", window: "when the window ends", stable: "when stable" };

/** A profile's auto-accept in the list: writers change it there while it learns (PUT .../auto-accept,
 * audited); auditors read it; once accepted it says whether the console accepted it by itself. */
function autoAcceptCell(p, changed) {
  if (p.state !== "learning") {
    return el("td", { class: "small muted", text: p.accepted_by === "system" ? "auto-accepted" : "—" });
  }
  const value = p.auto_accept || "off";
  const select = el("select", { class: "auto-accept writer-only", "aria-label": `Auto-accept of ${appPath(p)}` },
    ...Object.entries(AUTO_ACCEPT).map(([v, label]) => el("option", { value: v, text: label, selected: v === value })));
  select.addEventListener("change", () => changed(p, select));
  return el("td", {}, select, el("span", { class: "auditor-only small", text: AUTO_ACCEPT[value] || value }));
}

function initLearning() {
  const tbody = $("#profiles-table tbody");
  let rows = [];
  function draw() {
    const q = $("#prof-q").value.trim().toLowerCase();
    const shown = rows.filter((p) => !q || appPath(p).toLowerCase().includes(q));
    tbody.replaceChildren(...shown.map((p) => {
      const link = el("a", { href: `/learning/review?id=${encodeURIComponent(p.id)}` }, el("strong", { text: p.app }));
      return el("tr", { dataset: { id: String(p.id), app: p.app } },
        el("td", {}, link, el("div", { class: "cell-sub", text: [p.org, p.space].filter(Boolean).join(" / ") })),
        el("td", {}, statePill(p.state)),
        el("td", { text: fmtTime(p.learning_since) }),
        el("td", { text: ago(p.last_new_at) }),
        el("td", { text: String(p.instances ?? 0) }),
        el("td", { class: "small", text: seenCounts(p.counts) }),
        el("td", {}, p.ready ? pill("ready", "ok") : pill(p.window_elapsed ? "not stable yet" : "learning", "off")),
        autoAcceptCell(p, setAutoAccept),
        el("td", {}, el("a", { class: "btn btn-small", href: `/learning/review?id=${encodeURIComponent(p.id)}`, text: p.state === "learning" ? "Review" : "Open" })));
    }));
    $("#profiles-empty").hidden = shown.length > 0;
    $("#profiles-table").hidden = shown.length === 0;
  }
  async function setAutoAccept(p, select) {
    select.disabled = true;
    try {
      const { data } = await api(`/profiles/${encodeURIComponent(p.id)}/auto-accept`, { method: "PUT", body: { auto_accept: select.value } });
      toast(`${appPath(p)}: auto-accept ${AUTO_ACCEPT[data.auto_accept] || data.auto_accept}`);
    } catch (e) {
      toast(errorText(e.detail ?? e.message), true);
    }
    await load().catch((e) => toast(e.message, true));
  }
  async function load() {
    const q = new URLSearchParams({ limit: "1000" });
    if ($("#prof-state").value) q.set("state", $("#prof-state").value);
    rows = (await api(`/profiles?${q}`)).data;
    draw();
  }
  $("#prof-q").addEventListener("input", draw);
  $("#prof-state").addEventListener("change", () => load().catch((e) => toast(e.message, true)));
  const form = $("#learn-form");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    showError($("#learn-error"), "");
    const fd = new FormData(form);
    const body = { org: String(fd.get("org")).trim(), space: String(fd.get("space")).trim(), app: String(fd.get("app")).trim() };
    for (const k of ["window_hours", "stable_hours"]) if (String(fd.get(k)).trim() !== "") body[k] = Number(fd.get(k));
    body.auto_accept = String(fd.get("auto_accept") || "off");
    try {
      const { data } = await api("/profiles", { method: "POST", body });
      toast(`Learning ${appPath(data.profile || body)}`);
      form.reset();
      await load();
    } catch (e) {
      showError($("#learn-error"), errorText(e.detail ?? e.message));
    }
  });
  load().catch((e) => toast(e.message, true));
  poll(load, 5000);
}

// ---------------------------------------------------------------------------------------------
// review → accept → enforce

function diffRow(d) {
  const change = el("div", { class: "diff" });
  if (Array.isArray(d.added) || Array.isArray(d.removed)) {
    for (const v of d.added || []) change.append(el("div", { class: "add", text: `+ ${fmtEntry(v)}` }));
    for (const v of d.removed || []) change.append(el("div", { class: "del", text: `− ${fmtEntry(v)}` }));
  } else {
    change.append(el("div", { class: "del", text: `− ${fmtValue(d.from)}` }), el("div", { class: "add", text: `+ ${fmtValue(d.to)}` }));
  }
  return el("tr", { dataset: { path: d.path } }, el("td", { class: "mono", text: d.path }), el("td", {}, change));
}

/** A list entry of the diff: targets and port ranges come as JSON text; show them as an operator
 * writes them (10.0.0.2/32 8080/tcp, 8080-8090). */
function fmtEntry(v) {
  if (typeof v !== "string" || !v.startsWith("{")) return fmtValue(v);
  let o;
  try { o = JSON.parse(v); } catch (_) { return v; }
  if (o && typeof o.cidr === "string") {
    const ports = (o.ports || []).every(FULL_RANGE) ? "any port" : (o.ports || []).map(fmtRange).join(",");
    return `${o.cidr} ${ports}${o.protocol && o.protocol !== "any" ? "/" + o.protocol : ""}`;
  }
  if (o && Number.isInteger(o.start) && Number.isInteger(o.end)) return fmtRange(o);
  return v;
}

function fmtValue(v) { return v === null || v === undefined ? "(none)" : typeof v === "string" ? v : JSON.stringify(v); }

function newPill(it) { return it.new_since_accept ? pill("new since accept", "info") : null; }

function seenCell(it) { return el("td", { class: "small", text: `${it.count}× · ${it.instances} instance${it.instances === 1 ? "" : "s"}` }); }

function initLearningReview() {
  const id = new URLSearchParams(location.search).get("id") || "";
  let proposal = null;
  let profile = null;

  function drawProfile(p) {
    profile = p;
    $("#review-title").textContent = appPath(p);
    const q = new URLSearchParams({ org: p.org, space: p.space, app: p.app });
    $("#review-map").href = `/discovery?${q}`;
    $("#review-state").replaceChildren(...[statePill(p.state), p.ready ? pill("ready to propose", "ok") : null].filter(Boolean));
    const facts = [
      ["Learning since", fmtTime(p.learning_since)], ["Last new item", p.last_new_at ? `${fmtTime(p.last_new_at)} (${ago(p.last_new_at)})` : "–"],
      ["Last report", ago(p.last_report_at)],
      ["Window", `${p.window_hours} h${p.window_elapsed ? " (elapsed)" : ""} · stable after ${p.stable_hours} h without anything new${p.stable ? " (stable)" : ""}`],
      ["Instances", String(p.instances ?? 0)], ["Seen", seenCounts(p.counts)],
      ["Addresses", (p.addresses || []).join(", ")], ["Routes", (p.routes || []).join(", ")],
      ["Accepted", p.accepted_at ? `${fmtTime(p.accepted_at)} by ${p.accepted_by || "?"}${p.accepted_by === "system" ? " (auto-accept)" : ""} (policy revision ${p.accepted_revision})` : ""],
    ].filter(([, v]) => v);
    $("#review-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
    const order = ["learning", "accepted", "enforcing"];
    for (const s of $all("#review-steps .step")) {
      s.classList.toggle("done", order.indexOf(s.dataset.step) < order.indexOf(p.state));
      s.classList.toggle("current", s.dataset.step === p.state);
    }
    const fill = (sel, items, row) => {
      $(`${sel} tbody`).replaceChildren(...items.map(row));
      $(`#n-${sel.slice(1).replace("-table", "")}`).textContent = `(${items.length})`;
    };
    fill("#destinations-table", p.destinations || [], (d) => {
      const s = d.service || {};
      const addr = `${d.ip.includes(":") ? `[${d.ip}]` : d.ip}:${d.port}/${d.protocol || "tcp"}`;
      return el("tr", { class: d.new_since_accept ? "new" : "" },
        el("td", {}, el("strong", { text: s.label || d.ip }), el("div", { class: "cell-sub", text: [s.kind, s.via, s.scope].filter(Boolean).join(" · ") }), newPill(d)),
        el("td", { class: "mono", text: addr + ((d.names || []).length ? `  (${d.names.join(", ")})` : "") }),
        seenCell(d), el("td", { text: ago(d.last_seen) }));
    });
    fill("#processes-table", p.processes || [], (x) => el("tr", { class: x.new_since_accept ? "new" : "" },
      el("td", { class: "mono" }, x.exe, newPill(x)), el("td", { class: "mono", text: (x.argv_shape || []).join(" ") }),
      el("td", { class: "mono", text: x.parent || "" }), seenCell(x)));
    fill("#dns-table", p.dns || [], (x) => el("tr", { class: x.new_since_accept ? "new" : "" },
      el("td", { class: "mono" }, x.name, newPill(x)), seenCell(x), el("td", { text: ago(x.last_seen) })));
    fill("#listening-table", p.listening || [], (x) => el("tr", { class: x.new_since_accept ? "new" : "" },
      el("td", { class: "mono" }, `${x.port}/${x.protocol || "tcp"}`, newPill(x)), seenCell(x), el("td", { text: ago(x.last_seen) })));
    $("#enforce").disabled = p.state !== "accepted";
    $("#auto-accept").value = p.auto_accept || "off";
    $("#auto-accept").disabled = p.state !== "learning";
    $("#accept").textContent = p.state === "learning" ? "Accept in alert mode" : "Accept again (alert mode)";
  }

  function drawProposal(pr) {
    proposal = pr;
    $("#proposal-rev").textContent = `· against policy revision ${pr.policy_revision}`;
    $("#diff-table tbody").replaceChildren(...(pr.diff || []).map(diffRow));
    $("#diff-empty").hidden = (pr.diff || []).length > 0;
    $("#diff-table").hidden = (pr.diff || []).length === 0;
    $("#rule-proposed").textContent = JSON.stringify(pr.rule, null, 2);
    $("#rule-current").textContent = pr.current ? JSON.stringify(pr.current, null, 2) : "(no rule applies to this app now)";
  }

  async function load() {
    const [{ data: p }, pr] = await Promise.all([
      api(`/profiles/${encodeURIComponent(id)}`),
      api(`/profiles/${encodeURIComponent(id)}/proposal`).then((r) => r.data, (e) => e),
    ]);
    drawProfile(p);
    if (pr instanceof Error) { showError($("#proposal-error"), errorText(pr.detail ?? pr.message)); $("#accept").disabled = true; }
    else { showError($("#proposal-error"), ""); $("#accept").disabled = false; drawProposal(pr); }
  }

  async function act(path, body, done) {
    showError($("#proposal-error"), "");
    for (const b of [$("#accept"), $("#enforce")]) b.disabled = true;
    try {
      const { data } = await api(path, { method: "POST", body });
      const rev = data.policy?.revision ?? data.revision;
      const watch = el("a", { href: `/audits?app=${encodeURIComponent(profile.app)}&effect=${done === "enforced" ? "prevent" : "alert"}`, text: done === "enforced" ? "See what it prevents" : "Watch its alerts" });
      $("#proposal-result").replaceChildren(el("strong", { text: `${done === "enforced" ? "Enforced (prevent)" : "Accepted in alert mode"}${rev != null ? ` · policy revision ${rev}` : ""}. ` }), watch);
      $("#proposal-result").hidden = false;
    } catch (e) {
      showError($("#proposal-error"), errorText(e.detail ?? e.message));
    }
    await load().catch((e) => showError($("#review-error"), errorText(e.detail ?? e.message)));
  }
  $("#accept").addEventListener("click", () => act(`/profiles/${encodeURIComponent(id)}/accept`, { policy_revision: proposal?.policy_revision }, "accepted"));
  $("#auto-accept").addEventListener("change", async (ev) => {
    showError($("#proposal-error"), "");
    try {
      const { data } = await api(`/profiles/${encodeURIComponent(id)}/auto-accept`, { method: "PUT", body: { auto_accept: ev.target.value } });
      toast(data.auto_accept === "off" ? "Auto-accept off" : `Auto-accept: ${data.auto_accept === "window" ? "when the window ends" : "when stable"} (alert mode)`);
    } catch (e) {
      showError($("#proposal-error"), errorText(e.detail ?? e.message));
    }
    await load().catch((e) => showError($("#review-error"), errorText(e.detail ?? e.message)));
  });
  $("#enforce").addEventListener("click", () => act(`/profiles/${encodeURIComponent(id)}/enforce`, undefined, "enforced"));
  load().catch((e) => showError($("#review-error"), errorText(e.detail ?? e.message)));
}

PAGES.learning = initLearning;
PAGES["learning-review"] = initLearningReview;
