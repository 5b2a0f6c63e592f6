// goemo web page: send the text to POST /predict and draw one bar per label; a click on an
// emotion asks POST /explain for the words behind it and colours them (green raises it, red lowers it).
// Plain JS, no dependencies, so the page works offline.
"use strict";

const EXAMPLES = [
  "Thank you so much, this made my day!",
  "I can't believe they cancelled the show. So disappointed.",
  "Wait, what? How does that even work?",
  "I'm so sorry for your loss.",
  "This is the worst service I have ever had.",
  "I'm terrified of the exam tomorrow.",
];

const $ = (id) => document.getElementById(id);
const state = { thresholds: {}, maxChars: null, busy: false, text: null, explaining: 0 };
const POSITIVE = [46, 160, 67];
const NEGATIVE = [209, 73, 91];
const SHOWN_FROM = 0.15; // words under this share of the strongest stay plain

function showMessage(text, isError) {
  const el = $("message");
  el.textContent = text || "";
  el.classList.toggle("error", Boolean(isError));
}

function updateCount() {
  const n = $("text").value.length;
  const el = $("count");
  el.textContent = state.maxChars ? `${n} / ${state.maxChars} characters` : `${n} characters`;
  el.classList.toggle("over", state.maxChars !== null && n > state.maxChars);
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function render(result) {
  const chosen = $("chosen");
  chosen.replaceChildren();
  if (result.labels.length === 0) {
    chosen.append(el("span", "chip none", "none above threshold"));
  }
  for (const { label, score } of result.labels) {
    const chip = el("button", "chip", `${label} ${score.toFixed(2)}`);
    chip.type = "button";
    chip.dataset.label = label;
    chip.title = `Show the words behind ${label}`;
    chip.addEventListener("click", () => explain(label));
    chosen.append(chip);
  }
  const bars = $("bars");
  bars.replaceChildren();
  const rows = Object.entries(result.scores).sort((a, b) => b[1] - a[1]);
  for (const [label, score] of rows) {
    const threshold = state.thresholds[label];
    const above = threshold !== undefined && score > threshold;
    const row = el("div", above ? "bar above" : "bar");
    row.setAttribute("role", "listitem");
    row.tabIndex = 0;
    row.dataset.label = label;
    row.dataset.score = String(score);
    const track = el("div", "track");
    const fill = el("div", "fill");
    fill.style.width = `${(score * 100).toFixed(2)}%`;
    track.append(fill);
    if (threshold !== undefined) {
      const tick = el("div", "tick");
      tick.style.left = `calc(${(threshold * 100).toFixed(2)}% - 1px)`;
      tick.title = `threshold ${threshold.toFixed(2)}`;
      track.append(tick);
    }
    row.append(el("span", "name", label), track, el("span", "value", score.toFixed(3)));
    row.title = `${label}: ${score.toFixed(4)}` + (threshold !== undefined ? ` (threshold ${threshold.toFixed(2)})` : "") +
      " (click: the words behind it)";
    row.addEventListener("click", () => explain(label));
    row.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        explain(label);
      }
    });
    bars.append(row);
  }
  $("why").hidden = true;
  $("output").hidden = false;
}

function wordColour(attribution, largest) {
  const share = largest > 0 ? Math.abs(attribution) / largest : 0;
  if (share < SHOWN_FROM) return null;
  const [r, g, b] = attribution > 0 ? POSITIVE : NEGATIVE;
  return `rgba(${r}, ${g}, ${b}, ${(0.2 + 0.6 * share).toFixed(3)})`;
}

function renderExplanation(text, explained) {
  const box = $("explained");
  box.replaceChildren();
  const largest = Math.max(0, ...explained.words.map((w) => Math.abs(w.attribution)));
  let at = 0;
  for (const w of explained.words) {
    if (w.start > at) box.append(document.createTextNode(text.slice(at, w.start)));
    const colour = wordColour(w.attribution, largest);
    const span = el("span", "word", text.slice(w.start, w.end));
    if (colour) {
      span.classList.add(w.attribution > 0 ? "pos" : "neg");
      span.style.backgroundColor = colour;
    }
    span.dataset.attribution = String(w.attribution);
    span.title = `${w.attribution >= 0 ? "+" : ""}${w.attribution.toFixed(3)}`;
    box.append(span);
    at = w.end;
  }
  if (at < text.length) box.append(document.createTextNode(text.slice(at)));
  $("why-title").textContent = `Why ${explained.label} (${explained.score.toFixed(2)})`;
  $("why-method").textContent =
    explained.method === "occlusion" ? "number: how much deleting the word lowers the probability" : explained.method;
  $("why").hidden = false;
  $("why").scrollIntoView({ block: "nearest" });
}

function markSelected(label) {
  for (const node of document.querySelectorAll("#chosen .chip[data-label], #bars .bar")) {
    node.setAttribute("aria-pressed", String(node.dataset.label === label));
  }
}

async function explain(label) {
  const text = state.text;
  if (text === null) return;
  const ticket = ++state.explaining; // a later click wins over an earlier answer
  markSelected(label);
  document.body.dataset.explain = "busy";
  showMessage(`Finding the words behind ${label}…`);
  const started = performance.now();
  try {
    const response = await fetch("/explain", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ texts: [text], labels: [label] }),
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      throw new Error(body.detail || `server answered ${response.status}`);
    }
    if (ticket !== state.explaining || text !== state.text) return;
    renderExplanation(text, body.results[0].labels[0]);
    showMessage(`Explained in ${Math.round(performance.now() - started)} ms.`);
    document.body.dataset.explain = "done";
  } catch (err) {
    if (ticket !== state.explaining) return;
    showMessage(`Error: ${err.message}`, true);
    document.body.dataset.explain = "error";
  }
}

async function classify() {
  const text = $("text").value;
  if (state.busy) return;
  if (!text.trim()) {
    showMessage("Type a sentence first.", true);
    return;
  }
  state.busy = true;
  $("go").disabled = true;
  showMessage("Classifying…");
  const started = performance.now();
  try {
    const response = await fetch("/predict", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ texts: [text] }),
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      throw new Error(body.detail || `server answered ${response.status}`);
    }
    state.text = text;
    state.explaining++; // an explanation still on its way belongs to the earlier text
    render(body.results[0]);
    $("output").classList.remove("stale");
    showMessage(`Done in ${Math.round(performance.now() - started)} ms.`);
    document.body.dataset.state = "done";
  } catch (err) {
    showMessage(`Error: ${err.message}`, true);
    $("output").classList.add("stale"); // the bars below belong to an earlier text
    document.body.dataset.state = "error";
  } finally {
    state.busy = false;
    $("go").disabled = false;
  }
}

async function init() {
  for (const sentence of EXAMPLES) {
    const button = el("button", "", sentence);
    button.type = "button";
    button.addEventListener("click", () => {
      $("text").value = sentence;
      updateCount();
      classify();
    });
    $("examples").append(button);
  }
  $("go").addEventListener("click", classify);
  $("text").addEventListener("input", updateCount);
  $("text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      classify();
    }
  });
  try {
    const [labels, health] = await Promise.all([
      fetch("/labels").then((r) => r.json()),
      fetch("/health").then((r) => r.json()),
    ]);
    state.thresholds = labels.thresholds;
    state.maxChars = health.limits.max_chars;
    if (health.model) {
      $("footer").prepend(el("span", "", `model ${health.model} · ${health.labels} labels · `));
    }
  } catch (err) {
    showMessage(`Cannot reach the server: ${err.message}`, true);
  }
  updateCount();
  document.body.dataset.ready = "true";
}

init();
