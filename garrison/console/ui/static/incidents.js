/* One incident: its audits and the process tree of the process an audit names, rebuilt by the console
 * from the defender's forensic records (GET /defenders/{id}/forensics/tree?pid=).
 * Loaded after app.js, whose helpers (api, el, pill, fmtTime, PAGES, ...) it uses. */
"use strict";

const TREE_MAX_NODES = 2000;    // a fork storm's tree is cut, with a note saying so
const TREE_MAX_CHILDREN = 200;  // per process; the rest are counted

/** Local time with milliseconds: forensic records are ordered by their sub-second times. */
function fmtPrecise(t) {
  if (t == null) return "";
  const d = new Date(t * 1000);
  const two = (n) => String(n).padStart(2, "0");
  return `${d.toLocaleDateString(undefined, { month: "short", day: "numeric" })} ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}.${String(d.getMilliseconds()).padStart(3, "0")}`;
}

function shellWords(argv) { return (argv || []).map((a) => (/[\s'"]/.test(a) || a === "" ? JSON.stringify(a) : a)).join(" "); }

function initIncident() {
  const id = new URLSearchParams(location.search).get("id") || "";
  let incident = null;
  let selected = null;   // the audit whose process the tree is about
  let whole = false;
  let asked = 0;         // only the newest tree request draws

  function facts(i) {
    const rows = [
      ["App", i.app_name], ["Org / space", [i.org, i.space].filter(Boolean).join(" / ")], ["Type", String(i.type || "").replace("_", " ")], ["Severity", i.severity],
      ["First seen", fmtPrecise(i.start)], ["Last seen", fmtPrecise(i.end)], ["Audits", String(i.count)],
      ["Rules", (i.rules || []).join(", ")], ["Defenders", (i.defenders || []).join(", ")],
    ].filter(([, v]) => v);
    $("#incident-facts").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
    $("#incident-title").textContent = `${i.app_name || "–"} · ${String(i.type || "").replace("_", " ")}`;
    $("#incident-effects").replaceChildren(...Object.entries(i.effects || {}).map(([k, n]) => pill(`${k} ×${n}`, k)));
  }

  function auditRows(audits) {
    const tbody = $("#incident-audits tbody");
    tbody.replaceChildren(...audits.map((a, n) => {
      const tr = el("tr", {
        class: `audit${a.pid ? "" : " no-pid"}`, tabindex: a.pid ? "0" : null, dataset: { n: String(n), pid: a.pid ?? "" },
        "aria-selected": "false", title: a.pid ? "Show this process in the tree" : "This audit names no process",
      },
        el("td", { class: "time", text: fmtPrecise(a.time) }),
        el("td", {}, pill(a.effect)),
        el("td", { class: "mono", text: a.pid != null ? String(a.pid) : "–" }),
        el("td", { class: "mono", text: a.exe || "–", title: a.exe || null }),
        el("td", { class: "mono", text: shellWords(a.argv) || "–", title: shellWords(a.argv) || null }),
        el("td", { class: "msg", text: a.message || "", title: a.message || null }));
      return tr;
    }));
    const pick = (tr) => { if (tr && tr.dataset.pid) select(audits[Number(tr.dataset.n)]); };
    tbody.onclick = (ev) => pick(ev.target.closest("tr.audit"));
    tbody.onkeydown = (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); pick(ev.target.closest("tr.audit")); } };
    $("#incident-audits-count").textContent = audits.length < incident.count ? `(newest ${audits.length} of ${incident.count})` : `(${audits.length})`;
  }

  function select(audit) {
    selected = audit;
    for (const tr of $all("#incident-audits tr.audit")) {
      tr.setAttribute("aria-selected", String(incident.audits[Number(tr.dataset.n)] === audit));
    }
    loadTree();
  }

  function note(text) { $("#tree-note").textContent = text || ""; $("#tree-note").hidden = !text; }

  async function loadTree() {
    const mine = ++asked;
    $("#tree").replaceChildren();
    $("#tree-empty").hidden = true;
    if (!selected) { note("No audit of this incident names a process, so there is no process tree to show."); return; }
    const q = new URLSearchParams();
    if (!whole) q.set("pid", String(selected.pid));
    if (selected.extra && selected.extra.container) q.set("container", String(selected.extra.container));  // a cell
    $("#tree-subject").textContent = `· defender ${selected.defender_id} · pid ${selected.pid}`;
    note("Asking the defender for its forensic records…");
    let data;
    try {
      ({ data } = await api(`/defenders/${encodeURIComponent(selected.defender_id)}/forensics/tree?${q}`));
    } catch (e) {
      if (mine !== asked) return;
      const why = e.status === 404 ? `Defender ${selected.defender_id} is not connected: the process tree comes from a running defender's forensic records.`
        : e.status === 403 ? "Reading a defender's forensic records needs the operator or admin role."
        : errorText(e.detail ?? e.message);
      note(why);
      return;
    }
    if (mine !== asked) return;
    note("");
    drawTree(data.tree || []);
  }

  function drawTree(roots) {
    let budget = TREE_MAX_NODES;
    const focus = Number(selected.pid);
    const ul = $("#tree");
    const nodeItem = (n) => {
      budget -= 1;
      const isFocus = n.pid === focus;
      const last = n.execs.length ? n.execs[n.execs.length - 1] : null;
      const head = el("div", { class: `pnode${isFocus ? " focus" : ""}${n.audits.length ? " audited" : ""}`, dataset: { pid: String(n.pid) } },
        el("span", { class: "pid mono", text: String(n.pid) }),
        el("span", { class: "exe mono", text: last ? last.exe || "?" : "(no exec seen)" }),
        isFocus ? pill("incident", "prevent") : null,
        n.ppid != null ? el("span", { class: "muted small", text: `ppid ${n.ppid}` }) : null,
        n.started != null ? el("span", { class: "when", text: `started ${fmtPrecise(n.started)}` }) : null);
      const lines = [];
      for (const x of n.execs) {
        lines.push(el("li", { class: "pexec" },
          el("span", { class: "what", text: "exec" }),
          el("time", { class: "when", text: fmtPrecise(x.t) }),
          x.verdict && x.verdict !== "allow" ? pill(x.verdict, x.verdict === "deny" ? "prevent" : x.verdict) : null,
          el("code", { class: "argv", text: shellWords(x.argv) || x.exe || "" })));
      }
      if (n.forks) {
        const times = (n.fork_times || []).map(fmtPrecise);
        lines.push(el("li", { class: "pfork" },
          el("span", { class: "what", text: "fork" }),
          el("span", { class: "when", text: `×${n.forks}${times.length ? " · " + times.join(", ") : ""}${n.forks > times.length && times.length ? " …" : ""}` })));
      }
      for (const a of n.audits) {
        lines.push(el("li", { class: "paudit" }, el("span", { class: "what", text: "audit" }), el("time", { class: "when", text: fmtPrecise(a.t) }),
          pill(a.effect || "info"), el("span", { text: [a.control, a.message].filter(Boolean).join(" · ") })));
      }
      const li = el("li", { class: "pproc" }, head, lines.length ? el("ul", { class: "pfacts" }, ...lines) : null);
      const kids = n.children || [];
      const shown = [];
      for (const c of kids.slice(0, TREE_MAX_CHILDREN)) { if (budget <= 0) break; shown.push(nodeItem(c)); }
      const hidden = kids.length - shown.length;
      if (shown.length || hidden) {
        li.append(el("ul", { class: "ptree" }, ...shown, hidden ? el("li", { class: "muted small more", text: `… ${hidden} more child process${hidden === 1 ? "" : "es"} not shown` }) : null));
      }
      return li;
    };
    const items = [];
    for (const r of roots) { if (budget <= 0) break; items.push(nodeItem(r)); }
    ul.replaceChildren(...items);
    $("#tree-empty").hidden = items.length > 0;
    if (budget <= 0) note(`The tree is cut at ${TREE_MAX_NODES} processes.`);
    $(".pnode.focus", ul)?.scrollIntoView({ block: "nearest" });
    document.body.dataset.treeLoaded = String(asked);
  }

  function setExtent(w) {
    whole = w;
    $("#tree-branch").classList.toggle("active", !w);
    $("#tree-whole").classList.toggle("active", w);
    loadTree();
  }
  $("#tree-branch").addEventListener("click", () => setExtent(false));
  $("#tree-whole").addEventListener("click", () => setExtent(true));
  $("#tree-reload").addEventListener("click", () => loadTree());

  api(`/incidents/${encodeURIComponent(id)}`).then(({ data }) => {
    incident = data;
    facts(data);
    auditRows(data.audits || []);
    const first = (data.audits || []).find((a) => a.pid && a.defender_id);
    if (first) select(first); else loadTree();
  }).catch((e) => showError($("#incident-error"), errorText(e.detail ?? e.message)));
}

PAGES.incident = initIncident;
