/* Network discovery map: apps grouped by org/space and the destinations they reach, drawn as SVG
 * with a layered layout written here (no third-party code): app groups packed in columns on the
 * left, DNS names and external hosts in their own boxes on the right. Groups collapse to one node
 * (their edges merged), so 200 apps / 2,000 edges stay readable; pan (drag), zoom (wheel, buttons),
 * search, filters; select edges/nodes and turn them into allow/deny rules in one step
 * (POST /api/v1/discovery/rules). Loaded after app.js, whose helpers (api, el, svg, pill, toast,
 * liveStream, ago, fmtTime, errorText, PAGES) it uses. All text goes through textContent. */
"use strict";

const MAP_NODE_W = 184;       // one node's cell: circle + label
const MAP_NODE_H = 24;
const MAP_PAD = 10;
const MAP_HEAD = 30;          // a group box's title bar
const MAP_GAP = 28;           // between group boxes
const MAP_OUT_GAP = 180;      // between the apps and the outside boxes: room for the edges
const MAP_AUTO_COLLAPSE = 60; // more apps than this: groups start collapsed
const MAP_LABEL_CHARS = 23;
/** The box a node is drawn in: apps by org/space; DNS names by their parent domain (the last two
 * labels); external hosts by network (IPv4 /24, IPv6 /48). Outside keys start with "~". */
function mapGroupKey(n) {
  if (n.kind === "app") return n.group || `${n.org || ""}/${n.space || ""}`;
  const label = String(n.label || n.id);
  if (n.kind === "dns") {
    const parts = label.replace(/\.$/, "").split(".");
    return `~dns:${parts.length > 2 ? parts.slice(-2).join(".") : label}`;
  }
  const ip = String((n.service && n.service.ip) || label);
  if (ip.includes(":")) return `~external:${ipv6Groups(ip).slice(0, 3).join(":")}::/48`;
  const v4 = ip.split(".");
  return `~external:${v4.length === 4 ? v4.slice(0, 3).join(".") + ".0/24" : ip}`;
}

/** The eight groups of an IPv6 address written with or without `::` (hex, no leading zeros). */
function ipv6Groups(ip) {
  const [head, tail] = ip.split("%")[0].split("::");
  const left = head ? head.split(":") : [];
  const right = tail !== undefined && tail !== "" ? tail.split(":") : [];
  const groups = tail === undefined ? left : [...left, ...Array(Math.max(0, 8 - left.length - right.length)).fill("0"), ...right];
  return groups.map((g) => (/^[0-9a-f]{1,4}$/i.test(g) ? parseInt(g, 16).toString(16) : g));
}

function boxLabel(key) {
  if (!key.startsWith("~")) return key;
  const [kind, rest] = [key.slice(1, key.indexOf(":")), key.slice(key.indexOf(":") + 1)];
  return kind === "dns" && rest.includes(".") ? `*.${rest}` : rest;
}

function edgeKind(e, nodes) {
  const t = nodes.get(e.target);
  return !t || (t.kind !== "app" && t.kind !== "dns") ? "external" : t.kind;
}

function clip(text, n = MAP_LABEL_CHARS) { return text.length > n ? text.slice(0, n - 1) + "…" : text; }

/** Grid of `n` items in a box, filled column by column: [cols, rows]. */
function boxGrid(n) {
  const cols = n <= 8 ? 1 : n <= 24 ? 2 : n <= 60 ? 3 : n <= 160 ? 4 : 6;
  return [cols, Math.max(1, Math.ceil(n / cols))];
}

/** Boxes packed column by column (in key order), columns about `target` tall, from x = `x0`. */
function packColumns(sized, target, x0) {
  const placed = [];
  let x = x0, y = 0, colW = 0;
  for (const b of sized) {
    if (y > 0 && y + b.h > target) { x += colW + MAP_GAP; y = 0; colW = 0; }
    placed.push({ ...b, x, y });
    y += b.h + MAP_GAP;
    colW = Math.max(colW, b.w);
  }
  return { placed, right: placed.length ? x + colW : x0 };
}

/** Positions of boxes and visible nodes. `collapsed`: box keys drawn as one node; `aspect`: the
 * view's width / height, which the packing aims at. Pure: same data, same picture (a refresh that
 * brings nothing new moves nothing). */
