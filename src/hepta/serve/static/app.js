// The chat page of `hepta serve`: the conversation streams from /v1/chat/completions, the model list comes
// from /v1/models and the trends from /v1/trends. Text from the server (answers, posts, errors) only ever
// reaches the page as text nodes (markdown.js), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const conversation = [];  // OpenAI chat messages sent with the next request
let attachment = null;  // the content part of an attached image or clip, until it is sent

// --- the API key: in memory, or in this browser's storage when the user asks --------------------

function apiKey() { return $("api-key").value.trim(); }

function headers() {
  const h = { "content-type": "application/json" };
  if (apiKey()) h.authorization = "Bearer " + apiKey();
  return h;
}

function restoreKey() {
  const stored = localStorage.getItem("hepta-api-key");
  if (stored) { $("api-key").value = stored; $("remember-key").checked = true; }
}

function keepKey() {
  if ($("remember-key").checked && apiKey()) localStorage.setItem("hepta-api-key", apiKey());
  else localStorage.removeItem("hepta-api-key");
}

// --- errors -------------------------------------------------------------------------------------------

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function errorOf(response) {
  try { return (await response.json()).error.message; } catch (e) { return response.status + " " + response.statusText; }
}

// --- models and trends -------------------------------------------------------------------------

async function loadModels() {
  const response = await fetch("/v1/models", { headers: headers() });
  if (!response.ok) { showError(await errorOf(response)); return; }
  const select = $("model");
  select.replaceChildren();
  for (const model of (await response.json()).data) {
    const option = document.createElement("option");
    option.value = option.textContent = model.id;
    select.appendChild(option);
  }
}

let trendsAsked = 0;  // only the latest request's trends are shown, whichever answers last

async function loadTrends() {
  const asked = ++trendsAsked;
  const list = $("trend-list");
  const window_ = encodeURIComponent($("trend-window").value);
  const response = await fetch("/v1/trends?limit=10&window=" + window_, { headers: headers() });
  if (asked !== trendsAsked) return;
  list.replaceChildren();
  if (!response.ok) {
    $("trends-note").textContent = response.status === 404 ? "This server has no live post store." : await errorOf(response);
    return;
  }
  const found = (await response.json()).trends || [];
  if (asked !== trendsAsked) return;
  $("trends-note").textContent = found.length ? "" : "Nothing is trending in this window.";
  for (const trend of found) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = trend.term;
    button.title = "Ask about " + trend.term;
    button.addEventListener("click", () => {
      $("prompt").value = "What are people saying about " + trend.term + "?";
      $("post-query").value = trend.term;
      searchPosts();
      $("prompt").focus();
    });
    item.appendChild(button);
    list.appendChild(item);
  }
}

async function searchPosts(event) {
  if (event) event.preventDefault();
  const query = $("post-query").value.trim();
  const list = $("post-results");
  list.replaceChildren();
  if (!query) return;
  const response = await fetch("/v1/posts/search?max_search_results=5&query=" + encodeURIComponent(query),
                               { headers: headers() });
  if (!response.ok) { showError(await errorOf(response)); return; }
  for (const post of (await response.json()).posts) {
    const item = document.createElement("li");
    const author = document.createElement("div");
    author.className = "who";
    author.textContent = "@" + (post.username || "unknown") + " · " + post.created_at.slice(0, 16).replace("T", " ");
    const text = document.createElement("div");
    text.appendChild(renderMarkdown(post.text));
    item.append(author, text, safeLink(post.url, "open on X"));
    list.appendChild(item);
  }
  if (!list.children.length) list.textContent = "No posts found.";
}

// --- the conversation ----------------------------------------------------------------------------

function addEntry(role, text) {
  const item = document.createElement("li");
  item.className = role;
  const who = document.createElement("div");
  who.className = "who";
  who.textContent = role === "user" ? "You" : "Assistant";
  const body = document.createElement("div");
  body.className = "body";
  body.appendChild(renderMarkdown(text));
  item.append(who, body);
  $("log").appendChild(item);
  return item;
}

