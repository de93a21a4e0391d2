// A small Markdown renderer that builds DOM nodes and never parses HTML: whatever an answer or a post holds
// (<script>, onerror=...) ends up as text. Fenced code, paragraphs, lists, headings; inline code, bold,
// italics and links (http and https only).
"use strict";

function renderMarkdown(text) {
  const root = document.createDocumentFragment();
  const lines = text.split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = line.match(/^```\s*([\w+-]*)\s*$/);
    if (fence) {
      const code = [];
      i += 1;
      while (i < lines.length && !/^```\s*$/.test(lines[i])) code.push(lines[i++]);
      i += 1;  // the closing fence (or the end of an answer still streaming)
      const pre = document.createElement("pre");
      const el = document.createElement("code");
      if (fence[1]) el.dataset.language = fence[1];
      el.textContent = code.join("\n");
      pre.appendChild(el);
      root.appendChild(pre);
      continue;
    }
    if (/^\s*$/.test(line)) { i += 1; continue; }
    const heading = line.match(/^(#{1,6})\s+(.*)$/);
    if (heading) {
      const h = document.createElement("h" + Math.min(6, heading[1].length + 2));
      appendInline(h, heading[2]);
      root.appendChild(h);
      i += 1;
      continue;
    }
    if (/^\s*([-*]|\d+\.)\s+/.test(line)) {
      const ordered = /^\s*\d+\./.test(line);
      const list = document.createElement(ordered ? "ol" : "ul");
      while (i < lines.length && /^\s*([-*]|\d+\.)\s+/.test(lines[i])) {
        const item = document.createElement("li");
        appendInline(item, lines[i].replace(/^\s*([-*]|\d+\.)\s+/, ""));
        list.appendChild(item);
        i += 1;
      }
      root.appendChild(list);
      continue;
    }
    const paragraph = [];
    while (i < lines.length && !/^\s*$/.test(lines[i]) && !/^```/.test(lines[i])) paragraph.push(lines[i++]);
    const p = document.createElement("p");
    appendInline(p, paragraph.join("\n"));
    root.appendChild(p);
  }
  return root;
}

const INLINE = /(`[^`]+`)|(\*\*[^*]+\*\*)|(\*[^*\s][^*]*\*)|(\[[^\]]+\]\((https?:\/\/[^\s)]+)\))/;

function appendInline(parent, text) {
  while (text) {
    const match = text.match(INLINE);
    if (!match) { parent.appendChild(document.createTextNode(text)); return; }
    if (match.index > 0) parent.appendChild(document.createTextNode(text.slice(0, match.index)));
    const token = match[0];
    let el;
    if (match[1]) { el = document.createElement("code"); el.textContent = token.slice(1, -1); }
    else if (match[2]) { el = document.createElement("strong"); el.textContent = token.slice(2, -2); }
    else if (match[3]) { el = document.createElement("em"); el.textContent = token.slice(1, -1); }
    else { el = safeLink(match[5], token.slice(1, token.indexOf("]("))); }
    parent.appendChild(el);
    text = text.slice(match.index + token.length);
  }
}

function safeLink(url, label) {
  if (!/^https?:\/\//.test(url)) return document.createTextNode(label);
  const a = document.createElement("a");
  a.href = url;
  a.textContent = label;
  a.rel = "noopener noreferrer";
  a.target = "_blank";
  return a;
}
