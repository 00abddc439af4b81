"""The contact sheet's page (one HTML file, no assets): polls state.json, draws a card per variant."""

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>unstable: explore</title>
<style>
body { font: 14px system-ui, sans-serif; background: #111; color: #ddd; margin: 0; }
header { display: flex; gap: 1em; align-items: center; padding: .6em 1em; background: #1b1b1b; position: sticky; top: 0; }
h1 { font-size: 1.1em; margin: 0; }
h2 { font-size: 1em; margin: 1em 1em .3em; color: #aaa; }
button { background: #333; color: #eee; border: 1px solid #555; border-radius: 4px; padding: .3em .7em; cursor: pointer; }
button[aria-pressed=true].star { background: #a80; color: #000; }
button[aria-pressed=true].discard { background: #722; }
button:disabled { opacity: .4; cursor: default; }
.gen { display: grid; grid-template-columns: repeat(auto-fill, minmax(230px, 1fr)); gap: .8em; padding: 0 1em; }
.card { background: #1d1d1d; border-radius: 6px; padding: .5em; }
.card.discard { opacity: .45; }
.card.star { outline: 2px solid #a80; }
.card img { width: 100%; image-rendering: pixelated; background: #000; min-height: 60px; }
.card .id { font-weight: 600; }
.card .lineage, .card .scores { font-size: 12px; color: #999; margin: .3em 0; }
.card .bad { color: #e66; }
</style>
</head>
<body>
<header>
  <h1 id="title">explore</h1>
  <span id="status">connecting…</span>
  <button id="breed" disabled title="breed the next generation from the starred variants (none starred: by novelty in the band)">breed next generation</button>
</header>
<main id="sheet"></main>
<script>
"use strict";
const H = {"X-Unstable-Explore": "1"};
let last = "";
function esc(s) { return String(s).replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c])); }
function num(v) { const x = parseFloat(v); return isFinite(x) ? x.toPrecision(3) : "–"; }
function card(v, stamp) {
  const s = v.scores || {};
  const img = v.has_grid ? `<img class="grid" alt="latest grid of ${esc(v.id)}" src="/explore/v/${esc(v.id)}/grid.png?t=${stamp}">` : `<img alt="no grid yet">`;
  const loop = v.has_loop ? `<img class="loop" alt="training loop of ${esc(v.id)}" src="/explore/v/${esc(v.id)}/progress.gif?t=${stamp}">` : "";
  const status = s.status ? (s.status === "ok" ? (s.in_band === "1" ? "in band" : (s.stasis === "1" ? "stasis" : "out of band")) : `<span class="bad">${esc(s.status)}</span>`) : (v.done ? "" : "training…");
  return `<div class="card ${esc(v.mark)}" data-id="${esc(v.id)}">
    <div><span class="id">${esc(v.id)}</span> · ${status}${s.selected === "1" ? " · selected" : ""}</div>
    ${img}${loop}
    <div class="scores">novelty ${num(s.novelty)} · motion ${num(s.motion)} · diversity ${num(s.pixel_diversity)}/${num(s.feature_diversity)} · generators ${num(s.generator_difference)} · colour ${num(s.colour_variety)} · guard ${esc(s.guard_trips || 0)}</div>
    <div class="lineage">from ${esc(v.parents.join(" + "))}: ${esc(v.operation)}${v.changes.length ? "<br>" + v.changes.map(esc).join("<br>") : ""}</div>
    <button class="star" aria-pressed="${v.mark === "star"}" data-id="${esc(v.id)}">★ star</button>
    <button class="discard" aria-pressed="${v.mark === "discard"}" data-id="${esc(v.id)}">discard</button>
  </div>`;
}
async function refresh() {
  let state;
  try { state = await (await fetch("/explore/state.json", {cache: "no-store"})).json(); }
  catch (e) { document.getElementById("status").textContent = "offline"; return; }
  document.getElementById("title").textContent = "explore: " + state.name;
  const waiting = state.waiting !== null && state.waiting !== undefined;
  document.getElementById("status").textContent = state.finished ? "finished: star and export (unstable explore DIR --export ID FILE)"
    : waiting ? `generation ${state.waiting} scored: star, then breed` : "training";
  document.getElementById("breed").disabled = !waiting;
  const text = JSON.stringify(state);
  if (text === last) return;
  last = text;
  const stamp = Date.now();
  const gens = {};
  for (const v of state.variants) (gens[v.generation] = gens[v.generation] || []).push(v);
  document.getElementById("sheet").innerHTML = Object.keys(gens).sort((a, b) => b - a).map(g =>
    `<h2>generation ${g}</h2><div class="gen" id="gen-${g}">${gens[g].map(v => card(v, stamp)).join("")}</div>`).join("");
}
async function mark(id, m) {
  await fetch(`/explore/mark?id=${encodeURIComponent(id)}&mark=${m}`, {headers: H});
  last = "";
  await refresh();
}
document.getElementById("sheet").addEventListener("click", e => {
  const b = e.target.closest("button");
  if (!b) return;
  const kind = b.classList.contains("star") ? "star" : "discard";
  mark(b.dataset.id, b.getAttribute("aria-pressed") === "true" ? "none" : kind);
});
document.getElementById("breed").addEventListener("click", async () => {
  document.getElementById("breed").disabled = true;
  await fetch("/explore/breed", {headers: H});
  last = "";
  await refresh();
});
refresh();
setInterval(refresh, 1500);
</script>
</body>
</html>
"""
