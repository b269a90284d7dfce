// The xmodal web page: plain JavaScript, no framework, nothing loaded from elsewhere.
// Every piece of data is put into the page with textContent or attributes, never as HTML.
"use strict";

const $ = (selector) => document.querySelector(selector);
const TYPES = ["image", "video", "text"];
const TYPE_WORDS = { image: ["photo", "photos"], video: ["video", "videos"], text: ["text", "texts"] };
const GRID_SIZE = 256; // thumbnail pixels for the grid (tiles are ~160 CSS px: sharp on 1.5x screens)
const DETAIL_SIZE = 1024;
const TYPING_PAUSE_MS = 200;

const state = {
  info: null,
  results: [], // the hits shown, in rank order
  model: null,
  focus: -1, // index of the focused tile
  example: null, // {kind: "file", file, url} | {kind: "item", id, name}
  minScore: null, // set by "show the closest anyway"
  generation: 0, // counts searches: answers to older ones are dropped
  controller: null,
  detailGeneration: 0,
  lastRun: null,
};

/** fetch() against this server; JSON errors become Error objects with the server's reason. */
async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (!response.ok) {
    let reason = response.statusText;
    try {
      const body = await response.json();
      reason = typeof body.detail === "string" ? body.detail : describeValidation(body.detail);
    } catch (_) { /* not JSON: keep the status text */ }
    const error = new Error(reason);
    error.status = response.status;
    throw error;
  }
  return response.status === 204 ? null : response.json();
}

function describeValidation(detail) {
  if (!Array.isArray(detail)) return JSON.stringify(detail);
  return detail.map((e) => `${(e.loc || []).filter((p) => p !== "query").join(".")}: ${e.msg}`).join("; ");
}

function element(tag, properties = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(properties)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else node[key] = value;
  }
  node.append(...children);
  return node;
}

function setStatus(text, isError = false) {
  const status = $("#status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

function showLogin(message) {
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
  $("#api-key").focus();
}

function enableSearch(enabled) {
  for (const node of $("#search").querySelectorAll("input, button")) node.disabled = !enabled;
  $("#filters").hidden = !enabled;
}

// -- formatting ------------------------------------------------------------------------------
function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds || 0));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${rest}` : `${m}:${rest}`;
}

function bytes(n) {
  if (n == null) return "";
  const units = ["bytes", "KB", "MB", "GB", "TB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} bytes` : `${value.toFixed(1)} ${units[unit]}`;
}

function fileName(path) {
  return path.split("/").pop() || path;
}

function count(n, type) {
  const [one, many] = TYPE_WORDS[type] || [type, `${type}s`];
  return `${n.toLocaleString()} ${n === 1 ? one : many}`;
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "unknown";
}

function nextDay(isoDate) {
  const day = new Date(`${isoDate}T00:00:00`);
  day.setDate(day.getDate() + 1);
  const pad = (n) => String(n).padStart(2, "0");
  return `${day.getFullYear()}-${pad(day.getMonth() + 1)}-${pad(day.getDate())}`;
}

// -- searching -------------------------------------------------------------------------------
function searchParams() {
  const params = new URLSearchParams();
  const text = $("#query").value.trim();
  if (text) params.set("q", text);
  if (state.example?.kind === "item") params.set("item", state.example.id);
  params.set("k", $("#k").value);
  const types = [...document.querySelectorAll("#filters input[name=type]:checked")].map((e) => e.value);
  if (types.length < TYPES.length) params.set("type", types.join(",") || "none");
  if ($("#after").value) params.set("after", $("#after").value);
  if ($("#before").value) params.set("before", nextDay($("#before").value)); // "to" a day includes it
  const glob = $("#path").value.trim();
  if (glob) params.set("path", glob);
  if (state.minScore !== null) params.set("min_score", state.minScore);
  params.set("moments", "3");
  return params;
}

function hasQuery() {
  return Boolean($("#query").value.trim() || state.example);
}