function layoutMap(data, collapsed, aspect = 1.4) {
  const groups = new Map(); // key -> [node]
  for (const n of data.nodes) {
    const k = mapGroupKey(n);
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k).push(n);
  }
  for (const list of groups.values()) list.sort((a, b) => (a.label || a.id).localeCompare(b.label || b.id, undefined, { numeric: true }));
  const sizeOf = (key) => {
    const n = groups.get(key).length;
    if (collapsed.has(key)) return { key, w: MAP_NODE_W + 2 * MAP_PAD, h: MAP_HEAD + MAP_NODE_H + MAP_PAD, cols: 1, rows: 1 };
    const [cols, rows] = boxGrid(n);
    return { key, w: cols * MAP_NODE_W + 2 * MAP_PAD, h: MAP_HEAD + rows * MAP_NODE_H + MAP_PAD, cols, rows };
  };
  const keys = [...groups.keys()].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
  const appSized = keys.filter((k) => !k.startsWith("~")).map(sizeOf);
  const outSized = keys.filter((k) => k.startsWith("~")).map(sizeOf);
  // column height so that the whole (two sections and the gap between) is about as wide as the view
  const area = [...appSized, ...outSized].reduce((s, b) => s + (b.w + MAP_GAP) * (b.h + MAP_GAP), 0);
  const tallest = Math.max(0, ...[...appSized, ...outSized].map((b) => b.h));
  const target = Math.max(tallest, 300, Math.sqrt(area / aspect));
  const apps = packColumns(appSized, target, 0);
  const outs = packColumns(outSized, target, appSized.length ? apps.right + MAP_OUT_GAP : 0);
  const boxes = [...apps.placed, ...outs.placed].map((b) => ({
    ...b, label: boxLabel(b.key), kind: b.key.startsWith("~dns") ? "dns" : b.key.startsWith("~") ? "external" : "app",
  }));  // prettier-ignore
  const pos = new Map();     // visible node id -> {x, y, label, kind, ids: [node ids], box}
  const vnodeOf = new Map(); // node id -> visible node id
  for (const b of boxes) {
    const members = groups.get(b.key);
    b.count = members.length;
    if (collapsed.has(b.key)) {
      const vid = `group:${b.key}`;
      const noun = b.kind === "app" ? "app" : b.kind === "dns" ? "name" : "host";
      pos.set(vid, { x: b.x + MAP_PAD, y: b.y + MAP_HEAD, label: `${members.length} ${noun}${members.length === 1 ? "" : "s"}`, kind: b.kind, group: true, ids: members.map((n) => n.id), box: b });
      for (const n of members) vnodeOf.set(n.id, vid);
      continue;
    }
    members.forEach((n, i) => {
      const col = Math.floor(i / b.rows), row = i % b.rows;
      pos.set(n.id, { x: b.x + MAP_PAD + col * MAP_NODE_W, y: b.y + MAP_HEAD + row * MAP_NODE_H, label: n.label || n.id, kind: n.kind, node: n, ids: [n.id], box: b });
      vnodeOf.set(n.id, n.id);
    });
  }
  const width = Math.max(0, ...boxes.map((b) => b.x + b.w));
  const height = Math.max(0, ...boxes.map((b) => b.y + b.h));
  return { boxes, pos, vnodeOf, width, height };
}

/** Visible edges: the data's edges between visible nodes, merged where groups are collapsed. */
function mergeEdges(data, lay, kinds, nodes) {
  const out = new Map();
  const internal = new Map(); // box key -> edges inside a collapsed group
  for (const e of data.edges) {
    if (!kinds.has(edgeKind(e, nodes))) continue;
    const s = lay.vnodeOf.get(e.source), t = lay.vnodeOf.get(e.target);
    if (!s || !t) continue;
    if (s === t) { const k = lay.pos.get(s).box.key; internal.set(k, (internal.get(k) || 0) + 1); continue; }
    const id = `${s}\u2192${t}`;
    let v = out.get(id);
    if (!v) out.set(id, v = { id, source: s, target: t, members: [], count: 0, denied: false, deniedEffect: "", isNew: false, last: 0 });
    v.members.push(e);
    v.count += e.count || 0;
    v.last = Math.max(v.last, e.last_seen || 0);
    if (e.denied_by_current_policy) {
      v.denied = true;
      if (e.denied_effect === "prevent" || !v.deniedEffect) v.deniedEffect = e.denied_effect || "prevent";
    }
    if (e.new_since_accept) v.isNew = true;
  }
  return { edges: [...out.values()], internal };
}