async function speak(entry, text, button) {
  button.disabled = true;
  try {
    const response = await fetch("/v1/audio/speech", { method: "POST", headers: headers(),
      body: JSON.stringify({ model: $("model").value, input: text, response_format: "wav" }) });
    if (!response.ok) { showError(await errorOf(response)); return; }
    const audio = document.createElement("audio");
    audio.controls = true;
    audio.src = URL.createObjectURL(await response.blob());
    audio.setAttribute("aria-label", "The answer, spoken");
    entry.appendChild(audio);
  } finally {
    button.disabled = false;
  }
}

function addSpeakButton(entry, text) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "speak";
  button.textContent = "Say it";
  button.addEventListener("click", () => speak(entry, text, button));
  entry.appendChild(button);
}

function showCitations(entry, urls) {
  const list = document.createElement("ol");
  list.className = "citations";
  list.setAttribute("aria-label", "Sources");
  for (const url of urls) {
    const item = document.createElement("li");
    item.appendChild(safeLink(url, url));
    list.appendChild(item);
  }
  entry.appendChild(list);
}

function showImages(entry, images) {
  for (const image of images) {
    const url = image.image_url && image.image_url.url;
    if (typeof url !== "string" || !url.startsWith("data:image/png;base64,")) continue;
    const img = document.createElement("img");
    img.src = url;
    img.alt = "An image the model drew";
    entry.appendChild(img);
  }
}

async function readAttachment(file) {
  const data = await new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
  if (file.type.startsWith("image/")) return { type: "image_url", image_url: { url: data } };
  return { type: "input_audio", input_audio: { data: data.split(",")[1], format: file.type === "audio/mpeg" ? "mp3" : "wav" } };
}

async function send(event) {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text && !attachment) return;
  showError("");
  const content = attachment ? [{ type: "text", text }, attachment] : text;
  conversation.push({ role: "user", content });
  addEntry("user", text + (attachment ? "\n\n(" + $("attached").textContent + ")" : ""));
  $("prompt").value = "";
  attachment = null;
  $("attach").value = "";
  $("attached").textContent = "";
  const body = { model: $("model").value, messages: conversation, stream: true };
  if ($("search").checked) body.search_parameters = { mode: "on", return_citations: true };
  $("send").disabled = true;
  const entry = addEntry("assistant", "");
  let answer = "";
  try {
    const response = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body) });
    if (!response.ok) { conversation.pop(); entry.remove(); showError(await errorOf(response)); return; }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let pending = "";
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      pending += decoder.decode(value, { stream: true });
      let end;
      while ((end = pending.indexOf("\n\n")) >= 0) {
        const line = pending.slice(0, end).trim();
        pending = pending.slice(end + 2);
        if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
        const chunk = JSON.parse(line.slice(6));
        if (chunk.error) { showError(chunk.error.message); continue; }
        for (const choice of chunk.choices || []) {
          const delta = choice.delta || {};
          if (delta.content) {
            answer += delta.content;
            entry.querySelector(".body").replaceChildren(renderMarkdown(answer));
          }
          if (delta.images) showImages(entry, delta.images);
        }
        if (chunk.citations) showCitations(entry, chunk.citations);
      }
    }
    conversation.push({ role: "assistant", content: answer });
    if (answer.trim()) addSpeakButton(entry, answer);
  } catch (e) {
    showError("The answer stopped: " + e.message);
  } finally {
    $("send").disabled = false;
    $("prompt").focus();
  }
}

// --- wiring --------------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  restoreKey();
  $("api-key").addEventListener("change", () => { keepKey(); loadModels(); loadTrends(); });
  $("remember-key").addEventListener("change", keepKey);
  $("composer").addEventListener("submit", send);
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("composer").requestSubmit(); }
  });
  $("attach").addEventListener("change", async () => {
    const file = $("attach").files[0];
    attachment = file ? await readAttachment(file) : null;
    $("attached").textContent = file ? "attached: " + file.name : "";
  });
  $("refresh-trends").addEventListener("click", loadTrends);
  $("trend-window").addEventListener("change", loadTrends);
  $("post-search").addEventListener("submit", searchPosts);
  loadModels();
  loadTrends();
});