async function runSearch() {
  state.controller?.abort();
  updateAddress();
  if (!hasQuery()) {
    showResults(null);
    setStatus(readyText());
    return;
  }
  const params = searchParams();
  if (params.get("type") === "none") {
    showResults(null);
    setStatus("Tick at least one type to search.");
    return;
  }
  const controller = new AbortController();
  state.controller = controller;
  const generation = ++state.generation;
  const started = performance.now();
  document.body.classList.add("busy");
  try {
    let answer;
    if (state.example?.kind === "file") {
      const form = new FormData();
      for (const [key, value] of params) form.append(key, value);
      form.append("image", state.example.file, state.example.file.name || "image");
      answer = await api("/api/search", { method: "POST", body: form, signal: controller.signal });
    } else {
      answer = await api(`/api/search?${params}`, { signal: controller.signal });
    }
    if (generation === state.generation) showAnswer(answer, performance.now() - started);
  } catch (error) {
    if (error.name === "AbortError" || generation !== state.generation) return;
    showResults(null);
    if (error.status === 401) {
      setStatus("Sign in to search.");
      showLogin();
    } else {
      setStatus(`The search failed: ${error.message}`, true);
    }
  } finally {
    if (generation === state.generation) document.body.classList.remove("busy");
  }
}

function showAnswer(answer, milliseconds) {
  state.model = answer.model;
  showResults(answer.hits);
  const anyway = $("#show-anyway");
  anyway.hidden = true;
  if (answer.no_good_match) {
    setStatus(
      `No good match: the best candidate scored ${answer.best_score.toFixed(3)}, below ${answer.min_score.toFixed(3)},`
      + ` the score under which ${answer.model} finds nothing that fits.`,
    );
    anyway.hidden = false;
    return;
  }
  if (!answer.hits.length) {
    setStatus("Nothing matches these filters.");
    return;
  }
  const n = answer.hits.length;
  setStatus(`${n} result${n === 1 ? "" : "s"} · best ${answer.hits[0].score.toFixed(3)} · ${answer.model}`
    + ` · ${Math.round(milliseconds)} ms`);
}

function showResults(hits) {
  state.results = hits || [];
  state.focus = -1;
  const grid = $("#results");
  grid.replaceChildren(...state.results.map(tile));
  if (!hits) $("#show-anyway").hidden = true;
}

function tile(hit, index) {
  const name = fileName(hit.path);
  const figure = element("figure", {
    className: `tile ${hit.type}`,
    tabIndex: index === 0 ? 0 : -1,
    title: `${name}\nscore ${hit.score.toFixed(3)}${hit.type === "video" ? ` · best moment ${clock(hit.timestamp)}` : ""}`,
    dataset: { index: String(index), item: String(hit.item_id), type: hit.type },
  });
  figure.setAttribute("role", "listitem");
  figure.setAttribute("aria-label", `${name}, score ${hit.score.toFixed(3)}`);
  if (hit.type === "text") {
    figure.append(element("p", { className: "text-name", textContent: name }));
  } else {
    const image = element("img", {
      src: `/api/items/${hit.item_id}/thumbnail?size=${GRID_SIZE}`,
      alt: name,
      loading: "lazy",
      decoding: "async",
    });
    image.addEventListener("error", () => figure.classList.add("broken"));
    figure.append(image, element("span", { className: "broken-name", textContent: name }));
  }
  const caption = element("figcaption", {}, element("span", { className: "score", textContent: hit.score.toFixed(3) }));
  if (hit.type === "video") caption.append(element("span", { className: "badge", textContent: `▶ ${clock(hit.timestamp)}` }));
  if (hit.offline) caption.append(element("span", { className: "badge offline", textContent: "offline" }));
  const more = element("button", { type: "button", className: "more", textContent: "More like this" });
  more.addEventListener("click", (event) => {
    event.stopPropagation();
    moreLike(hit);
  });
  figure.append(caption, more);
  figure.addEventListener("click", () => openDetail(index));
  figure.addEventListener("focus", () => { state.focus = index; });
  return figure;
}

function moreLike(hit) {
  if ($("#detail").open) $("#detail").close();
  $("#query").value = "";
  setExample({ kind: "item", id: hit.item_id, name: fileName(hit.path), type: hit.type });
}

function setExample(example) {
  if (state.example?.kind === "file") URL.revokeObjectURL(state.example.url);
  state.example = example;
  state.minScore = null;
  const chip = $("#example");
  chip.hidden = !example;
  if (example) {
    const image = $("#example-image");
    image.hidden = example.type === "text";
    image.src = example.kind === "file" ? example.url : `/api/items/${example.id}/thumbnail?size=128`;
    $("#example-label").textContent = example.kind === "file" ? example.file.name || "image" : `like ${example.name}`;
  }
  runSearch();
}

