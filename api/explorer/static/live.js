// Live updates: new blocks appear without a reload.
// Server-sent events from /api/v1/events; when the stream drops, poll /api/v1/blocks every
// POLL_MS and try the stream again after RETRY_MS. Pages opt in with <body data-live>.
(function () {
  "use strict";
  var POLL_MS = 2000, RETRY_MS = 10000;
  var table = document.getElementById("latest-blocks");
  var heightEl = document.getElementById("head-height");
  var statusEl = document.getElementById("live-status");
  var names = {};
  var lastHeight = 0, source = null, pollTimer = null, retryTimer = null;

  if (table) {
    var first = table.querySelector("tbody tr[data-height]");
    if (first) lastHeight = parseInt(first.getAttribute("data-height"), 10);
    table.querySelectorAll("a.hash[href^='/accounts/']").forEach(function (a) {
      names[a.getAttribute("title")] = a.textContent;
    });
  }
  if (heightEl) lastHeight = Math.max(lastHeight, parseInt(heightEl.textContent, 10) || 0);

  function setStatus(mode, text) {
    if (!statusEl) return;
    statusEl.hidden = false;
    statusEl.className = "live-status " + mode;
    statusEl.textContent = text;
    document.body.setAttribute("data-live-mode", mode);
  }
  function short(h) { return h.slice(0, 8) + "\u2026" + h.slice(-4); }
  function ago(ms) {
    var s = Math.max(0, Math.round(Date.now() / 1000 - ms / 1000));
    return s < 60 ? s + " s ago" : Math.floor(s / 60) + " min ago";
  }
  function cell(tr, html, cls) {
    var td = document.createElement("td");
    if (cls) td.className = cls;
    td.innerHTML = html;
    tr.appendChild(td);
  }
  function esc(s) { return String(s).replace(/[&<>"]/g, function (c) {
    return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]; }); }

  // The home page's tiles (rate, validators up, view), refreshed at most every TILES_MS.
  var TILES_MS = 3000, tilesAt = 0;
  function refreshTiles() {
    var rate = document.getElementById("tx-rate");
    if (!rate || Date.now() - tilesAt < TILES_MS) return;
    tilesAt = Date.now();
    fetch("/api/v1/stats/overview?blocks=1&jobs=0", { cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (o) {
        if (!o) return;
        rate.firstChild.textContent = o.rate.txs_per_s + " ";
        var up = document.getElementById("validators-up");
        if (up) up.textContent = o.validators_up + " / " + o.validators;
        var view = document.getElementById("view");
        if (view) view.textContent = o.view;
      })
      .catch(function () {});
  }

  // b: {height, hash, n_txs, proposer, view, time_ms}
  function addBlock(b) {
    if (b.height <= lastHeight) return;
    lastHeight = b.height;
    if (heightEl) heightEl.textContent = b.height;
    var headTime = document.getElementById("head-time");
    if (headTime) headTime.textContent = "last block " + ago(b.time_ms);
    refreshTiles();
    if (!table || table.hasAttribute("data-static")) return;
    var tr = document.createElement("tr");
    tr.setAttribute("data-height", b.height);
    tr.className = "fresh";
    cell(tr, '<a href="/blocks/' + b.height + '">' + b.height + "</a>");
    cell(tr, '<a class="hash" href="/blocks/' + esc(b.hash) + '" title="' + esc(b.hash) + '">' + short(b.hash) + "</a>");
    cell(tr, String(b.n_txs), "num");
    var who = names[b.proposer] || short(b.proposer);
    cell(tr, '<a class="hash" href="/accounts/' + esc(b.proposer) + '" title="' + esc(b.proposer) + '">' + esc(who) + "</a>");
    cell(tr, String(b.view), "num");
    cell(tr, ago(b.time_ms));
    var body = table.tBodies[0];
    body.insertBefore(tr, body.firstChild);
    var max = parseInt(table.getAttribute("data-max-rows") || "10", 10);
    while (body.rows.length > max) body.deleteRow(body.rows.length - 1);
    var empty = table.parentNode.querySelector(".empty");
    if (empty) empty.remove();
  }

  function poll(quiet) {
    fetch("/api/v1/blocks?limit=20", { cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (page) {
        if (!quiet) setStatus("polling", "live (polling)");
        page.blocks.slice().reverse().forEach(function (b) {
          addBlock({ height: b.height, hash: b.hash, n_txs: b.header.n_txs,
                     proposer: b.header.proposer, view: b.header.view, time_ms: b.header.time_ms });
        });
      })
      .catch(function () { setStatus("offline", "node unreachable, retrying"); });
  }
  function startPolling() {
    if (pollTimer) return;
    poll(false);
    pollTimer = setInterval(function () { poll(false); }, POLL_MS);
    if (!retryTimer) retryTimer = setTimeout(function () { retryTimer = null; connect(); }, RETRY_MS);
  }
  function stopPolling() {
    if (pollTimer) { clearInterval(pollTimer); pollTimer = null; }
  }
  function connect() {
    if (!window.EventSource) { startPolling(); return; }
    if (source) source.close();
    source = new EventSource("/api/v1/events");
    source.addEventListener("open", function () { stopPolling(); setStatus("stream", "live"); });
    source.addEventListener("head", function (e) {
      var head = JSON.parse(e.data);
      if (head.height > lastHeight) poll(true);  // blocks committed while we were away
    });
    source.addEventListener("block", function (e) { addBlock(JSON.parse(e.data)); });
    source.addEventListener("error", function () {
      source.close();
      source = null;
      startPolling();
    });
  }
  connect();
})();
