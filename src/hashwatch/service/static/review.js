// hashwatch review queue. All data comes from /v1 with the reviewer's key (kept in this
// tab's sessionStorage only). Images are fetched with the key and shown from blob: URLs.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  let key = sessionStorage.getItem("hw_review_key") || "";
  let items = [];
  let pos = 0;
  let revealed = false;
  let busy = false;
  let blobUrl = null;

  function api(path, opts = {}) {
    opts.headers = Object.assign({ Authorization: "Bearer " + key }, opts.headers || {});
    return fetch("/v1" + path, opts);
  }
  function status(text) { $("status").textContent = text; }
  function setImage(blob, clear) {
    if (blobUrl) URL.revokeObjectURL(blobUrl);
    blobUrl = URL.createObjectURL(blob);
    const img = $("image");
    img.className = clear ? "revealed" : "protected";
    img.alt = clear ? "matched upload (revealed)" : "matched upload, blurred";
    img.src = blobUrl;
    $("reveal").classList.toggle("is-revealed", clear);
    document.body.dataset.revealed = clear ? "1" : "0";
  }
  async function load() {
    const r = await api("/review/items?status=pending&limit=500");
    if (!r.ok) { status("Cannot load the queue: HTTP " + r.status); $("item").hidden = true; return; }
    items = (await r.json()).items;
    pos = Math.min(pos, Math.max(0, items.length - 1));
    await show();
  }
  async function show() {
    $("count").textContent = items.length + " pending";
    if (!items.length) { $("item").hidden = true; status("Queue empty."); return; }
    const it = items[pos];
    revealed = false;
    $("item").hidden = false;
    $("item").dataset.itemId = it.id;
    status("Item " + (pos + 1) + " of " + items.length);
    $("caption").textContent = "#" + it.id + " " + it.filename + " (" + it.created_at + ")";
    const tb = $("matches").querySelector("tbody");
    tb.replaceChildren(...it.matches.map((m) => {
      const tr = document.createElement("tr");
      for (const v of [m.list, m.category || "-", m.distance, m.ref || ""]) {
        const td = document.createElement("td"); td.textContent = String(v); tr.append(td);
      }
      return tr;
    }));
    const r = await api("/review/items/" + it.id + "/thumb");
    if (r.ok) setImage(await r.blob(), false);
  }
  async function reveal() {
    if (!items.length || revealed) return;
    const r = await api("/review/items/" + items[pos].id + "/preview");
    if (!r.ok) { status("Cannot reveal: HTTP " + r.status); return; }
    revealed = true;
    setImage(await r.blob(), true);
  }
  async function hide() { if (revealed) await show(); }
  async function decide(decision, allow) {
    if (!items.length || busy) return;
    busy = true;
    try {
      const it = items[pos];
      const r = await api("/review/items/" + it.id + "/decision", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ decision, allow_list: !!allow, note: $("note").value }),
      });
      if (!r.ok) { status("Decision failed: HTTP " + r.status); return; }
      $("note").value = "";
      items.splice(pos, 1);
      if (pos >= items.length) pos = Math.max(0, items.length - 1);
      document.body.dataset.lastDecision = it.id + ":" + decision + (allow ? "+allow" : "");
      await show();
    } finally { busy = false; }
  }
  $("keyform").addEventListener("submit", (e) => {
    e.preventDefault();
    key = $("apikey").value.trim();
    sessionStorage.setItem("hw_review_key", key);
    $("apikey").value = "";
    load();
  });
  $("reveal").addEventListener("click", () => { revealed ? hide() : reveal(); });
  for (const b of document.querySelectorAll("[data-decision]")) {
    b.addEventListener("click", () => decide(b.dataset.decision, b.dataset.allow === "1"));
  }
  document.addEventListener("keydown", (e) => {
    if (e.target instanceof HTMLInputElement || e.ctrlKey || e.metaKey || e.altKey) return;
    const k = e.key.toLowerCase();
    const acts = {
      c: () => decide("confirm"), f: () => decide("false_positive"),
      a: () => decide("false_positive", true), e: () => decide("escalate"),
      r: () => reveal(), h: () => hide(),
      j: () => { if (pos < items.length - 1) { pos++; show(); } },
      k: () => { if (pos > 0) { pos--; show(); } },
    };
    if (acts[k]) { e.preventDefault(); acts[k](); }
  });
  if (key) load();
})();
