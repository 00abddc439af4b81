// The control page of an unstable show: an OSCQuery websocket client (LISTEN, binary OSC both
// ways) that draws one control per parameter from /control/show.json. No libraries, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);
const controls = new Map();   // OSC address -> {set(value), busy()}
let ws = null;
let schema = null;

// -- OSC over the websocket: the few types this show uses -----------------------------------------

function pad4(n) { return (n + 3) & ~3; }

function oscMessage(address, type, value) {
  const enc = new TextEncoder();
  const a = enc.encode(address), t = enc.encode("," + type);
  const size = pad4(a.length + 1) + pad4(t.length + 1) + (type === "f" || type === "i" ? 4 : 0);
  const buf = new ArrayBuffer(size), bytes = new Uint8Array(buf), view = new DataView(buf);
  bytes.set(a, 0);
  let off = pad4(a.length + 1);
  bytes.set(t, off);
  off += pad4(t.length + 1);
  if (type === "f") view.setFloat32(off, value);
  if (type === "i") view.setInt32(off, value);
  return buf;
}

function readString(bytes, off) {
  let end = off;
  while (end < bytes.length && bytes[end] !== 0) end++;
  return [new TextDecoder().decode(bytes.subarray(off, end)), pad4(end + 1)];
}

function parseOsc(buf) {
  const bytes = new Uint8Array(buf), view = new DataView(buf);
  let [address, off] = readString(bytes, 0);
  let types;
  [types, off] = readString(bytes, off);
  const args = [];
  for (const t of types.slice(1)) {
    if (t === "f") { args.push(view.getFloat32(off)); off += 4; }
    else if (t === "i") { args.push(view.getInt32(off)); off += 4; }
    else if (t === "T") args.push(true);
    else if (t === "F") args.push(false);
  }
  return [address, args];
}

function send(address, type, value) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(oscMessage(address, type, value));
}

// -- the mapping of a 0..1 fader onto a parameter (ParamSpec.from_unit) ---------------------------

function fromUnit(p, u) {
  let v = p.log ? Math.exp(Math.log(p.lo) + u * (Math.log(p.hi) - Math.log(p.lo))) : p.lo + u * (p.hi - p.lo);
  if (p.kind !== "float") v = Math.round(v);
  return v;
}

// ParamSpec.to_unit: where a fader of a parameter whose address takes its own units (osc_units:
// the tempo in BPM) stands for a value it is sent back.
function toUnit(p, v) {
  if (p.hi === p.lo) return 0;
  return p.log ? (Math.log(v) - Math.log(p.lo)) / (Math.log(p.hi) - Math.log(p.lo)) : (v - p.lo) / (p.hi - p.lo);
}

function show(p, v) {
  const digits = Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : Math.abs(v) >= 1 ? 2 : 3;
  const text = p.kind === "float" ? (p.log && v < 0.01 ? v.toExponential(2) : v.toFixed(digits)) : String(v);
  return p.unit ? `${text} ${p.unit}` : text;
}

// -- controls -------------------------------------------------------------------------------------

// The label an artist reads: the parameter's name in words (its doc says what it does underneath).
function plain(name) {
  const dir = /^dir(\d+)$/.exec(name);
  if (dir) return `direction ${dir[1]}`;
  return name.replaceAll("_", " ");
}

