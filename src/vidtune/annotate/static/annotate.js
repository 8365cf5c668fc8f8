// vidtune annotation page: one item at a time, two clips played in sync, G/S/B per aspect from the keyboard.
"use strict";
const LABELS = {left: "Left better", same: "Same", right: "Right better"};
const KEYS = {"1": "left", "ArrowLeft": "left", "2": "same", "s": "same", "S": "same",
              "3": "right", "ArrowRight": "right"};
let item = null, votes = {}, current = 0, busy = false, syncTimer = null;
const $ = (id) => document.getElementById(id);

function setStatus(text) { $("status").textContent = text; }
function setProgress(p) { $("progress").textContent = `${p.done} / ${p.total}`; }

function media(spec, side) {
  const box = $(`${side}-media`);
  box.replaceChildren();
  let el;
  if (spec.kind === "video") {
    el = document.createElement("video");
    Object.assign(el, {muted: true, loop: true, autoplay: true, playsInline: true, preload: "auto"});
  } else {
    el = document.createElement("img");
    el.alt = `${side} clip`;
  }
  el.id = `${side}-clip`;
  el.src = spec.url;
  box.appendChild(el);
  return el;
}

// Start both videos at t = 0 together, then keep the right one within 40 ms of the left one.
function startInSync() {
  clearInterval(syncTimer);
  const l = $("left-clip"), r = $("right-clip");
  if (!(l instanceof HTMLVideoElement) || !(r instanceof HTMLVideoElement)) return;
  const ready = () => l.readyState >= 3 && r.readyState >= 3;
  const go = () => {
    if (!ready()) return;
    l.currentTime = 0; r.currentTime = 0;
    Promise.all([l.play(), r.play()]).catch((e) => setStatus(`playback: ${e.message}`));
  };
  l.addEventListener("canplay", go, {once: true});
  r.addEventListener("canplay", go, {once: true});
  go();
  syncTimer = setInterval(() => {
    if (l.paused !== r.paused) (l.paused ? r.pause() : r.play().catch(() => {}));
    if (Math.abs(l.currentTime - r.currentTime) > 0.04) r.currentTime = l.currentTime;
  }, 200);
}

function renderAspects() {
  const body = $("aspects").tBodies[0];
  body.replaceChildren();
  item.aspects.forEach((aspect, i) => {
    const tr = body.insertRow();
    tr.dataset.aspect = aspect;
    tr.className = i === current ? "current" : "";
    tr.insertCell().textContent = aspect.replace(/_/g, " ");
    for (const choice of ["left", "same", "right"]) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = LABELS[choice];
      b.dataset.choice = choice;
      b.className = votes[aspect] === choice ? "chosen" : "";
      b.addEventListener("click", () => { current = i; choose(choice); });
      tr.insertCell().appendChild(b);
    }
  });
  $("submit").disabled = busy || item.aspects.some((a) => !(a in votes));
}

function choose(choice) {
  votes[item.aspects[current]] = choice;
  current = Math.min(current + 1, item.aspects.length - 1);
  renderAspects();
}

async function call(url, body) {
  const opts = body === undefined ? {} : {method: "POST", headers: {"Content-Type": "application/json"},
                                         body: JSON.stringify(body)};
  const resp = await fetch(url, opts);
  if (resp.status === 401) { window.location = "/login"; throw new Error("logged out"); }
  const data = await resp.json();
  return {status: resp.status, data};
}

async function loadNext() {
  busy = true;
  $("main").dataset.state = "loading";
  const {status, data} = await call("/api/next");
  busy = false;
  if (status !== 200) { setStatus(data.error || `error ${status}`); return; }
  setProgress(data.progress);
  if (data.finished) {
    clearInterval(syncTimer);
    $("main").hidden = true;
    $("finished").hidden = false;
    $("main").dataset.state = "finished";
    return;
  }
  item = data; votes = {}; current = 0;
  $("prompt").textContent = data.prompt;
  $("main").dataset.assignment = data.assignment_id;
  media(data.left, "left"); media(data.right, "right");
  startInSync();
  renderAspects();
  setStatus("");
  $("main").dataset.state = "ready";
}

async function send(url, body) {
  if (busy || !item) return;
  busy = true; $("submit").disabled = true;
  try {
    const {status, data} = await call(url, body);
    if (status === 200 || status === 409) { busy = false; await loadNext(); }  // 409: already stored, move on
    else { busy = false; setStatus(data.error || `error ${status}`); renderAspects(); }
  } catch (e) { busy = false; setStatus(`network error: ${e.message}`); renderAspects(); }
}

function submit() {
  if (item && item.aspects.every((a) => a in votes)) send("/api/vote", {assignment_id: item.assignment_id, votes});
}

document.addEventListener("keydown", (ev) => {
  if (!item || ev.ctrlKey || ev.metaKey || ev.altKey || $("main").dataset.state !== "ready") return;
  if (ev.key in KEYS) choose(KEYS[ev.key]);
  else if (ev.key === "ArrowUp") { current = Math.max(0, current - 1); renderAspects(); }
  else if (ev.key === "ArrowDown") { current = Math.min(item.aspects.length - 1, current + 1); renderAspects(); }
  else if (ev.key === "Enter") submit();
  else if (ev.key === "x" || ev.key === "X") send("/api/skip", {assignment_id: item.assignment_id});
  else if (ev.key === "r" || ev.key === "R") startInSync();
  else return;
  ev.preventDefault();
});
$("submit").addEventListener("click", submit);
$("skip").addEventListener("click", () => item && send("/api/skip", {assignment_id: item.assignment_id}));
$("replay").addEventListener("click", startInSync);
loadNext().catch((e) => setStatus(`error: ${e.message}`));