function searchWithFile(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) {
    setStatus(`${file.name} is not an image: drop or pick a photo to search with it.`, true);
    return;
  }
  setExample({ kind: "file", file, url: URL.createObjectURL(file), type: "image" });
}

function readyText() {
  return "Type what you are looking for, or drop an image.";
}

// -- the address bar keeps the query (reload and back work) -----------------------------------
function updateAddress() {
  const params = new URLSearchParams();
  const text = $("#query").value.trim();
  if (text) params.set("q", text);
  if (state.example?.kind === "item") params.set("item", state.example.id);
  const address = params.toString() ? `?${params}` : location.pathname;
  if (address !== location.search) history.replaceState(null, "", address);
}

function restoreAddress() {
  const params = new URLSearchParams(location.search);
  $("#query").value = params.get("q") || "";
  const item = Number(params.get("item"));
  if (Number.isInteger(item) && item > 0) {
    state.example = { kind: "item", id: item, name: `#${item}` };
    $("#example").hidden = false;
    $("#example-image").src = `/api/items/${item}/thumbnail?size=128`;
    $("#example-label").textContent = `like #${item}`;
  }
}

// -- the detail view -------------------------------------------------------------------------
async function openDetail(index) {
  const hit = state.results[index];
  if (!hit) return;
  state.focus = index;
  const dialog = $("#detail");
  const generation = ++state.detailGeneration;
  $("#detail-title").textContent = fileName(hit.path);
  $("#detail-open").href = `/api/items/${hit.item_id}/file`;
  showMedia(hit);
  showMoments(hit);
  showFacts(hit, null);
  if (!dialog.open) dialog.showModal();
  try {
    const item = await api(`/api/items/${hit.item_id}`);
    if (generation === state.detailGeneration) showFacts(hit, item);
  } catch (error) {
    if (generation === state.detailGeneration) showFacts(hit, null, error.message);
  }
}

function showMedia(hit) {
  const media = $("#detail-media");
  if (hit.type === "video") {
    const video = element("video", { controls: true, preload: "metadata", autoplay: true, muted: true });
    const start = hit.timestamp || 0;
    video.src = `/api/items/${hit.item_id}/file#t=${start.toFixed(3)}`;
    video.dataset.start = String(start);
    // #t= starts there in most browsers; setting currentTime makes sure of it.
    video.addEventListener("loadedmetadata", () => {
      if (Math.abs(video.currentTime - start) > 0.25) video.currentTime = start;
    }, { once: true });
    media.replaceChildren(video);
  } else if (hit.type === "text") {
    media.replaceChildren(element("p", { className: "text-name", textContent: fileName(hit.path) }));
  } else {
    media.replaceChildren(element("img", { src: `/api/items/${hit.item_id}/thumbnail?size=${DETAIL_SIZE}`, alt: fileName(hit.path) }));
  }
}

function showMoments(hit) {
  const list = $("#detail-moments");
  const moments = hit.type === "video" ? hit.moments : [];
  list.replaceChildren(...moments.map((moment) => {
    const button = element("button", {
      type: "button",
      className: "plain",
      textContent: `${clock(moment.start)}–${clock(moment.end)} · ${moment.score.toFixed(3)}`,
    });
    button.addEventListener("click", () => {
      const video = $("#detail-media video");
      if (video) {
        video.currentTime = moment.start;
        video.play().catch(() => {});
      }
    });
    return element("li", {}, button);
  }));
  list.hidden = moments.length === 0;
}

function showFacts(hit, item, problem) {
  const rows = [
    ["Path", hit.path],
    ["Score", `${hit.score.toFixed(4)}${hit.score !== hit.similarity ? ` (similarity ${hit.similarity.toFixed(4)})` : ""}`],
    ["Model", state.model || ""],
    ["Taken", when(hit.taken_at)],
  ];
  if (item) {
    rows.push(["Size", bytes(item.size)]);
    if (item.width && item.height) rows.push(["Dimensions", `${item.width} × ${item.height}`]);
    if (item.duration) rows.push(["Duration", `${clock(item.duration)}${item.fps ? ` at ${item.fps.toFixed(2)} fps` : ""}`]);
    if (item.codec) rows.push(["Codec", item.codec]);
    const sources = { exif: "the photo's EXIF data", metadata: "the video's recording date" };
    rows.push(["Date from", sources[item.taken_at_source] || "the file's modification time"]);
    rows.push(["Added", when(item.added_at)]);
  }
  if (hit.offline) rows.push(["Folder", "offline (unmounted?)"]);
  rows.push(["Item", `#${hit.item_id} (${hit.type})`]);
  if (problem) rows.push(["Details", problem]);
  $("#detail-facts").replaceChildren(...rows.flatMap(([term, value]) => [
    element("dt", { textContent: term }),
    element("dd", { textContent: value }),
  ]));
}