function fader(p, parent, label) {
  const row = document.createElement("div");
  row.className = "param";
  row.dataset.learn = p.address;   // MIDI learn: a click anywhere on the row names it
  const id = "p" + p.address.replaceAll("/", "-");
  const name = document.createElement("label");
  name.htmlFor = id;
  name.textContent = label || plain(p.name);
  // What only a technician needs: the OSC address and the fader's log mapping.
  const tech = document.createElement("span");
  tech.className = "tech";
  tech.textContent = `${p.address}${p.log ? " (log)" : ""}`;
  name.append(tech);
  const out = document.createElement("output");
  out.htmlFor = id;
  const doc = document.createElement("div");
  doc.className = "doc";
  doc.textContent = p.doc || "";
  let input;
  if (p.kind === "toggle") {
    input = document.createElement("input");
    input.type = "checkbox";
    input.checked = p.value >= 0.5;
    input.addEventListener("change", () => {
      send(p.address, input.checked ? "T" : "F");
      out.textContent = input.checked ? "on" : "off";
    });
    out.textContent = input.checked ? "on" : "off";
    controls.set(p.address, {
      set: (v) => { input.checked = !!v && v >= 0.5 || v === true; out.textContent = input.checked ? "on" : "off"; },
      busy: () => false,
    });
  } else {
    input = document.createElement("input");
    input.type = "range";
    input.min = 0; input.max = 1;
    input.step = p.kind === "int" && p.hi > p.lo ? 1 / (p.hi - p.lo) : 0.001;
    input.value = p.unit_value;
    const moved = () => {
      const u = parseFloat(input.value);
      send(p.address, "f", p.osc_units ? fromUnit(p, u) : u);   // tempo's address takes BPM
      out.textContent = show(p, fromUnit(p, u));
    };
    input.addEventListener("input", moved);   // the keyboard; fingers and mice go through the strip
    out.textContent = show(p, p.value);
    const strip = touchStrip(input, moved);
    controls.set(p.address, {
      set: (x) => {
        const u = p.osc_units ? toUnit(p, x) : x;
        input.value = u; out.textContent = show(p, fromUnit(p, u));
      },
      busy: strip.busy,   // a change from elsewhere never yanks the fader out of a finger
    });
  }
  input.id = id;
  input.dataset.address = p.address;
  input.setAttribute("aria-label", name.firstChild.textContent);
  row.append(name, out, doc, input.parentElement || input);
  parent.append(row);
}

// A fader's touch strip: the range input sits in a 48 px strip that takes the pointer itself, because
// a native range jumps to a finger as soon as it lands, and on a phone most of the screen is faders:
// every scroll would play one. Here a finger plays a fader by a tap or a sideways drag; an upward or
// downward swipe scrolls the page (the browser takes it: pointercancel) and leaves the value alone.
// A mouse plays it at once, as a range does on a desktop.
function touchStrip(input, moved) {
  const strip = document.createElement("div");
  strip.className = "strip";
  strip.append(input);
  let down = null, dragging = false;
  const thumb = () => parseFloat(getComputedStyle(input).getPropertyValue("--thumb")) || 0;
  const at = (x) => {
    const r = input.getBoundingClientRect(), t = thumb();
    input.value = Math.min(1, Math.max(0, (x - r.left - t / 2) / (r.width - t)));
    moved();
  };
  strip.addEventListener("pointerdown", (e) => {
    down = { x: e.clientX, y: e.clientY, touch: e.pointerType !== "mouse" };
    strip.setPointerCapture(e.pointerId);
    dragging = !down.touch;
    if (dragging) at(e.clientX);
  });
  strip.addEventListener("pointermove", (e) => {
    if (!down) return;
    if (!dragging && Math.abs(e.clientX - down.x) > 8 && Math.abs(e.clientX - down.x) > Math.abs(e.clientY - down.y)) dragging = true;
    if (dragging) at(e.clientX);
  });
  strip.addEventListener("pointerup", (e) => {
    if (down && !dragging && Math.hypot(e.clientX - down.x, e.clientY - down.y) <= 8) at(e.clientX);   // a tap
    down = null; dragging = false;
  });
  strip.addEventListener("pointercancel", () => { down = null; dragging = false; });
  return { busy: () => down !== null };
}

// "/unstable/eq/directions/refresh" -> "refresh directions": the verb first, as on a button.
function actionLabel(address) {
  const words = address.split("/").slice(3);
  return words.length > 1 ? [words[words.length - 1], ...words.slice(0, -1)].join(" ") : words.join(" ");
}