/** The denial style (and its arrowhead); "new" is added on top (a new edge may also be denied). */
function edgeClass(v) {
  if (v.denied) return v.deniedEffect === "alert" ? "denied-alert" : "denied";
  return v.isNew ? "new" : "";
}

/** Anchor points: leave from the side facing the target, arrive at the circle or the label's end. */
function edgePath(a, b) {
  const right = b.x > a.x + MAP_NODE_W / 2;
  const left = b.x + MAP_NODE_W / 2 < a.x;
  const x1 = right ? a.x + MAP_NODE_W - 8 : a.x + 8, y1 = a.y + MAP_NODE_H / 2;
  const x2 = left ? b.x + MAP_NODE_W - 8 : b.x + 8, y2 = b.y + MAP_NODE_H / 2;
  if (right || left) {
    const mx = (x1 + x2) / 2;
    const dx = Math.abs(x2 - x1);
    if (dx < MAP_NODE_W + MAP_OUT_GAP + 40) return `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`;
    // a long edge would run along a row of the boxes it passes: arch it over them
    const bow = Math.min(160, dx * 0.12);
    return `M${x1},${y1} C${x1 + dx / 3 * Math.sign(x2 - x1)},${y1 - bow} ${x2 - dx / 3 * Math.sign(x2 - x1)},${y2 - bow} ${x2},${y2}`;
  }
  const bulge = 40 + Math.min(160, Math.abs(y2 - y1) * 0.25); // same column: out to the left and back
  return `M${x1},${y1} C${x1 - bulge},${y1} ${x2 - bulge},${y2} ${x2},${y2}`;
}

function markerDefs() {
  const defs = svg("defs");
  for (const [id, cls] of [["arrow", ""], ["arrow-denied", "denied"], ["arrow-denied-alert", "denied-alert"], ["arrow-new", "new"]]) {
    const m = svg("marker", { id, viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "4.5", markerHeight: "4.5", orient: "auto-start-reverse", class: `marker ${cls}` });
    m.append(svg("path", { d: "M0,0 L10,5 L0,10 z" }));
    defs.append(m);
  }
  return defs;
}

