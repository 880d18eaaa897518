/* CNAF rules: the `cnaf` controls of each runtime rule, edited in place and saved with the whole policy
 * (PUT /api/v1/policies/runtime/app-embedded, the same revisioned write the policy editor uses).
 * Fields this page does not know are kept as they are (the editor starts from a copy of the stored rule). */
"use strict";

const CNAF_DEFAULTS = {
  enabled: true, effects: {}, exceptions: [], rate_limit: null, ban_duration_s: 300,
  trust_x_forwarded_for: false, max_header_bytes: 16384, max_body_inspect_bytes: 1048576,
};
const CRS_DEFAULTS = { enabled: true, paranoia_level: 3, anomaly_threshold: 5, disabled_rules: [], default_exclusions: true };

function scopeText(scope) {
  const parts = ["orgs", "spaces", "apps", "app_ids"].flatMap((k) => (scope[k] || []).filter((g) => g !== "*").map((g) => `${k.replace("_ids", " id").replace(/s$/, "")}: ${g}`));
  return parts.length ? parts.join(", ") : "all apps";
}

function initCnaf() {
  let policy = { rules: [], revision: 0 };
  let editing = -1;
  const dialog = $("#cnaf-dialog");
  const form = $("#cnaf-form");
  const classes = $all("[data-effect]", form).map((s) => s.dataset.effect);

  function effectsSummary(c) {
    const by = {};
    for (const a of classes) { const e = c.effects?.[a] || "alert"; (by[e] = by[e] || []).push(a.replace("_", " ")); }
    return el("div", { class: "chips" }, ...["ban", "prevent", "alert", "disable"].filter((e) => by[e]).map((e) =>
      el("span", { class: `pill ${e}`, title: by[e].join(", "), text: `${e} ×${by[e].length}` })));
  }

  function render() {
    $("#cnaf-revision").textContent = `Policy revision ${policy.revision}.`;
    $("#cnaf-table tbody").replaceChildren(...policy.rules.map((r, i) => {
      const c = r.cnaf;
      return el("tr", { dataset: { rule: r.name }, class: r.disabled ? "disabled-rule" : "" },
        el("td", {}, el("strong", { text: r.name }), r.disabled ? el("div", {}, pill("rule disabled", "off")) : null),
        el("td", { class: "cell-sub", text: scopeText(r.scope) }),
        el("td", {}, !c ? pill("not configured", "off") : c.enabled ? pill("enabled", "ok") : pill("disabled", "off")),
        el("td", {}, c ? effectsSummary(c) : el("span", { class: "muted", text: "–" })),
        el("td", { text: c ? String(c.exceptions.length) : "–" }),
        el("td", { text: c && c.rate_limit ? `${c.rate_limit.burst}/s burst, ${c.rate_limit.average}/s avg → ${c.rate_limit.effect}` : "–" }),
        el("td", { class: "writer-only" }, el("button", { class: "btn btn-small", type: "button", text: c ? "Edit" : "Add CNAF", "aria-label": `Edit CNAF of ${r.name}`, onclick: () => open(i) })));
    }));
    $("#cnaf-empty").hidden = policy.rules.length > 0;
    $("#cnaf-table").hidden = policy.rules.length === 0;
  }

  async function load() {
    const { data } = await api("/policies/runtime/app-embedded");
    policy = data;
    render();
  }

  function exceptionRow(x) {
    const n = $("#exceptions-table tbody").children.length;
    const attack = el("select", { "aria-label": "Attack class", dataset: { k: "attack", path: `exceptions.${n}.attack` } },
      el("option", { value: "*", text: "* (all)" }), ...classes.map((a) => el("option", { value: a, text: a })));
    attack.value = x.attack || "*";
    const row = el("tr", {},
      el("td", {}, el("label", { class: "bare" }, el("input", { "aria-label": "Path glob", value: x.path || "*", dataset: { k: "path", path: `exceptions.${n}.path` } }))),
      el("td", {}, el("label", { class: "bare" }, el("input", { "aria-label": "Parameter", placeholder: "any", value: x.param || "", dataset: { k: "param", path: `exceptions.${n}.param` } }))),
      el("td", {}, el("label", { class: "bare" }, attack)),
      el("td", {}, el("button", { class: "btn btn-small btn-icon", type: "button", "aria-label": "Remove exception", text: "✕", onclick: () => row.remove() })));
    $("#exceptions-table tbody").append(row);
  }

  function fill(c) {
    $("#cnaf-enabled").checked = !!c.enabled;
    for (const s of $all("[data-effect]", form)) s.value = c.effects?.[s.dataset.effect] || "alert";
    $("#exceptions-table tbody").replaceChildren();
    (c.exceptions || []).forEach(exceptionRow);
    $("#rate-enabled").checked = !!c.rate_limit;
    $("#rate-burst").value = c.rate_limit?.burst ?? 100;
    $("#rate-average").value = c.rate_limit?.average ?? 50;
    $("#rate-effect").value = c.rate_limit?.effect ?? "prevent";
    $("#ban-duration").value = c.ban_duration_s;
    $("#trust-xff").checked = !!c.trust_x_forwarded_for;
    $("#max-header").value = c.max_header_bytes;
    $("#max-body").value = c.max_body_inspect_bytes;
    const crs = { ...CRS_DEFAULTS, ...(c.crs || {}) };
    $("#crs-enabled").checked = !!crs.enabled;
    $("#crs-paranoia").value = String(crs.paranoia_level);
    $("#crs-threshold").value = crs.anomaly_threshold;
    $("#crs-exclusions").checked = !!crs.default_exclusions;
    $("#crs-disabled").value = crs.disabled_rules.join(", ");
  }

  function collect(base) {
    const c = structuredClone(base);
    const num = (id) => ($(id).value === "" ? null : Number($(id).value));
    c.enabled = $("#cnaf-enabled").checked;
    c.effects = Object.fromEntries($all("[data-effect]", form).map((s) => [s.dataset.effect, s.value]));
    c.exceptions = $all("#exceptions-table tbody tr").map((tr, i) => {
      $all("[data-k]", tr).forEach((x) => { x.dataset.path = `exceptions.${i}.${x.dataset.k}`; }); // rows may have been removed
      const v = (k) => tr.querySelector(`[data-k=${k}]`).value.trim();
      return { path: v("path") || "*", param: v("param") || null, attack: v("attack") || "*" };
    });
    c.rate_limit = $("#rate-enabled").checked ? { burst: num("#rate-burst"), average: num("#rate-average"), effect: $("#rate-effect").value } : null;
    c.ban_duration_s = num("#ban-duration");
    c.trust_x_forwarded_for = $("#trust-xff").checked;
    c.max_header_bytes = num("#max-header");
    c.max_body_inspect_bytes = num("#max-body");
    const ids = $("#crs-disabled").value.split(/[\s,]+/).filter(Boolean).map((x) => (/^\d+$/.test(x) ? Number(x) : x));
    c.crs = {
      ...(base.crs || CRS_DEFAULTS), enabled: $("#crs-enabled").checked, paranoia_level: Number($("#crs-paranoia").value),
      anomaly_threshold: num("#crs-threshold"), default_exclusions: $("#crs-exclusions").checked, disabled_rules: ids,
    };
    return c;
  }

  function clearErrors() {
    $all(".field-error", form).forEach((n) => n.remove());
    $all(".invalid", form).forEach((n) => n.classList.remove("invalid"));
    showError($("#cnaf-rule-error"), "");
  }

  function markErrors(detail) {
    clearErrors();
    const general = [];
    for (const d of Array.isArray(detail) ? detail : [{ loc: [], msg: String(detail) }]) {
      const loc = (d.loc || []).filter((x) => x !== "body");
      const mine = loc[0] === "rules" && loc[1] === editing && loc[2] === "cnaf";
      const rest = mine ? loc.slice(3).map(String) : [];
      let target = null;
      for (let k = rest.length; k > 0 && !target; k -= 1) target = form.querySelector(`[data-path="${rest.slice(0, k).join(".")}"]`);
      if (!target) { general.push(`${loc.join(".")}: ${cleanMsg(d.msg)}`); continue; }
      target.classList.add("invalid");
      const msg = el("span", { class: "field-error", text: cleanMsg(d.msg) });
      if (target.closest("label")) target.closest("label").append(msg); else target.after(msg);
    }
    showError($("#cnaf-rule-error"), general.join("\n"));
  }

  function open(i) {
    editing = i;
    const r = policy.rules[i];
    $("#cnaf-dialog-title").textContent = `CNAF of rule "${r.name}"`;
    $("#cnaf-remove").hidden = !r.cnaf;
    clearErrors();
    fill(r.cnaf || CNAF_DEFAULTS);
    dialog.showModal();
  }

  async function save(cnaf) {
    const rules = policy.rules.map((r, j) => (j === editing ? { ...r, cnaf } : r));
    const { data } = await api("/policies/runtime/app-embedded", { method: "PUT", body: { rules, revision: policy.revision } });
    policy = data;
    render();
    toast(`Policy saved (revision ${policy.revision})`);
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors();
    try { await save(collect(policy.rules[editing].cnaf || CNAF_DEFAULTS)); dialog.close(); }
    catch (e) { if (e.status === 422) markErrors(e.detail); else showError($("#cnaf-rule-error"), errorText(e.detail ?? e.message)); }
  });
  $("#cnaf-remove").addEventListener("click", async () => {
    if (!confirm(`Remove the CNAF from rule "${policy.rules[editing].name}"? Its apps are then served without the firewall.`)) return;
    try { await save(null); dialog.close(); } catch (e) { showError($("#cnaf-rule-error"), errorText(e.detail ?? e.message)); }
  });
  $("#add-exception").addEventListener("click", () => exceptionRow({}));
  $("#cnaf-cancel").addEventListener("click", () => dialog.close());
  $("#cnaf-cancel-x").addEventListener("click", () => dialog.close());
  load().catch((e) => showError($("#cnaf-error"), e.message));
}

PAGES.cnaf = initCnaf;
