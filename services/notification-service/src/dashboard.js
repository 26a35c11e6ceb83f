"use strict";
// Everything is inserted with textContent: event data is never interpreted as HTML.
Keyed.storageKey = "notifications-read-key";
const $ = (id) => document.getElementById(id);

function row(cells, status) {
  const tr = document.createElement("tr");
  cells.forEach((value, i) => {
    const td = document.createElement("td");
    td.textContent = value == null ? "" : String(value);
    if (i === status) { td.className = "status " + value; }
    tr.appendChild(td);
  });
  return tr;
}

async function get(url, headers) {
  for (;;) {
    const hadKey = Keyed.key() != null;
    const response = await Keyed.fetch(url, { headers });
    if (response.status !== 401) { return response; }
    Keyed.forget();
    await Keyed.ask(hadKey ? "That key was not accepted." : "");
  }
}

const live = $("live");
const liveRows = new Map();
function showDelivery(d, newest) {
  if (!newest && liveRows.has(d.id)) { return; }
  const tr = row([d.updatedAt, d.customerId, d.kind, d.recipient, d.subject, d.status, d.attempts], 5);
  const old = liveRows.get(d.id);
  if (old) { old.replaceWith(tr); } else if (newest) { live.prepend(tr); } else { live.append(tr); }
  liveRows.set(d.id, tr);
}

// The latest deliveries are there when the page opens, below the live updates (newer, they win).
let recentLoaded = false;
async function loadRecent() {
  const response = await get("notifications/recent?limit=100");
  if (!response.ok) { return; }
  const body = await response.json();
  body.items.forEach((d) => showDelivery(d, false));
}

function onEvent(name, data) {
  if (name === "ready") {
    $("live-state").textContent = "(connected)";
    if (!recentLoaded) { recentLoaded = true; loadRecent(); }
  } else if (name === "delivery") {
    const d = JSON.parse(data);
    showDelivery(d, true);
    if ($("customer").value.trim() === d.customerId) { loadLog(); }
  }
}

async function follow() {
  let delay = 500;
  for (;;) {
    try {
      const response = await get("notifications/stream", { Accept: "text/event-stream" });
      if (response.ok && response.body) {
        delay = 500;
        await Keyed.readEvents(response, onEvent);
      }
    } catch (e) { /* connection lost */ }
    $("live-state").textContent = "(reconnecting…)";
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 10000);
  }
}

async function loadLog() {
  const id = $("customer").value.trim();
  $("log-error").textContent = "";
  const response = await get("notifications?customerId=" + encodeURIComponent(id));
  const body = await response.json();
  if (!response.ok) { $("log-error").textContent = body.detail || response.statusText; return; }
  $("log").replaceChildren(...body.items.map(d => row(
    [d.createdAt, d.kind, d.transactionId, d.recipient, d.subject, d.status, d.attempts, d.sentAt, d.lastError], 5)));
}
$("log-form").addEventListener("submit", (e) => { e.preventDefault(); loadLog(); });

// Asks for the key before the first request when one is needed (no refused request first).
(async () => {
  try {
    const config = await (await fetch("auth/config", { cache: "no-store" })).json();
    if (config.keyRequired && !Keyed.key()) { await Keyed.ask(""); }
  } catch (e) { /* the requests will tell */ }
  follow();
})();