function build(s) {
  schema = s;
  $("title").textContent = s.name;
  document.title = `unstable: ${s.name}`;
  const scenes = $("scenes");
  s.scenes.forEach((name, i) => {
    const b = document.createElement("button");
    b.textContent = name || `scene ${i + 1}`;
    b.dataset.scene = i;
    b.dataset.address = s.scene_address;
    b.addEventListener("click", () => { send(s.scene_address, "i", i); markScene(i); });
    scenes.append(b);
  });
  controls.set(s.scene_address, { set: (i) => markScene(i), busy: () => false });
  const rec = $("record");
  rec.addEventListener("click", () => {
    const on = rec.getAttribute("aria-pressed") !== "true";
    send(s.record_address, on ? "T" : "F");
    rec.setAttribute("aria-pressed", String(on));
  });
  controls.set(s.record_address, { set: (v) => rec.setAttribute("aria-pressed", String(v === true || v >= 0.5)), busy: () => false });
  $("still").addEventListener("click", () => send(s.still_address, "N"));
  if (s.presets) presets(s.presets);
  const groups = $("groups");
  for (const g of s.groups) {
    if (g.piece === "show") {
      for (const p of g.params) {
        if (p.name === "master_fade") fader(p, $("master"), "master fade");
        else if (p.name === "tempo") fader(p, $("tempo"), "tempo");
        else if (p.name === "tap") tapButton(p);
        else if (p.name === "midi_learn") learnButton(p);
      }
      continue;
    }
    const box = document.createElement("div");
    box.className = "group";
    box.id = `group-${g.piece}`;
    const h = document.createElement("h2");
    h.textContent = g.piece;
    box.append(h);
    for (const p of g.params) fader(p, box);
    if (g.actions.length) {
      const row = document.createElement("div");
      row.className = "row";
      for (const a of g.actions) {
        const b = document.createElement("button");
        b.textContent = actionLabel(a);
        b.dataset.address = a;
        b.addEventListener("click", () => send(a, "N"));
        row.append(b);
      }
      box.append(row);
    }
    groups.append(box);
  }
  const sceneNow = s.groups.find((g) => g.piece === "show")?.params.find((p) => p.name === "scene");
  if (sceneNow) markScene(sceneNow.value);
  const details = $("details");
  details.addEventListener("click", () => {
    const on = document.body.classList.toggle("details");
    details.setAttribute("aria-pressed", String(on));
  });
}

// -- presets: save the live state, recall or morph (unstable.control.presets) ------------------------

function oscArgs(address, types, values) {
  // Strings and floats: /unstable/preset/save s, /recall s, /morph s f.
  const enc = new TextEncoder(), parts = [];
  const str = (text) => { const b = enc.encode(text), out = new Uint8Array(pad4(b.length + 1)); out.set(b); return out; };
  parts.push(str(address), str("," + types));
  types.split("").forEach((t, i) => {
    if (t === "s") parts.push(str(values[i]));
    else { const b = new ArrayBuffer(4); new DataView(b).setFloat32(0, values[i]); parts.push(new Uint8Array(b)); }
  });
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) { out.set(p, off); off += p.length; }
  return out.buffer;
}

function sendArgs(address, types, values) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(oscArgs(address, types, values));
}

function presets(p) {
  $("presets").hidden = false;
  const list = $("preset-list");
  const draw = (names) => {
    list.replaceChildren(...names.map((name) => {
      const li = document.createElement("li"), recall = document.createElement("button"), morph = document.createElement("button");
      recall.textContent = name;
      recall.title = "recall at once";
      recall.addEventListener("click", () => sendArgs(p.recall, "s", [name]));
      morph.textContent = "morph";
      morph.title = "morph to it over the seconds above";
      morph.addEventListener("click", () => sendArgs(p.morph, "sf", [name, Number($("preset-seconds").value) || 0]));
      li.append(recall, morph);
      return li;
    }));
  };
  draw(p.names);
  $("preset-save").addEventListener("click", () => {
    const name = $("preset-name").value.trim();
    if (!name) return;
    sendArgs(p.save, "s", [name]);
    // Saved between frames, then listed: ask for the list again a moment later.
    setTimeout(() => fetch("/control/show.json").then((r) => r.json()).then((s) => draw(s.presets.names)), 600);
  });
}

// -- tempo and MIDI learn ----------------------------------------------------------------------------

function tapButton(p) {
  const b = document.createElement("button");
  b.textContent = "tap";
  b.title = "tap tempo: tap on the beat";
  b.dataset.address = p.address;
  b.addEventListener("click", () => send(p.address, "T"));
  const row = document.createElement("div");
  row.className = "row";
  row.append(b);
  $("tempo").append(row);
}

// The show's parameters in the store's order: midi_learn = 2 + k makes the k-th the learn target.
function keyIndex(s) {
  const index = new Map();
  let k = 0;
  for (const g of s.groups) for (const p of g.params) index.set(p.address, k++);
  const scene = s.groups.find((g) => g.piece === "show")?.params.find((p) => p.name === "scene");
  if (scene) index.set(s.scene_address, index.get(scene.address));
  if (index.has("/unstable/show/record")) index.set(s.record_address, index.get("/unstable/show/record"));
  return index;
}

let learning = false;