function stepDetail(delta) {
  const next = state.focus + delta;
  if (next >= 0 && next < state.results.length) {
    openDetail(next);
    focusTile(next, false);
  }
}

// -- keyboard --------------------------------------------------------------------------------
function tiles() {
  return [...document.querySelectorAll("#results .tile")];
}

function focusTile(index, scroll = true) {
  const all = tiles();
  if (!all.length) return;
  const target = Math.max(0, Math.min(all.length - 1, index));
  for (const t of all) t.tabIndex = -1;
  all[target].tabIndex = 0;
  all[target].focus({ preventScroll: !scroll });
  state.focus = target;
}

function columns() {
  const all = tiles();
  if (!all.length) return 1;
  const top = all[0].offsetTop;
  const n = all.findIndex((t) => t.offsetTop !== top);
  return n === -1 ? all.length : n;
}

document.addEventListener("keydown", (event) => {
  const typing = event.target.matches("input, select, textarea");
  const dialogOpen = $("#detail").open;
  if (dialogOpen) {
    if (event.key === "ArrowLeft") stepDetail(-1);
    else if (event.key === "ArrowRight") stepDetail(1);
    else if (event.key.toLowerCase() === "m" && !typing) moreLike(state.results[state.focus]);
    else return;
    event.preventDefault();
    return;
  }
  if (event.key === "/" && !typing) {
    event.preventDefault();
    $("#query").focus();
    return;
  }
  if (event.key === "Escape" && state.example) {
    setExample(null);
    return;
  }
  const onTile = event.target.classList?.contains("tile");
  if (typing && event.key === "ArrowDown" && event.target.id === "query" && state.results.length) {
    event.preventDefault();
    focusTile(0);
    return;
  }
  if (!onTile) return;
  const index = Number(event.target.dataset.index);
  const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns(), ArrowUp: -columns(), Home: -index, End: tiles().length };
  if (event.key in moves) {
    event.preventDefault();
    if (event.key === "ArrowUp" && index < columns()) $("#query").focus();
    else focusTile(index + moves[event.key]);
  } else if (event.key === "Enter" || event.key === " ") {
    event.preventDefault();
    openDetail(index);
  } else if (event.key.toLowerCase() === "m") {
    event.preventDefault();
    moreLike(state.results[index]);
  }
});

// -- the index run ---------------------------------------------------------------------------
function showIndexRun(run) {
  const box = $("#indexing");
  const progress = $("#index-progress");
  const text = $("#index-text");
  const previous = state.lastRun;
  state.lastRun = run;
  const running = run.state === "running";
  const otherWriter = !running && run.writer;
  $("#reindex").hidden = running || Boolean(otherWriter);
  $("#index-cancel").hidden = !running || run.cancel_requested;
  if (running) {
    box.hidden = false;
    if (run.phase === "indexing" && run.total) {
      progress.max = run.total;
      progress.value = Math.min(run.done, run.total);
      text.textContent = `Indexing ${run.done.toLocaleString()} of ${run.total.toLocaleString()}`
        + (run.cancel_requested ? " · stopping…" : "");
    } else {
      progress.removeAttribute("value");
      text.textContent = run.cancel_requested ? "Stopping…" : "Looking for new and changed files…";
    }
  } else if (otherWriter) {
    box.hidden = false;
    progress.removeAttribute("value");
    text.textContent = `Being indexed by ${run.writer}`;
  } else if (previous && (previous.state === "running" || previous.writer)) {
    // A run (this server's or another process's) just ended: show how, then refresh what is shown.
    box.hidden = false;
    progress.max = 1;
    progress.value = 1;
    text.textContent = run.state === "failed" ? `Indexing failed: ${run.error}`
      : run.state === "cancelled" ? "Indexing stopped; what was done is kept."
        : run.report ? `Indexed: ${run.report.summary}` : "Indexing finished.";
    box.classList.toggle("failed", run.state === "failed");
    loadSummary();
    if (hasQuery()) runSearch();
    setTimeout(() => { if (state.lastRun === run) box.hidden = true; }, 10_000);
  } else {
    box.hidden = true;
  }
}