function initDiscovery() {
  const form = $("#map-filters");
  const map = $("#map");
  const wrap = $("#map-wrap");
  const tip = $("#map-tip");
  const st = {
    data: null, signature: "", nodes: new Map(), edgesById: new Map(),
    collapsed: new Set(), autoCollapse: true, kinds: new Set(["app", "dns", "external"]),
    view: { k: 1, tx: 20, ty: 20 }, fitted: false,
    selEdges: new Set(), selNodes: new Set(),
    lay: null, vedges: [], vnodeEls: new Map(), vedgeEls: [], adjacency: new Map(), renders: 0,
  };
  const vp = svg("g", { id: "map-viewport" });

  function query() {
    const q = new URLSearchParams();
    const fd = new FormData(form);
    for (const k of ["org", "space", "app"]) { const v = String(fd.get(k) || "").trim(); if (v) q.set(k, v); }
    const since = Number(fd.get("since") || 0);
    if (since) q.set("since", String(Math.floor(Date.now() / 1000 - since)));
    if (fd.get("flagged")) q.set("flagged", "true");
    return q;
  }

  async function load() {
    const { data } = await api(`/discovery/map?${query()}`);
    const sig = JSON.stringify([data.nodes, data.edges, data.policy_revision]);
    showError($("#map-error"), "");
    if (sig === st.signature) return;
    st.signature = sig;
    st.data = data;
    st.nodes = new Map(data.nodes.map((n) => [n.id, n]));
    st.edgesById = new Map(data.edges.map((e) => [e.id, e]));
    for (const id of [...st.selEdges]) if (!st.edgesById.has(id)) st.selEdges.delete(id);
    for (const id of [...st.selNodes]) if (!st.nodes.has(id)) st.selNodes.delete(id);
    if (st.autoCollapse) {
      st.autoCollapse = false;
      const apps = data.nodes.filter((n) => n.kind === "app");
      st.collapsed = new Set(apps.length > MAP_AUTO_COLLAPSE ? data.nodes.map(mapGroupKey) : []);
    }
    render();
    const stats = `${data.nodes.filter((n) => n.kind === "app").length} apps · ${data.nodes.length} nodes · ${data.edges.length} edges${data.truncated ? " (newest only: narrow the filters)" : ""}`;
    $("#map-stats").textContent = stats;
  }

  function render() {
    const t0 = performance.now();
    const data = st.data;
    $("#map-empty").hidden = data.nodes.length > 0;
    const lay = st.lay = layoutMap(data, st.collapsed, (map.clientWidth || 1100) / (map.clientHeight || 700));
    const { edges, internal } = mergeEdges(data, lay, st.kinds, st.nodes);
    st.vedges = edges;
    const boxesG = svg("g", { class: "boxes" });
    for (const b of lay.boxes) {
      const g = svg("g", { class: `box ${b.kind}${st.collapsed.has(b.key) ? " collapsed" : ""}`, "data-box": b.key });
      g.append(svg("rect", { x: b.x, y: b.y, width: b.w, height: b.h, rx: 8 }));
      const title = svg("text", { x: b.x + MAP_PAD, y: b.y + 19, class: "box-title" });
      const inner = internal.get(b.key);
      title.textContent = `${st.collapsed.has(b.key) ? "▸" : "▾"} ${clip(b.label, Math.floor((b.w - 2 * MAP_PAD) / 7) - 5)}  ${b.count}${inner ? ` · ${inner} inside` : ""}`;
      const hint = svg("title");
      hint.textContent = `${b.kind === "app" ? "org/space" : b.kind === "dns" ? "DNS names under" : "external hosts in"} ${b.label}: ${b.count} · click to ${st.collapsed.has(b.key) ? "expand" : "collapse"}`;
      title.append(hint);
      g.append(title);
      boxesG.append(g);
    }
    const edgesG = svg("g", { class: "edges" });
    const hitsG = svg("g", { class: "hits" });
    st.vedgeEls = [];
    st.adjacency = new Map();
    const maxCount = Math.max(1, ...edges.map((v) => v.count));
    edges.forEach((v, i) => {
      const a = lay.pos.get(v.source), b = lay.pos.get(v.target);
      const d = edgePath(a, b);
      const cls = edgeClass(v);
      const width = 1 + 2.5 * Math.log1p(v.count) / Math.log1p(maxCount);
      const ends = { "data-src": v.source, "data-dst": v.target };
      const p = svg("path", { d, class: `edge ${cls}${v.isNew ? " new" : ""}`, "stroke-width": width.toFixed(2), "marker-end": `url(#arrow${cls ? "-" + cls : ""})`, "data-e": i, ...ends });
      edgesG.append(p);
      hitsG.append(svg("path", { d, class: "hit", "data-e": i, ...ends }));
      st.vedgeEls.push(p);
      for (const end of [v.source, v.target]) {
        if (!st.adjacency.has(end)) st.adjacency.set(end, []);
        st.adjacency.get(end).push(i);
      }
    });
    const nodesG = svg("g", { class: "nodes" });
    st.vnodeEls = new Map();
    for (const [vid, p] of lay.pos) {
      const n = p.node;
      const state = n && n.kind === "app" ? (n.state || (n.profile_id == null ? "unprofiled" : "")) : "";
      const g = svg("g", { class: `node ${p.kind}${p.group ? " group" : ""}${state ? " " + state : ""}${n && n.service && n.service.scope ? " " + n.service.scope : ""}`, "data-v": vid });
      g.append(svg("rect", { x: p.x, y: p.y + 1, width: MAP_NODE_W - 4, height: MAP_NODE_H - 2, rx: 5, class: "node-bg" }));
      g.append(p.kind === "dns" && !p.group
        ? svg("rect", { x: p.x + 3, y: p.y + MAP_NODE_H / 2 - 5, width: 10, height: 10, class: "dot", transform: `rotate(45 ${p.x + 8} ${p.y + MAP_NODE_H / 2})` })
        : svg("circle", { cx: p.x + 8, cy: p.y + MAP_NODE_H / 2, r: p.group ? 7 : 5.5, class: "dot" }));
      const t = svg("text", { x: p.x + 20, y: p.y + MAP_NODE_H / 2 + 4 });
      t.textContent = clip(p.label);
      g.append(t);
      nodesG.append(g);
      st.vnodeEls.set(vid, g);
    }
    vp.replaceChildren(boxesG, edgesG, hitsG, nodesG);
    if (!map.firstChild) map.append(markerDefs(), vp);
    applySelection();
    applySearch(false);
    if (!st.fitted && data.nodes.length) { fit(); st.fitted = true; } else applyView();
    st.renders += 1;
    const ms = performance.now() - t0;
    map.dataset.renderMs = ms.toFixed(1);
    map.dataset.renders = String(st.renders);
    map.dataset.edges = String(edges.length);
    map.dataset.nodes = String(lay.pos.size);
  }

  // -- pan & zoom ------------------------------------------------------------------------------
  function applyView() { vp.setAttribute("transform", `translate(${st.view.tx.toFixed(1)},${st.view.ty.toFixed(1)}) scale(${st.view.k.toFixed(4)})`); }

  function zoomAt(f, px, py) {
    const k = Math.min(4, Math.max(0.03, st.view.k * f));
    const r = k / st.view.k;
    st.view.tx = px - (px - st.view.tx) * r;
    st.view.ty = py - (py - st.view.ty) * r;
    st.view.k = k;
    applyView();
  }

  function fitTo(x0, y0, x1, y1, maxK = 1.5) {
    const w = map.clientWidth || 800, h = map.clientHeight || 600;
    const k = Math.min(maxK, Math.max(0.03, Math.min(w / (x1 - x0 + 40), h / (y1 - y0 + 40))));
    st.view = { k, tx: (w - (x1 - x0) * k) / 2 - x0 * k, ty: (h - (y1 - y0) * k) / 2 - y0 * k };
    applyView();
  }
  function fit() { if (st.lay) fitTo(0, 0, Math.max(st.lay.width, 1), Math.max(st.lay.height, 1), 1.2); }

  map.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const r = map.getBoundingClientRect();
    zoomAt(Math.exp(-ev.deltaY * 0.0015), ev.clientX - r.left, ev.clientY - r.top);
  }, { passive: false });
  let drag = null;
  let dragged = false;
  map.addEventListener("pointerdown", (ev) => {
    if (ev.button !== 0) return;
    drag = { x: ev.clientX, y: ev.clientY, tx: st.view.tx, ty: st.view.ty };
    dragged = false;
  });
  map.addEventListener("pointermove", (ev) => {
    if (drag) {
      const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
      if (!dragged && Math.hypot(dx, dy) > 4) { dragged = true; map.setPointerCapture(ev.pointerId); map.classList.add("panning"); }
      if (dragged) { st.view.tx = drag.tx + dx; st.view.ty = drag.ty + dy; applyView(); return; }
    }
    hover(ev);
  });
  const endDrag = () => { drag = null; map.classList.remove("panning"); };
  map.addEventListener("pointerup", endDrag);
  map.addEventListener("pointercancel", endDrag);
  map.addEventListener("pointerleave", () => { unhover(); });
  const center = () => [map.clientWidth / 2, map.clientHeight / 2];
  $("#zoom-in").addEventListener("click", () => zoomAt(1.3, ...center()));
  $("#zoom-out").addEventListener("click", () => zoomAt(1 / 1.3, ...center()));
  $("#zoom-fit").addEventListener("click", fit);
  map.addEventListener("keydown", (ev) => {
    const step = 60;
    const moves = { ArrowLeft: [step, 0], ArrowRight: [-step, 0], ArrowUp: [0, step], ArrowDown: [0, -step] };
    if (moves[ev.key]) { ev.preventDefault(); st.view.tx += moves[ev.key][0]; st.view.ty += moves[ev.key][1]; applyView(); }
    else if (ev.key === "+" || ev.key === "=") zoomAt(1.3, ...center());
    else if (ev.key === "-") zoomAt(1 / 1.3, ...center());
    else if (ev.key === "0") fit();
  });

  // -- hover: the node's edges stand out, the rest fade; a tip says what it is --------------------
  let hovered = null;
  function hover(ev) {
    const e = ev.target.closest?.("[data-e]");
    const v = ev.target.closest?.("[data-v]");
    const key = e ? `e${e.dataset.e}` : v ? `v${v.dataset.v}` : null;
    if (key !== hovered) {
      unhover();
      hovered = key;
      if (v) {
        map.classList.add("focusing");
        v.classList.add("hl");
        for (const i of st.adjacency.get(v.dataset.v) || []) st.vedgeEls[i].classList.add("hl");
      } else if (e) {
        st.vedgeEls[Number(e.dataset.e)].classList.add("hl");
      }
    }
    if (!key) { tip.hidden = true; return; }
    tip.replaceChildren(...(e ? edgeTip(st.vedges[Number(e.dataset.e)]) : nodeTip(v.dataset.v)));
    const r = wrap.getBoundingClientRect();
    tip.hidden = false;
    const x = Math.min(ev.clientX - r.left + 14, r.width - tip.offsetWidth - 8);
    const y = Math.min(ev.clientY - r.top + 14, r.height - tip.offsetHeight - 8);
    tip.style.left = `${Math.max(4, x)}px`;
    tip.style.top = `${Math.max(4, y)}px`;
  }
  function unhover() {
    hovered = null;
    tip.hidden = true;
    map.classList.remove("focusing");
    for (const x of $all(".hl", map)) x.classList.remove("hl");
  }

  const labelOf = (vid) => st.lay.pos.get(vid)?.node?.label || st.lay.pos.get(vid)?.label || vid;
  const groupLabel = (vid) => { const p = st.lay.pos.get(vid); return p && p.group ? `${p.box.label} (${p.label})` : labelOf(vid); };

  function edgeFacts(e) {
    const ports = (e.ports || []).join(", ");
    const names = (e.names || []).join(", ");
    return [ports, names && `via ${names}`, `${e.count} connection${e.count === 1 ? "" : "s"}`, `last seen ${ago(e.last_seen)}`].filter(Boolean).join(" · ");
  }
  function flags(e) {
    return [e.denied_by_current_policy ? pill(e.denied_effect === "alert" ? "alert under policy" : "denied by policy", e.denied_effect === "alert" ? "alert" : "prevent") : null,
      e.new_since_accept ? pill("new since accept", "info") : null];
  }
  function edgeTip(v) {
    if (v.members.length === 1) {
      const e = v.members[0];
      return [el("strong", { text: `${labelOf(v.source)} → ${labelOf(v.target)}` }), el("div", { text: edgeFacts(e) }), el("div", { class: "chips" }, ...flags(e))];
    }
    return [el("strong", { text: `${groupLabel(v.source)} → ${groupLabel(v.target)}` }),
      el("div", { text: `${v.members.length} edges · ${v.count} connections · last seen ${ago(v.last)}` }),
      el("div", { class: "chips" }, v.denied ? pill("some denied by policy", v.deniedEffect === "alert" ? "alert" : "prevent") : null, v.isNew ? pill("some new since accept", "info") : null)];
  }
  function nodeTip(vid) {
    const p = st.lay.pos.get(vid);
    const n = p.node;
    const degree = (st.adjacency.get(vid) || []).length;
    if (!n) return [el("strong", { text: p.box.label }), el("div", { text: `${p.label} · ${degree} edges shown · click to select them all` })];
    const where = n.kind === "app" ? [n.org, n.space].filter(Boolean).join(" / ") : (n.service && (n.service.scope || n.service.kind)) || n.kind;
    const state = n.kind === "app" ? (n.profile_id == null ? "no profile" : `profile: ${n.state || "learning"}`) : "";
    return [el("strong", { text: n.label || n.id }), el("div", { class: "muted", text: [n.kind, where, state].filter(Boolean).join(" · ") }), el("div", { text: `${degree} edges shown` })];
  }

  // -- selection → rules ---------------------------------------------------------------------------
  map.addEventListener("click", (ev) => {
    if (dragged) { dragged = false; return; }
    const add = ev.shiftKey || ev.ctrlKey || ev.metaKey;
    const e = ev.target.closest("[data-e]");
    const v = ev.target.closest("[data-v]");
    const title = ev.target.closest(".box-title");
    if (title) { toggleGroup(title.closest("[data-box]").dataset.box); return; }
    if (!add && (e || v)) { st.selEdges.clear(); st.selNodes.clear(); }
    if (e) {
      const members = st.vedges[Number(e.dataset.e)].members.map((m) => m.id);
      const all = members.every((id) => st.selEdges.has(id));
      for (const id of members) { if (all && add) st.selEdges.delete(id); else st.selEdges.add(id); }
    } else if (v) {
      const ids = st.lay.pos.get(v.dataset.v).ids;
      const all = ids.every((id) => st.selNodes.has(id));
      for (const id of ids) { if (all && add) st.selNodes.delete(id); else st.selNodes.add(id); }
    } else if (!add) {
      st.selEdges.clear(); st.selNodes.clear();
    }
    applySelection();
  });

  function toggleGroup(key) {
    if (st.collapsed.has(key)) st.collapsed.delete(key); else st.collapsed.add(key);
    render();
  }

  function applySelection() {
    st.vedges.forEach((v, i) => st.vedgeEls[i].classList.toggle("sel", v.members.some((m) => st.selEdges.has(m.id))));
    for (const [vid, g] of st.vnodeEls) g.classList.toggle("sel", st.lay.pos.get(vid).ids.some((id) => st.selNodes.has(id)));
    const items = [];
    for (const id of st.selNodes) {
      const n = st.nodes.get(id);
      if (!n) continue;
      items.push(el("li", { class: "sel-node", dataset: { id } },
        el("strong", { text: n.label || n.id }),
        el("span", { class: "muted small", text: ` ${n.kind}${n.kind === "app" ? " · " + [n.org, n.space].filter(Boolean).join(" / ") : ""} · all its edges` }),
        n.profile_id != null ? el("a", { class: "small", href: `/learning/review?id=${encodeURIComponent(n.profile_id)}`, text: " review profile" }) : null,
        st.selNodes.size === 1 ? nodeEdgeList(id) : null));
    }
    for (const id of st.selEdges) {
      const e = st.edgesById.get(id);
      if (!e) continue;
      items.push(el("li", { class: "sel-edge", dataset: { id } },
        el("div", {}, el("strong", { text: `${st.nodes.get(e.source)?.label || e.source} → ${st.nodes.get(e.target)?.label || e.target}` })),
        el("div", { class: "muted small", text: edgeFacts(e) }),
        el("div", { class: "chips" }, ...flags(e))));
    }
    const shown = items.slice(0, 60);
    if (items.length > shown.length) shown.push(el("li", { class: "muted small", text: `… and ${items.length - shown.length} more` }));
    $("#sel-list").replaceChildren(...shown);
    const any = items.length > 0;
    $("#sel-hint").hidden = any;
    $("#sel-allow").disabled = !any;
    $("#sel-deny").disabled = !any;
  }

  /** The edges of one selected node, each a button that narrows the selection to it (dense maps). */
  function nodeEdgeList(id) {
    const mine = st.data.edges.filter((e) => e.source === id || e.target === id);
    const pick = (e) => () => { st.selNodes.clear(); st.selEdges.clear(); st.selEdges.add(e.id); applySelection(); };
    const items = mine.slice(0, 30).map((e) => el("li", {},
      el("button", { type: "button", class: "btn btn-small btn-ghost", dataset: { edge: e.id }, onclick: pick(e) },
        e.source === id ? `→ ${st.nodes.get(e.target)?.label || e.target}` : `← ${st.nodes.get(e.source)?.label || e.source}`),
      el("span", { class: "muted small", text: (e.ports || []).join(", ") }), ...flags(e)));
    if (mine.length > items.length) items.push(el("li", { class: "muted small", text: `… ${mine.length - items.length} more` }));
    return el("ul", { class: "node-edges" }, ...items);
  }

  $("#sel-clear").addEventListener("click", () => { st.selEdges.clear(); st.selNodes.clear(); applySelection(); });

  async function makeRule(action) {
    showError($("#sel-error"), "");
    $("#sel-result").hidden = true;
    const body = { action, edges: [...st.selEdges], nodes: [...st.selNodes] };
    for (const b of [$("#sel-allow"), $("#sel-deny")]) b.disabled = true;
    try {
      const { data } = await api("/discovery/rules", { method: "POST", body });
      const changes = (data.changes || []).map((c) => el("li", { text: typeof c === "string" ? c : changeText(c) }));
      $("#sel-result").replaceChildren(
        el("strong", { text: `${action === "allow" ? "Allowed" : "Denied"}: policy revision ${data.revision}` }),
        changes.length ? el("ul", {}, ...changes) : el("div", { text: "Nothing to change: the policy already says so." }),
        el("a", { href: "/policies/runtime", text: "Runtime policy" }));
      $("#sel-result").hidden = false;
      st.selEdges.clear(); st.selNodes.clear();
      st.signature = "";
      await load();
      applySelection();
    } catch (e) {
      showError($("#sel-error"), errorText(e.detail ?? e.message));
      applySelection();
    }
  }
  function changeText(c) {
    if (c.rule && c.action) {
      const what = [...(c.dns || []).map((n) => `DNS ${n}`), ...(c.outbound || [])].join(", ");
      return `${[c.org, c.space, c.app].filter(Boolean).join(" / ")}: ${c.action} ${what || "(already so)"} in rule "${c.rule}"`;
    }
    return Object.entries(c).map(([k, v]) => `${k.replaceAll("_", " ")}: ${Array.isArray(v) ? v.join(", ") : typeof v === "object" && v ? JSON.stringify(v) : v}`).join(" · ");
  }
  $("#sel-allow").addEventListener("click", () => makeRule("allow"));
  $("#sel-deny").addEventListener("click", () => makeRule("deny"));

  // -- search, kinds, grouping, filters ------------------------------------------------------------
  function applySearch(zoom) {
    const q = $("#map-search").value.trim().toLowerCase();
    map.classList.toggle("searching", !!q);
    if (!st.lay) return;
    const hits = [];
    for (const [vid, g] of st.vnodeEls) {
      const p = st.lay.pos.get(vid);
      const match = !!q && p.ids.some((id) => { const n = st.nodes.get(id); return id.toLowerCase().includes(q) || (n.label || "").toLowerCase().includes(q); });
      g.classList.toggle("match", match);
      if (match) hits.push(p);
    }
    st.vedges.forEach((v, i) => st.vedgeEls[i].classList.toggle("match", !!q && (st.vnodeEls.get(v.source).classList.contains("match") || st.vnodeEls.get(v.target).classList.contains("match"))));
    $("#map-matches").textContent = q ? `${hits.length} match${hits.length === 1 ? "" : "es"}` : "";
    if (zoom && hits.length) {
      const xs = hits.map((p) => p.x), ys = hits.map((p) => p.y);
      fitTo(Math.min(...xs) - 40, Math.min(...ys) - 40, Math.max(...xs) + MAP_NODE_W + 40, Math.max(...ys) + MAP_NODE_H + 40, 1.5);
    }
  }
  $("#map-search").addEventListener("input", () => applySearch(false));
  $("#map-search").addEventListener("keydown", (ev) => {
    if (ev.key !== "Enter") return;
    ev.preventDefault();
    const q = ev.target.value.trim().toLowerCase();
    // a match inside a collapsed group: open that group first
    let opened = false;
    for (const n of st.data?.nodes || []) {
      const key = mapGroupKey(n);
      if (q && st.collapsed.has(key) && (n.id.toLowerCase().includes(q) || (n.label || "").toLowerCase().includes(q))) { st.collapsed.delete(key); opened = true; }
    }
    if (opened) render();
    applySearch(true);
  });
  for (const cb of $all("#map-kinds input")) {
    cb.addEventListener("change", () => { if (cb.checked) st.kinds.add(cb.dataset.kind); else st.kinds.delete(cb.dataset.kind); if (st.data) render(); });
  }
  $("#map-expand").addEventListener("click", () => { st.collapsed.clear(); if (st.data) { render(); fit(); } });
  $("#map-collapse").addEventListener("click", () => {
    for (const n of st.data?.nodes || []) st.collapsed.add(mapGroupKey(n));
    if (st.data) { render(); fit(); }
  });

  const initial = new URLSearchParams(location.search);
  for (const k of ["org", "space", "app"]) if (initial.get(k)) form.elements[k].value = initial.get(k);
  if (initial.get("flagged")) form.elements.flagged.checked = true;
  const reload = () => load().catch((e) => showError($("#map-error"), errorText(e.detail ?? e.message)));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const k of ["org", "space", "app"]) if (form.elements[k].value.trim()) q.set(k, form.elements[k].value.trim());
    if (form.elements.flagged.checked) q.set("flagged", "1");
    history.replaceState(null, "", q.toString() ? `?${q}` : location.pathname);
    st.autoCollapse = true;
    st.fitted = false;
    st.signature = "";
    reload();
  });
  reload();
  // live: the console pushes `map` when a profile changes (a report, an anomaly, accept/enforce, a
  // policy change); the page then reads the map again (a read that brings nothing new redraws nothing)
  let loading = null, again = false;
  const refresh = () => {
    if (loading) { again = true; return; }
    loading = load().catch((e) => showError($("#map-error"), errorText(e.detail ?? e.message)))
      .finally(() => { loading = null; if (again) { again = false; refresh(); } });
  };
  liveStream("/discovery/stream", { map: refresh, reconnected: refresh });
}

PAGES.discovery = initDiscovery;
