// Light progressive enhancement: drag-and-drop and the deferred rerank on the search page; caption, questions,
// statements and tag editing on a result page.
"use strict";

function setupDrop() {
  const drop = document.getElementById("drop");
  const input = document.getElementById("image");
  const form = document.getElementById("search-form");
  if (!drop || !input || !form) return;
  const submit = () => {
    if (!input.files.length) return;
    document.getElementById("drop-text").textContent = "Searching with " + input.files[0].name + "…";
    form.submit();
  };
  ["dragenter", "dragover"].forEach((name) => drop.addEventListener(name, (event) => {
    event.preventDefault();
    drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((name) => drop.addEventListener(name, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    if (event.dataTransfer.files.length) {
      input.files = event.dataTransfer.files;
      submit();
    }
  });
  input.addEventListener("change", submit);
}

async function postJson(url, body, method = "POST", extraHeaders = {}) {
  const response = await fetch(url, {
    method: method,
    headers: Object.assign({ "Content-Type": "application/json", "Accept": "application/json" }, extraHeaders),
    body: body === null ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) throw new Error((data && data.detail) || ("request failed: " + response.status));
  return data;
}

async function fillCaption() {
  const caption = document.getElementById("caption");
  if (!caption || caption.dataset.missing !== "true") return;
  try {
    // with the key this tab was given (for tags), a generated caption is stored; without, only shown
    const key = sessionStorage.getItem(KEY_STORE);
    const data = await postJson(caption.dataset.url, {}, "POST", key ? { "X-API-Key": key } : {});
    caption.textContent = data.caption || "(the model found no words)";
    caption.dataset.missing = "false";
  } catch (error) {
    caption.textContent = "No caption: " + error.message;
    caption.classList.add("error");
  }
}

function setupAsk() {
  const form = document.getElementById("ask-form");
  if (!form) return;
  const list = document.getElementById("answers");
  const failure = document.getElementById("ask-error");
  const button = document.getElementById("ask-button");
  const written = document.getElementById("written");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const question = document.getElementById("question").value.trim();
    if (!question) return;
    button.disabled = true;
    failure.hidden = true;
    list.replaceChildren();
    written.hidden = true;
    try {
      const data = await postJson(form.dataset.url, { question: question, top_k: 5, llm: form.dataset.llm === "1" });
      if (data.written) {
        document.getElementById("written-answer").textContent = data.written.answer;
        document.getElementById("written-caption").textContent = data.written.caption;
        written.hidden = false;
      }
      if (!data.answers.length) {
        const item = document.createElement("li");
        item.textContent = "(no answer)";
        list.append(item);
      }
      for (const answer of data.answers) {
        const item = document.createElement("li");
        item.className = "answer";
        const text = document.createElement("span");
        text.className = "text";
        text.textContent = answer.answer;
        const bar = document.createElement("span");
        bar.className = "bar";
        bar.style.width = Math.max(2, Math.round(answer.probability * 120)) + "px";
        const prob = document.createElement("span");
        prob.className = "prob";
        prob.textContent = answer.probability >= 0.001 ? (answer.probability * 100).toFixed(1) + "%" : "<0.1%";
        item.append(text, bar, prob);
        list.append(item);
      }
    } catch (error) {
      failure.textContent = error.message;
      failure.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
}

function probabilityText(p) {
  return p >= 0.001 ? (p * 100).toFixed(1) + "%" : "<0.1%";
}

const VERDICTS = [
  ["entailment", "Yes, it shows this"],
  ["neutral", "Can't tell"],
  ["contradiction", "No, it contradicts this"],
];

function setupEntail() {
  const form = document.getElementById("entail-form");
  if (!form) return;
  const list = document.getElementById("verdict");
  const failure = document.getElementById("entail-error");
  const button = document.getElementById("entail-button");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const statement = document.getElementById("statement").value.trim();
    if (!statement) return;
    button.disabled = true;
    failure.hidden = true;
    list.replaceChildren();
    try {
      const data = await postJson(form.dataset.url, { statement: statement });
      for (const [key, words] of VERDICTS) {
        const item = document.createElement("li");
        item.className = "relation " + key + (data.label === key ? " best" : "");
        item.dataset.relation = key;
        const text = document.createElement("span");
        text.className = "text";
        text.textContent = words;
        const bar = document.createElement("span");
        bar.className = "bar";
        bar.style.width = Math.max(2, Math.round(data[key] * 120)) + "px";
        const prob = document.createElement("span");
        prob.className = "prob";
        prob.textContent = probabilityText(data[key]);
        item.append(text, bar, prob);
        list.append(item);
      }
    } catch (error) {
      failure.textContent = error.message;
      failure.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
}

function setupHeatmap() {
  const form = document.getElementById("heatmap-form");
  if (!form) return;
  const picture = document.getElementById("heatmap");
  const failure = document.getElementById("heatmap-error");
  const button = document.getElementById("heatmap-button");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const words = document.getElementById("where").value.trim();
    if (!words) return;
    button.disabled = true;
    failure.hidden = true;
    try {
      const response = await fetch(form.dataset.url + "?" + new URLSearchParams({ q: words }));
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        throw new Error(body.detail || "the heat-map could not be made (" + response.status + ")");
      }
      if (picture.src) URL.revokeObjectURL(picture.src);
      picture.src = URL.createObjectURL(await response.blob());
      picture.hidden = false;
    } catch (error) {
      failure.textContent = error.message;
      failure.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
}

// First-stage results are on the page already; ask for their rerank and reorder the same cells in place.
async function setupRerank() {
  const grid = document.getElementById("results");
  const status = document.getElementById("rerank-status");
  if (!grid || !status || !grid.dataset.rerankToken) return;
  try {
    const data = await postJson(grid.dataset.rerankUrl, { token: grid.dataset.rerankToken });
    const cells = new Map([...grid.children].map((cell) => [cell.dataset.id, cell]));
    for (const hit of data.hits) {
      const cell = cells.get(String(hit.id));
      if (!cell) continue;
      const score = cell.querySelector(".score");
      if (score && hit.rerank_score !== null && hit.ranking_score !== null) {
        score.textContent = hit.ranking_score.toFixed(3);
        score.title = "reranked score, which orders the results; similarity " + hit.first_stage_score.toFixed(3) +
          ", reranker " + hit.rerank_score.toFixed(3);
      }
      grid.append(cell); // appending a cell that is already in the grid moves it: the grid takes the new order
    }
    grid.dataset.reranked = "true";
    status.textContent = "Reranked";
    status.className = "rerank-status reranked";
    const summary = document.getElementById("summary");
    if (summary && !summary.textContent.endsWith("reranked")) summary.textContent += ", reranked";
  } catch (error) {
    status.textContent = "Not reranked: " + error.message;
    status.className = "rerank-status error";
  }
}

const KEY_STORE = "pixsearch-api-key";

function setupTags() {
  const box = document.getElementById("tag-box");
  if (!box || box.dataset.editable !== "true") return;
  const list = document.getElementById("tags");
  const form = document.getElementById("tag-form");
  const keyInput = document.getElementById("api-key");
  const failure = document.getElementById("tag-error");
  keyInput.value = sessionStorage.getItem(KEY_STORE) || "";

  const send = async (url, body, method) => {
    failure.hidden = true;
    const key = keyInput.value.trim();
    if (key) sessionStorage.setItem(KEY_STORE, key);
    try {
      render((await postJson(url, body, method, key ? { "X-API-Key": key } : {})).tags);
      return true;
    } catch (error) {
      failure.textContent = error.message;
      failure.hidden = false;
      return false;
    }
  };
  const button = (label, title, onClick) => {
    const element = document.createElement("button");
    element.type = "button";
    element.textContent = label;
    element.title = title;
    element.addEventListener("click", onClick);
    return element;
  };
  const render = (tags) => {
    list.replaceChildren();
    for (const tag of tags) {
      const item = document.createElement("li");
      item.className = "tag " + tag.state;
      item.dataset.name = tag.tag;
      item.title = tag.state + " · " + tag.source + (tag.score === null ? "" : " · " + tag.score.toFixed(2));
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = tag.tag;
      item.append(name);
      if (tag.state === "suggested") {
        item.append(button("✓", "confirm", () => send(box.dataset.url, { name: tag.tag, action: "confirm" }, "POST")));
      }
      item.append(button("×", "remove", () => send(box.dataset.url + "/" + encodeURIComponent(tag.tag), null, "DELETE")));
      list.append(item);
    }
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = document.getElementById("new-tag");
    const name = input.value.trim();
    if (name && await send(box.dataset.url, { name: name, action: "add" }, "POST")) input.value = "";
  });
  fetch(box.dataset.url, { headers: { "Accept": "application/json" } })
    .then((response) => response.json())
    .then((data) => render(data.tags))
    .catch(() => { /* the server-rendered list stays */ });
}

document.addEventListener("DOMContentLoaded", () => {
  setupDrop();
  setupRerank();
  fillCaption();
  setupAsk();
  setupEntail();
  setupHeatmap();
  setupTags();
});