function learnButton(p) {
  $("midi").hidden = false;
  const b = $("learn");
  const raw = p.address + "/raw";
  const index = keyIndex(schema);
  const mark = (on) => {
    const was = learning;
    learning = on;
    b.setAttribute("aria-pressed", String(on));
    $("learn-note").textContent = on ? "click a control, then move a knob or press a pad" : "";
    if (was && !on) fetch("/control/show.json").then((r) => r.json()).then((s) => bindings(s.midi));
  };
  b.addEventListener("click", () => { send(raw, "i", learning ? 0 : 1); mark(!learning); });
  controls.set(p.address, { set: (u) => mark(Math.round(u * (p.hi - p.lo)) >= 1), busy: () => false });
  // In learn mode a click on any control names it (before the control's own handler runs).
  document.addEventListener("pointerdown", (ev) => {
    const el = learning && ev.target.closest && ev.target.closest("[data-address], [data-learn]");
    const address = el && (el.dataset.address || el.dataset.learn);
    if (!el || el === b || !index.has(address)) return;
    send(raw, "i", 2 + index.get(address));
  }, true);
  bindings(schema.midi);
}

function bindings(list) {
  const ul = $("bindings");
  ul.replaceChildren();
  for (const m of list || []) {
    const li = document.createElement("li");
    li.textContent = `${m.source} → ${m.target}${m.learned ? " (learned)" : ""}`;
    ul.append(li);
  }
}

function markScene(i) {
  for (const b of document.querySelectorAll("#scenes button")) b.classList.toggle("current", Number(b.dataset.scene) === i);
}

// -- the websocket ----------------------------------------------------------------------------------

function connect() {
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/`;
  ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => {
    $("status").textContent = "live";
    $("status").className = "on";
    for (const address of controls.keys()) ws.send(JSON.stringify({ COMMAND: "LISTEN", DATA: address }));
    ws.send(JSON.stringify({ COMMAND: "TELEMETRY", DATA: true }));
  };
  ws.onmessage = (ev) => {
    if (typeof ev.data === "string") {
      const msg = JSON.parse(ev.data);
      if (msg.COMMAND === "TELEMETRY") telemetry(msg.DATA);
      // The OSCQuery tree followed a scene: news for OSCQuery tools, not for the artist.
      else if (msg.COMMAND === "PATH_CHANGED") $("changes").textContent = `OSCQuery: address space changed at ${msg.DATA}`;
      return;
    }
    const [address, args] = parseOsc(ev.data);
    const c = controls.get(address);
    if (c && !c.busy() && args.length) c.set(args[0]);
  };
  ws.onclose = () => {
    $("status").textContent = "reconnecting…";
    $("status").className = "off";
    setTimeout(connect, 1000);
  };
}

function telemetry(t) {
  // In words for the artist; the numbers and loss names for the technician, behind "details".
  const lines = [`fps ${t.fps ?? "?"}  frame p99 ${t.frame_ms_p99 ?? "?"} ms  late ${t.late_frames ?? 0}  scene ${t.scene ?? "?"}${t.recording ? "  ● recording" : ""}`];
  const plainLines = [`${t.fps ?? "?"} frames a second${t.recording ? " · recording" : ""}`];
  for (const [piece, rate] of Object.entries(t.steps_per_s || {})) {
    const losses = Object.entries((t.losses || {})[piece] || {}).slice(0, 4)
      .map(([k, v]) => `${k} ${Number(v).toPrecision(3)}`).join("  ");
    const g = (t.guard || {})[piece] || {};
    const guard = g.recoveries ? `  guard: ${g.recoveries} undone${g.last ? ` (${g.last})` : ""}` : "";
    lines.push(`${piece}: ${rate} steps/s  ${losses}${guard}`);
    const undone = g.recoveries ? ` · ${g.recoveries} bad step${g.recoveries === 1 ? "" : "s"} undone` : "";
    plainLines.push(`${piece}: ${rate > 0 ? `learning, ${rate} steps a second` : "not learning"}${undone}`);
  }
  $("telemetry").textContent = lines.join("\n");
  $("summary").textContent = plainLines.join("\n");
}

// -- the preview: one image at a time, a few a second ----------------------------------------------

function preview() {
  const img = $("preview");
  let n = 0;
  const next = () => setTimeout(() => { img.src = `/control/preview.jpg?n=${n++}`; }, 250);
  img.onload = next;
  img.onerror = () => setTimeout(next, 750);
  next();
}

fetch("/control/show.json").then((r) => r.json()).then((s) => { build(s); connect(); preview(); });
