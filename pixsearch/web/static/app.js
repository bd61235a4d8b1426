// Light progressive enhancement: drag-and-drop on the search page, caption and questions on a result page.
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

async function postJson(url, body) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", "Accept": "application/json" },
    body: JSON.stringify(body),
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
    const data = await postJson(caption.dataset.url, {});
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
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const question = document.getElementById("question").value.trim();
    if (!question) return;
    button.disabled = true;
    failure.hidden = true;
    list.replaceChildren();
    try {
      const data = await postJson(form.dataset.url, { question: question, top_k: 5 });
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

document.addEventListener("DOMContentLoaded", () => {
  setupDrop();
  fillCaption();
  setupAsk();
});