function followIndexRuns() {
  const source = new EventSource("/api/index/events");
  source.addEventListener("index", (event) => showIndexRun(JSON.parse(event.data)));
}

$("#reindex").addEventListener("click", async () => {
  try {
    showIndexRun(await api("/api/index", { method: "POST" }));
  } catch (error) {
    setStatus(`Cannot index now: ${error.message}`, true);
  }
});

$("#index-cancel").addEventListener("click", async () => {
  try {
    showIndexRun(await api("/api/index/cancel", { method: "POST" }));
  } catch (error) {
    setStatus(error.message, true);
  }
});

// -- startup ---------------------------------------------------------------------------------
async function loadSummary() {
  try {
    const status = await api("/api/status");
    const items = TYPES.filter((t) => status.items[t]).map((t) => count(status.items[t], t));
    const model = status.models[0]?.name;
    $("#library-summary").textContent = `${items.join(" · ") || "no items yet"}${model ? ` · ${model}` : ""}`
      + (status.failed ? ` · ${status.failed.toLocaleString()} failed` : "");
    $("#reindex").hidden = Boolean(status.writer);
  } catch (_) {
    $("#library-summary").textContent = "";
  }
}

async function loadInfo() {
  try {
    const info = await api("/api/info");
    state.info = info;
    $("#login").hidden = true;
    $("#version").textContent = `xmodal ${info.version}`;
    enableSearch(info.library);
    if (!info.library) {
      setStatus("This server has no library: it serves machine learning only (Immich-compatible /predict).");
      return;
    }
    restoreAddress();
    loadSummary();
    followIndexRuns();
    if (hasQuery()) runSearch();
    else setStatus(readyText());
    $("#query").focus();
  } catch (error) {
    if (error.status === 401) {
      setStatus("Sign in to search.");
      showLogin();
    } else {
      setStatus(`The server did not answer: ${error.message}`, true);
    }
  }
}

$("#login").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await api("/api/session", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ api_key: $("#api-key").value }),
    });
    $("#api-key").value = "";
    await loadInfo();
  } catch (error) {
    showLogin(error.status === 401 ? "That key is not right." : error.message);
  }
});

let typingTimer = null;
$("#query").addEventListener("input", () => {
  clearTimeout(typingTimer);
  state.minScore = null;
  typingTimer = setTimeout(runSearch, TYPING_PAUSE_MS);
});
$("#search").addEventListener("submit", (event) => {
  event.preventDefault();
  clearTimeout(typingTimer);
  runSearch();
});
$("#filters").addEventListener("change", () => runSearch());
$("#path").addEventListener("input", () => {
  clearTimeout(typingTimer);
  typingTimer = setTimeout(runSearch, TYPING_PAUSE_MS);
});
$("#filters").addEventListener("submit", (event) => event.preventDefault());
$("#show-anyway").addEventListener("click", () => {
  state.minScore = -1;
  runSearch();
});
$("#example-clear").addEventListener("click", () => setExample(null));
$("#image-file").addEventListener("change", (event) => {
  searchWithFile(event.target.files[0]);
  event.target.value = "";
});
$("#detail-close").addEventListener("click", () => $("#detail").close());
$("#detail-more").addEventListener("click", () => moreLike(state.results[state.focus]));
$("#detail").addEventListener("close", () => {
  $("#detail-media").replaceChildren(); // stops a playing video
  if (state.focus >= 0) focusTile(state.focus, false);
});
$("#detail").addEventListener("click", (event) => {
  if (event.target === $("#detail")) $("#detail").close(); // a click on the backdrop
});

// Drag and drop an image anywhere on the page; paste one from the clipboard.
let dragDepth = 0;
document.addEventListener("dragenter", (event) => {
  if (!state.info?.library || !event.dataTransfer?.types.includes("Files")) return;
  dragDepth += 1;
  $("#drop-hint").hidden = false;
});
document.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (!dragDepth) $("#drop-hint").hidden = true;
});
document.addEventListener("dragover", (event) => event.preventDefault());
document.addEventListener("drop", (event) => {
  event.preventDefault();
  dragDepth = 0;
  $("#drop-hint").hidden = true;
  if (state.info?.library) searchWithFile(event.dataTransfer?.files[0]);
});
document.addEventListener("paste", (event) => {
  const file = [...(event.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
  if (file && state.info?.library) {
    event.preventDefault();
    searchWithFile(file);
  }
});

loadInfo();
