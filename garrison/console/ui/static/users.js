/* Users (admin) and API tokens (everyone, their own): pages on top of /api/v1/users and /api/v1/tokens.
 * Loaded after app.js, whose helpers (api, el, pill, toast, ...) and PAGES registry it uses. */
"use strict";

const ROLE_HELP = { admin: "everything, including users", operator: "policies, defenders, bundles", auditor: "read-only" };

function markFieldErrors(form, detail, box) {
  $all(".field-error", form).forEach((n) => n.remove());
  $all(".invalid", form).forEach((n) => n.classList.remove("invalid"));
  const general = [];
  for (const d of Array.isArray(detail) ? detail : [{ loc: [], msg: String(detail) }]) {
    const name = (d.loc || []).filter((x) => x !== "body").join(".");
    const target = name && form.querySelector(`[data-path="${name}"]`);
    if (!target) { general.push(cleanMsg(d.msg)); continue; }
    target.classList.add("invalid");
    target.closest("label")?.append(el("span", { class: "field-error", text: cleanMsg(d.msg) }));
  }
  showError(box, general.join("\n"));
}

function initUsers() {
  if (SESSION.role !== "admin") return;
  const tbody = $("#users-table tbody");
  const dialog = $("#password-dialog");
  let resetting = null;

  async function load() {
    const { data } = await api("/users");
    tbody.replaceChildren(...data.map((u) => {
      const me = u.username === SESSION.username;
      const role = el("select", { "aria-label": `Role of ${u.username}`, dataset: { user: u.username } },
        ...["admin", "operator", "auditor"].map((r) => el("option", { value: r, selected: r === u.role, text: r })));
      role.addEventListener("change", () => setRole(u, role));
      return el("tr", { dataset: { user: u.username } },
        el("td", {}, el("strong", { text: u.username }), me ? el("span", { class: "muted small", text: "  (you)" }) : null),
        el("td", {}, role, el("div", { class: "cell-sub", text: ROLE_HELP[u.role] || "" })),
        el("td", { text: fmtTime(u.created_at) }),
        el("td", {}, el("div", { class: "actions" },
          el("button", { class: "btn btn-small", type: "button", text: "Set password", onclick: () => openReset(u) }),
          el("button", { class: "btn btn-small btn-danger", type: "button", text: "Delete", "aria-label": `Delete ${u.username}`, onclick: () => remove(u) }))));
    }));
  }

  async function setRole(u, select) {
    try {
      await api(`/users/${encodeURIComponent(u.username)}`, { method: "PUT", body: { role: select.value } });
      toast(`${u.username} is now ${select.value}`);
      if (u.username === SESSION.username && select.value !== "admin") { location.reload(); return; }
    } catch (e) { toast(errorText(e.detail ?? e.message), true); }
    await load();
  }

  async function remove(u) {
    if (!confirm(`Delete user ${u.username}? Their API tokens stop working at once.`)) return;
    try { await api(`/users/${encodeURIComponent(u.username)}`, { method: "DELETE" }); toast(`User ${u.username} deleted`); }
    catch (e) { toast(errorText(e.detail ?? e.message), true); }
    await load();
  }

  function openReset(u) {
    resetting = u;
    $("#password-title").textContent = `Set the password of ${u.username}`;
    $("#reset-password").value = "";
    showError($("#password-error"), "");
    dialog.showModal();
    $("#reset-password").focus();
  }

  $("#password-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await api(`/users/${encodeURIComponent(resetting.username)}`, { method: "PUT", body: { password: $("#reset-password").value } });
      dialog.close();
      toast(`Password of ${resetting.username} changed`);
    } catch (e) { showError($("#password-error"), errorText(e.detail ?? e.message)); }
  });
  $("#password-cancel").addEventListener("click", () => dialog.close());

  $("#user-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = ev.currentTarget;
    const body = { username: $("#new-username").value.trim(), password: $("#new-password").value, role: $("#new-role").value };
    try {
      await api("/users", { method: "POST", body });
      markFieldErrors(form, [], $("#user-error"));
      form.reset();
      toast(`User ${body.username} added`);
      await load();
    } catch (e) { markFieldErrors(form, e.detail ?? e.message, $("#user-error")); }
  });
  load().catch((e) => toast(e.message, true));
}

function initTokens() {
  $("#token-role").textContent = SESSION.role;
  const tbody = $("#tokens-table tbody");

  async function load() {
    const { data } = await api("/tokens");
    const rows = data.slice().sort((a, b) => b.created_at - a.created_at);
    tbody.replaceChildren(...rows.map((t) => el("tr", { dataset: { token: t.id } },
      el("td", {}, el("strong", { text: t.name }), t.name === "session" ? el("div", { class: "cell-sub", text: "web console sign-in" }) : null),
      el("td", { text: fmtTime(t.created_at) }),
      el("td", { text: t.expires_at ? fmtTime(t.expires_at) : "never" }),
      el("td", {}, el("button", { class: "btn btn-small btn-danger", type: "button", text: "Revoke", "aria-label": `Revoke ${t.name} (${t.id})`, onclick: () => revoke(t) })))));
    $("#tokens-empty").hidden = rows.length > 0;
  }

  async function revoke(t) {
    const note = t.name === "session" ? " If it is this browser's session, you will be signed out." : "";
    if (!confirm(`Revoke token "${t.name}"? Requests with it are refused from now on.${note}`)) return;
    try { await api(`/tokens/${t.id}`, { method: "DELETE" }); toast(`Token "${t.name}" revoked`); await load(); }
    catch (e) { toast(errorText(e.detail ?? e.message), true); }
  }

  $("#token-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = ev.currentTarget;
    const ttl = $("#token-ttl").value;
    const body = { name: $("#token-name").value.trim(), ttl_days: ttl ? Number(ttl) : null };
    try {
      const { data } = await api("/tokens", { method: "POST", body });
      markFieldErrors(form, [], $("#token-error"));
      $("#new-token-name").textContent = data.name;
      $("#new-token-value").textContent = data.token;
      $("#new-token").hidden = false;
      form.reset();
      await load();
    } catch (e) { markFieldErrors(form, e.detail ?? e.message, $("#token-error")); }
  });
  load().catch((e) => toast(e.message, true));
}

PAGES.users = initUsers;
PAGES.tokens = initTokens;
