// goemo web page: send the text to POST /predict and draw one bar per label.
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
const state = { thresholds: {}, maxChars: null, busy: false };

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
    chosen.append(el("span", "chip", `${label} ${score.toFixed(2)}`));
  }
  const bars = $("bars");
  bars.replaceChildren();
  const rows = Object.entries(result.scores).sort((a, b) => b[1] - a[1]);
  for (const [label, score] of rows) {
    const threshold = state.thresholds[label];
    const above = threshold !== undefined && score > threshold;
    const row = el("div", above ? "bar above" : "bar");
    row.setAttribute("role", "listitem");
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
    row.title = `${label}: ${score.toFixed(4)}` + (threshold !== undefined ? ` (threshold ${threshold.toFixed(2)})` : "");
    bars.append(row);
  }
  $("output").hidden = false;
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
