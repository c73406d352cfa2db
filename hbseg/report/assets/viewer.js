// The report page: a sortable table with a per-class Dice heat map, and a viewer that
// paints ground truth and each model's prediction over the radiograph.
// Data comes from data.js (window.HBSEG_DATA) and masks/<key>.js (hbsegMasks calls):
// pages opened from file:// may load scripts and images but not fetch() files.
"use strict";

(function () {
  const D = window.HBSEG_DATA;
  const N = D.classes.length;
  const ALL = 2 ** N - 1;
  const ABBR = { Trapezium: "Tpm", Trapezoid: "Tpd", Capitate: "Cap", Hamate: "Ham",
    Scaphoid: "Sca", Lunate: "Lun", Triquetrum: "Tri", Pisiform: "Pis", Radius: "Rad", Ulna: "Uln" };
  const abbr = (c) => ABBR[c] || c.replace("finger-", "f");
  const ERR = { tp: [46, 204, 113], fp: [255, 59, 92], fn: [56, 150, 255], wrong: [255, 208, 0] };
  // the page's word for a class: "bone" for the hands, "class" for any other data set
  const UNIT = D ? D.unit || "bone" : "bone";
  const UNITS = UNIT === "class" ? "classes" : `${UNIT}s`;
  const ERR_NAMES = { tp: "true positive", fp: "false positive", fn: "false negative",
    wrong: `another ${UNIT} (FP and FN)` };
  const MASK_CACHE = 4;  // images whose decoded masks stay in memory (16 MB per 2048² layer)

  const state = {
    order: D.images.map((_, i) => i),
    sort: { key: "mean", model: 0, asc: true },
    heat: 0,
    current: -1,
    visible: ALL,
    mode: "errors",
    opacity: 0.7,
    zoom: "fit",
    showGt: true,
    masks: new Map(),
    renders: 0,
  };

  const $ = (sel) => document.querySelector(sel);
  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c);
    return e;
  }
  const fmt = (v) => v.toFixed(3);
  const mean = (a) => a.reduce((s, v) => s + v, 0) / a.length;

  // Dice → colour: 1.0 is a quiet green, 0.5 and below red; the scale is stretched a little
  // near 1, where most bones of a trained model are
  function heat(d) {
    const u = Math.min(1, (Math.max(0, 1 - d) / 0.5) ** 0.75);
    const stops = [[0, [35, 92, 66]], [0.35, [200, 170, 60]], [0.7, [225, 90, 40]], [1, [190, 20, 45]]];
    for (let i = 1; i < stops.length; i++) {
      if (u <= stops[i][0]) {
        const [u0, c0] = stops[i - 1], [u1, c1] = stops[i], t = (u - u0) / (u1 - u0);
        return `rgb(${c0.map((v, k) => Math.round(v + t * (c1[k] - v))).join(",")})`;
      }
    }
    return "rgb(190,20,45)";
  }

  function showError(msg) {
    const e = $("#error");
    e.textContent = msg;
    e.hidden = false;
  }

  // ---------- header and table ----------

  function buildHeader() {
    document.title = D.title;
    $("#title").textContent = "Where the model fails";
    const s = $("#summary");
    s.append(el("span", { class: "muted", text: `${D.images.length} images · ${D.data} · ${D.created}` }));
    D.models.forEach((m) => s.append(el("span", { class: "chip", title: m.path },
      el("b", { text: m.name }), ` mean Dice ${m.mean.toFixed(4)}`)));
    const sel = $("#heat-model");
    D.models.forEach((m, i) => sel.append(el("option", { value: i, text: m.name })));
    sel.addEventListener("change", () => { state.heat = +sel.value; renderTable(); });
  }

  function sortValue(i) {
    const im = D.images[i], k = state.sort;
    if (k.key === "name") return im.name;
    if (k.key === "mean") return mean(im.dice[k.model]);
    return im.dice[k.model][k.cls];
  }

  function sortRows() {
    const dir = state.sort.asc ? 1 : -1;
    state.order.sort((a, b) => {
      const va = sortValue(a), vb = sortValue(b);
      const c = va < vb ? -1 : va > vb ? 1 : 0;
      return c * dir || D.images[a].name.localeCompare(D.images[b].name);
    });
  }

  function setSort(key) {
    const s = state.sort;
    const same = s.key === key.key && s.model === key.model && s.cls === key.cls;
    state.sort = { ...key, asc: same ? !s.asc : true };
    renderTable();
  }

  function renderTable() {
    sortRows();
    const thead = $("#images thead"), tbody = $("#images tbody");
    thead.textContent = "";
    tbody.textContent = "";
    const s = state.sort, arrow = s.asc ? " ▲" : " ▼";
    const h = el("tr");
    h.append(el("th", { class: "num", text: "#" }));
    h.append(el("th", { class: "pid", text: "ID" }));
    h.append(el("th", { class: "name sortable", text: "image" + (s.key === "name" ? arrow : ""),
      onclick: () => setSort({ key: "name" }) }));
    D.models.forEach((m, i) => h.append(el("th", {
      class: "mean sortable", title: `${m.name}: mean Dice of each image; click to sort`,
      text: (D.models.length > 1 ? m.name : "mean Dice") + (s.key === "mean" && s.model === i ? arrow : ""),
      onclick: () => setSort({ key: "mean", model: i }) })));
    D.classes.forEach((c, k) => h.append(el("th", {
      class: "cls sortable" + (s.key === "cls" && s.cls === k ? " sorted" : ""),
      title: `${c}: click to sort by ${D.models[state.heat].name}'s Dice`,
      onclick: () => setSort({ key: "cls", model: state.heat, cls: k }) }, el("span", { text: abbr(c) }))));
    thead.append(h);
    // the per-class means of the heat-map model, as a first, fixed row
    const avg = el("tr", { class: "avg" });
    avg.append(el("th", { class: "num" }), el("th", { class: "pid" }), el("th", { class: "name", text: "all images" }));
    D.models.forEach((m) => avg.append(el("th", { class: "mean", text: fmt(m.mean) })));
    D.models[state.heat].per_class.forEach((v, k) => avg.append(el("th", {
      class: "cell", style: `background:${heat(v)}`, title: `${D.classes[k]}: ${v.toFixed(4)}` })));
    thead.append(avg);

    state.order.forEach((i, rank) => {
      const im = D.images[i];
      const tr = el("tr", { "data-index": i, "data-name": im.name });
      if (i === state.current) tr.classList.add("selected");
      tr.addEventListener("click", () => select(i));
      tr.append(el("td", { class: "num", text: rank + 1 }));
      tr.append(el("td", { class: "pid", text: im.id }));
      tr.append(el("td", { class: "name", title: `${im.name} (${im.id}, fold ${im.fold})`,
        text: im.name.replace(/\.png$/i, "") }));
      im.dice.forEach((d) => {
        const v = mean(d);
        tr.append(el("td", { class: "mean", text: fmt(v), style: `color:${v < 0.999 ? heat(v) : "inherit"}` }));
      });
      im.dice[state.heat].forEach((v, k) => tr.append(el("td", {
        class: "cell", style: `background:${heat(v)}`, title: `${D.classes[k]}: ${v.toFixed(4)}`,
        onclick: (e) => { e.stopPropagation(); state.visible = 2 ** k; syncBoxes(); select(i); } })));
      tbody.append(tr);
    });
  }

  // ---------- class toggles and controls ----------

  function buildControls() {
    const boxes = $("#class-boxes");
    D.classes.forEach((c, k) => {
      const [r, g, b] = D.palette[k];
      boxes.append(el("label", { class: "cbox", title: c },
        el("input", { type: "checkbox", id: `cls-${k}`, "data-class": c, checked: "" }),
        el("i", { style: `background:rgb(${r},${g},${b})` }), abbr(c)));
      $(`#cls-${k}`).addEventListener("change", (e) => {
        state.visible = e.target.checked ? state.visible | 2 ** k : state.visible & ~(2 ** k);
        paintAll();
      });
    });
    $("#all-classes").addEventListener("click", () => { state.visible = ALL; syncBoxes(); paintAll(); });
    $("#no-classes").addEventListener("click", () => { state.visible = 0; syncBoxes(); paintAll(); });
    document.querySelectorAll("input[name=mode]").forEach((r) => r.addEventListener("change", () => {
      state.mode = r.value;
      buildLegend();
      paintAll();
    }));
    const op = $("#opacity");
    op.addEventListener("input", () => { state.opacity = op.value / 100; paintAll(); });
    state.opacity = op.value / 100;
    document.querySelectorAll("[data-zoom]").forEach((b) => b.addEventListener("click", () => {
      setZoom(b.dataset.zoom === "fit" ? "fit" : +b.dataset.zoom);
    }));
    $("#show-gt").addEventListener("change", (e) => { state.showGt = e.target.checked; layoutPanels(); });
    document.addEventListener("keydown", (e) => {
      if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT") return;
      const pos = state.order.indexOf(state.current);
      if (e.key === "ArrowDown" || e.key === "j") select(state.order[Math.min(state.order.length - 1, pos + 1)]);
      else if (e.key === "ArrowUp" || e.key === "k") select(state.order[Math.max(0, pos - 1)]);
      else return;
      e.preventDefault();
      document.querySelector("#images tr.selected")?.scrollIntoView({ block: "nearest" });
    });
    buildLegend();
  }

  function syncBoxes() {
    for (let k = 0; k < N; k++) $(`#cls-${k}`).checked = (state.visible & 2 ** k) !== 0;
  }

  function buildLegend() {
    const lg = $("#legend");
    lg.textContent = "";
    if (state.mode !== "errors") return;
    for (const [k, c] of Object.entries(ERR)) {
      lg.append(el("span", { class: "key" }, el("i", { style: `background:rgb(${c.join(",")})` }),
        ERR_NAMES[k]));
    }
  }

  // ---------- panels ----------

  const panels = [];  // {model: -1 for ground truth | model index, root, viewport, stage, img, canvas}

  function buildPanels() {
    const box = $("#panels");
    const make = (model, title) => {
      const img = el("img", { alt: "", draggable: "false" });
      const canvas = el("canvas");
      const stage = el("div", { class: "stage" }, img, canvas);
      const viewport = el("div", { class: "viewport" }, stage);
      const dice = el("span", { class: "pdice" });
      const root = el("div", { class: "panel", "data-model": model < 0 ? "gt" : String(model) },
        el("div", { class: "panel-head" }, el("span", { class: "pname", text: title }), dice), viewport);
      box.append(root);
      const p = { model, root, viewport, stage, img, canvas, dice };
      panels.push(p);
      hookPanZoom(p);
    };
    make(-1, "ground truth");
    D.models.forEach((m, i) => make(i, m.name));
    window.addEventListener("resize", () => applyZoom());
  }

  function layoutPanels() {
    panels[0].root.hidden = !state.showGt;
    applyZoom();
  }

  function fitScale(p, W) {
    return p.viewport.clientWidth / W;
  }

  function currentSize() {
    const im = D.images[state.current];
    return im ? [im.width, im.height] : [1, 1];
  }

  function applyZoom(focus) {
    const [W, H] = currentSize();
    const im = D.images[state.current];
    let sync = null;
    for (const p of panels) {
      if (p.root.hidden) continue;
      const fit = fitScale(p, W);
      const s = state.zoom === "fit" ? fit : state.zoom;
      p.viewport.style.height = `${Math.round(Math.min(H * fit, window.innerHeight * 0.78))}px`;
      p.stage.style.width = `${W * s}px`;
      p.stage.style.height = `${H * s}px`;
      p.viewport.classList.toggle("zoomed", state.zoom !== "fit");
      p.canvas.classList.toggle("pixelated", s * blockFactor(p, W) > 1);
      // the display-size picture is enough until it would be stretched
      if (im && im.full !== im.img && W * s > (p.img.naturalWidth || W) * 1.05 && !p.img.dataset.full) {
        p.img.dataset.full = "1";
        const hi = new Image();
        hi.onload = () => { if (state.current >= 0 && D.images[state.current].full === im.full) p.img.src = hi.src; };
        hi.src = im.full;
      }
      if (focus) {
        const vw = p.viewport.clientWidth, vh = p.viewport.clientHeight;
        if (!sync) sync = [focus[0] * W * s - vw / 2, focus[1] * H * s - vh / 2];
        p.viewport.scrollLeft = sync[0];
        p.viewport.scrollTop = sync[1];
      }
    }
    document.querySelectorAll("[data-zoom]").forEach((b) => {
      b.classList.toggle("on", String(state.zoom) === b.dataset.zoom);
    });
    if (panels.some((p) => !p.root.hidden && p.factor && p.factor !== blockFactor(p, W))) paintAll();
  }

  function setZoom(z, focus) {
    if (!focus) {
      // keep the centre of the first visible panel in view
      const p = panels.find((q) => !q.root.hidden);
      const [W, H] = currentSize();
      const s = p.stage.clientWidth / W;
      focus = [(p.viewport.scrollLeft + p.viewport.clientWidth / 2) / (W * s),
        (p.viewport.scrollTop + p.viewport.clientHeight / 2) / (H * s)];
    }
    state.zoom = z;
    applyZoom(focus);
  }

  function hookPanZoom(p) {
    let drag = null;
    p.viewport.addEventListener("scroll", () => {
      for (const q of panels) {
        if (q === p || q.root.hidden) continue;
        q.viewport.scrollLeft = p.viewport.scrollLeft;
        q.viewport.scrollTop = p.viewport.scrollTop;
      }
    });
    p.viewport.addEventListener("pointerdown", (e) => {
      drag = { x: e.clientX, y: e.clientY, sl: p.viewport.scrollLeft, st: p.viewport.scrollTop, moved: false };
      p.viewport.setPointerCapture(e.pointerId);
    });
    p.viewport.addEventListener("pointermove", (e) => {
      probe(p, e);
      if (!drag) return;
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 4) drag.moved = true;
      if (drag.moved) {
        p.viewport.scrollLeft = drag.sl - dx;
        p.viewport.scrollTop = drag.st - dy;
      }
    });
    p.viewport.addEventListener("pointerup", (e) => {
      const d = drag;
      drag = null;
      if (!d || d.moved) return;
      // a click zooms in one step at that point; at 400% it goes back to fit
      const r = p.stage.getBoundingClientRect();
      const f = [(e.clientX - r.left) / r.width, (e.clientY - r.top) / r.height];
      const steps = ["fit", 1, 2, 4];
      const next = steps[(steps.indexOf(state.zoom) + 1) % steps.length];
      setZoom(next, next === "fit" ? [0.5, 0.5] : f);
    });
    p.viewport.addEventListener("pointerleave", () => { $("#probe").innerHTML = "&nbsp;"; });
  }

  // what lies under the pointer: the pixel and the bones in ground truth and prediction
  function probe(p, e) {
    const m = state.masks.get(D.images[state.current]?.key);
    if (!m || !m.ready) return;
    const r = p.stage.getBoundingClientRect();
    const x = Math.floor((e.clientX - r.left) / r.width * m.width);
    const y = Math.floor((e.clientY - r.top) / r.height * m.height);
    if (x < 0 || y < 0 || x >= m.width || y >= m.height) return;
    const i = y * m.width + x;
    const names = (bits) => {
      const out = [];
      for (let k = 0; k < N; k++) if (bits & 2 ** k) out.push(abbr(D.classes[k]));
      return out.length ? out.join(" ") : "—";
    };
    let text = `x ${x}, y ${y} · ground truth: ${names(m.gt[i])}`;
    D.models.forEach((mod, k) => { text += ` · ${mod.name}: ${names(m.preds[k][i])}`; });
    $("#probe").textContent = text;
  }

  // ---------- masks ----------

  const waiting = new Map();
  window.hbsegMasks = function (key, gt, preds) {
    const w = waiting.get(key);
    if (w) { waiting.delete(key); w({ gt, preds }); }
  };

  function loadMasks(key) {
    if (state.masks.has(key)) return state.masks.get(key).promise;
    const entry = { ready: false };
    entry.promise = new Promise((resolve, reject) => {
      waiting.set(key, resolve);
      const s = el("script", { src: `masks/${key}.js` });
      s.onerror = () => reject(new Error(`cannot load masks/${key}.js`));
      s.onload = () => s.remove();
      document.head.append(s);
    }).then(async ({ gt, preds }) => {
      const layers = await Promise.all([gt, ...preds].map(hbsegDecodePackedPng));
      Object.assign(entry, { width: layers[0].width, height: layers[0].height, gt: layers[0].bits,
        preds: layers.slice(1).map((l) => l.bits), ready: true });
      return entry;
    });
    state.masks.set(key, entry);
    while (state.masks.size > MASK_CACHE) state.masks.delete(state.masks.keys().next().value);
    return entry.promise;
  }

  // ---------- painting ----------

  const rgba = (c, a) => ((Math.round(a * 255) << 24) | (c[2] << 16) | (c[1] << 8) | c[0]) >>> 0;

  // Each pixel gets a code; codes are painted through a colour table. When the picture is
  // shown smaller than the mask, an f×f block of mask pixels becomes one canvas pixel that
  // keeps the block's highest code, so a one-pixel error or bone outline stays visible at
  // "fit" instead of being averaged away by the browser's downscaling.
  // bones: 0 nothing, 1+c fill of class c, 33+c outline of class c
  function codeClasses(code, bits, W, H, f, vis) {
    const w2 = Math.ceil(W / f);
    for (let y = 0, i = 0; y < H; y++) {
      const row = ((y / f) | 0) * w2;
      for (let x = 0; x < W; x++, i++) {
        const v = bits[i] & vis;
        if (!v) continue;
        const inner = (y > 0 ? bits[i - W] : 0) & (y < H - 1 ? bits[i + W] : 0)
          & (x > 0 ? bits[i - 1] : 0) & (x < W - 1 ? bits[i + 1] : 0);
        const e = v & ~inner;
        const c = e ? 64 - Math.clz32(e) : 32 - Math.clz32(v);
        const j = row + ((x / f) | 0);
        if (c > code[j]) code[j] = c;
      }
    }
  }

  // errors: 0 nothing, 1 true positive, 2 false positive, 3 false negative, 4 both
  function codeErrors(code, gt, pred, W, H, f, vis) {
    const w2 = Math.ceil(W / f);
    for (let y = 0, i = 0; y < H; y++) {
      const row = ((y / f) | 0) * w2;
      for (let x = 0; x < W; x++, i++) {
        const g = gt[i] & vis, p = pred[i] & vis;
        if (!(g | p)) continue;
        const fp = p & ~g, fn = g & ~p;
        const c = fp ? (fn ? 4 : 2) : fn ? 3 : 1;
        const j = row + ((x / f) | 0);
        if (c > code[j]) code[j] = c;
      }
    }
  }

  function colourTable(kind) {
    const a = state.opacity;
    if (kind === "errors") {
      return Uint32Array.from([0, rgba(ERR.tp, a * 0.55), rgba(ERR.fp, a), rgba(ERR.fn, a), rgba(ERR.wrong, a)]);
    }
    const t = new Uint32Array(65);
    D.palette.forEach((c, k) => {
      t[1 + k] = rgba(c, a * 0.75);
      t[33 + k] = rgba(c, Math.min(1, a * 1.4));
    });
    return t;
  }

  function blockFactor(p, W) {
    const s = state.zoom === "fit" ? fitScale(p, W) : state.zoom;
    return Math.max(1, Math.floor(1 / s));
  }

  function paint(p, m) {
    const W = m.width, H = m.height, f = blockFactor(p, W);
    const w2 = Math.ceil(W / f), h2 = Math.ceil(H / f);
    if (p.canvas.width !== w2 || p.canvas.height !== h2) {
      p.canvas.width = w2;
      p.canvas.height = h2;
    }
    p.factor = f;
    const code = new Uint8Array(w2 * h2);
    const errors = p.model >= 0 && state.mode === "errors";
    if (p.model < 0) codeClasses(code, m.gt, W, H, f, state.visible);
    else if (!errors) codeClasses(code, m.preds[p.model], W, H, f, state.visible);
    else codeErrors(code, m.gt, m.preds[p.model], W, H, f, state.visible);
    const table = colourTable(errors ? "errors" : "classes");
    const ctx = p.canvas.getContext("2d");
    const data = ctx.createImageData(w2, h2);
    const out = new Uint32Array(data.data.buffer);
    for (let j = 0; j < code.length; j++) if (code[j]) out[j] = table[code[j]];
    ctx.putImageData(data, 0, 0);
  }

  function paintAll() {
    const im = D.images[state.current];
    const m = im && state.masks.get(im.key);
    if (!m || !m.ready) return;
    for (const p of panels) paint(p, m);
    panelDice(im);
    state.renders++;
    document.body.dataset.renders = state.renders;
  }

  // Dice of the visible bones only, so soloing a bone shows its score in every panel
  function panelDice(im) {
    const ks = [];
    for (let k = 0; k < N; k++) if (state.visible & 2 ** k) ks.push(k);
    for (const p of panels) {
      if (p.model < 0) { p.dice.textContent = `${ks.length}/${N} ${UNITS}`; continue; }
      const d = im.dice[p.model];
      p.dice.textContent = ks.length ? `Dice ${fmt(mean(ks.map((k) => d[k])))}${ks.length < N ? ` (shown ${UNITS})` : ""}` : "";
      p.dice.style.color = ks.length ? heat(mean(ks.map((k) => d[k]))) : "";
    }
  }

  // ---------- selecting an image ----------

  function imageInfo(im) {
    const info = $("#image-info");
    info.textContent = "";
    info.append(el("span", { class: "muted", text: `${im.id} · fold ${im.fold} · ${im.width}×${im.height}` }));
    D.models.forEach((m, i) => {
      const d = im.dice[i];
      const worst = d.map((v, k) => [v, k]).filter(([v]) => v < 0.999).sort((a, b) => a[0] - b[0]).slice(0, 6);
      const row = el("div", { class: "worst" }, el("b", { text: m.name }), ` mean ${fmt(mean(d))}`);
      if (worst.length) row.append(" · worst: ");
      worst.forEach(([v, k]) => row.append(el("button", {
        class: "bone", style: `border-color:${heat(v)}`, title: `show ${D.classes[k]} alone`,
        text: `${abbr(D.classes[k])} ${fmt(v)}`,
        onclick: () => { state.visible = 2 ** k; syncBoxes(); paintAll(); } })));
      info.append(row);
    });
  }

  async function select(i) {
    if (i === undefined || i < 0) return;
    const im = D.images[i];
    state.current = i;
    document.body.dataset.current = im.key;
    document.querySelectorAll("#images tr.selected").forEach((r) => r.classList.remove("selected"));
    document.querySelector(`#images tr[data-index="${i}"]`)?.classList.add("selected");
    $("#image-title").textContent = im.name;
    imageInfo(im);
    for (const p of panels) {
      delete p.img.dataset.full;
      p.img.src = im.img;
    }
    applyZoom(state.zoom === "fit" ? null : [0.5, 0.5]);
    try {
      await loadMasks(im.key);
    } catch (err) {
      showError(`${err.message}: the report folder is incomplete, or this browser cannot decode PNG masks.`);
      return;
    }
    if (state.current === i) paintAll();
  }

  function main() {
    if (!D) { showError("data.js is missing or did not load: open index.html from inside the report folder."); return; }
    if (typeof DecompressionStream === "undefined") {
      showError("This browser lacks DecompressionStream (Chrome 80+, Firefox 113+, Safari 16.4+): masks cannot be shown.");
    }
    $("#mode-classes").textContent = UNITS;
    $("#hint-unit").textContent = UNIT;
    buildHeader();
    buildControls();
    buildPanels();
    renderTable();
    layoutPanels();
    select(state.order[0]);
  }

  main();
})();
