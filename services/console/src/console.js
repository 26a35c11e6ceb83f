// The event console: one server-sent-event stream (read with fetch, so that a key can go in an
// Authorization header and never in a URL), kept in memory and drawn on every change. Text
// from events is only ever inserted with textContent.
"use strict";

Keyed.storageKey = "console-read-key";
const MAX_ROWS = 300;
const TOPICS = ["Customer.created", "transaction.requested", "transaction.processed", "transaction.failed"];
const model = { events: new Map(), accounts: new Map(), deliveries: new Map(), health: null };
const $ = (id) => document.getElementById(id);

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text != null) { node.textContent = String(text); }
  if (className) { node.className = className; }
  return node;
}
function time(ms) { return ms == null || isNaN(ms) ? "" : new Date(ms).toISOString().slice(11, 23); }
function ms(text) { return text ? Date.parse(text) : null; }
function eventKey(e) { return e.topic + "/" + e.partition + "/" + e.offset; }
function topicClass(topic) {
  if (topic.endsWith(".DLT")) { return "t-dlt"; }
  if (topic.startsWith("Customer")) { return "t-customer"; }
  return "t-" + topic.split(".")[1];
}
function setState(text, className) { const s = $("state"); s.textContent = text; s.className = "pill " + (className || ""); }

// ---- the stream -------------------------------------------------------------------------

let retryDelay = 500;
async function start() {
  for (const t of TOPICS.concat(TOPICS.map((t) => t + ".DLT"))) { $("f-topic").append(el("option", t)); }
  let keyRequired = false;
  try {
    const config = await (await fetch("auth/config", { cache: "no-store" })).json();
    keyRequired = config.keyRequired;
  } catch (e) { /* the stream will tell */ }
  if (keyRequired && !Keyed.key()) { askKey(""); return; }
  connect();
}

function askKey(message) {
  setState("key needed", "down");
  Keyed.ask(message).then(connect);
}

async function connect() {
  setState("connecting…");
  let response;
  try {
    response = await Keyed.fetch("api/stream", { headers: { Accept: "text/event-stream" } });
  } catch (e) {
    return reconnect();
  }
  if (response.status === 401) {
    Keyed.forget();
    return askKey("That key was not accepted.");
  }
  if (!response.ok || !response.body) { return reconnect(); }
  setState("live", "live");
  retryDelay = 500;
  try {
    await Keyed.readEvents(response, dispatch);
  } catch (e) { /* connection lost */ }
  reconnect();
}

function reconnect() {
  setState("reconnecting…", "down");
  setTimeout(connect, retryDelay);
  retryDelay = Math.min(retryDelay * 2, 10000);
}

function dispatch(name, data) {
  const value = JSON.parse(data);
  switch (name) {
    case "snapshot":
      model.events.clear(); model.accounts.clear(); model.deliveries.clear();
      value.events.forEach(addEvent);
      value.accounts.forEach((a) => model.accounts.set(a.id, a));
      value.deliveries.forEach((d) => model.deliveries.set(d.id, d));
      model.health = value.health;
      changed.add("all");
      break;
    case "event": addEvent(value); changed.add("events"); break;
    case "account": model.accounts.set(value.id, value); changed.add("account:" + value.id); break;
    case "delivery": model.deliveries.set(value.id, value); changed.add("deliveries"); break;
    case "health": model.health = value; changed.add("health"); break;
  }
  scheduleDraw();
}

function addEvent(e) { model.events.set(eventKey(e), e); }

// ---- drawing ----------------------------------------------------------------------------

const changed = new Set();
let drawPending = false;
function scheduleDraw() {
  if (drawPending) { return; }
  drawPending = true;
  requestAnimationFrame(() => { drawPending = false; draw(); });
}

function draw() {
  const all = changed.has("all");
  drawEvents();
  drawTimeline();
  drawAccounts(all ? null : [...changed].filter((c) => c.startsWith("account:")).map((c) => c.slice(8)));
  if (all || changed.has("health") || changed.has("events")) { drawHealth(); }
  changed.clear();
}

function filters() {
  return { topic: $("f-topic").value, customer: $("f-customer").value.trim(), txn: $("f-txn").value.trim() };
}

function sortedEvents() {
  return [...model.events.values()].sort((a, b) => b.timestamp - a.timestamp || b.offset - a.offset);
}

function summary(e) {
  const p = e.payload || {};
  if (e.topic.endsWith(".DLT")) { return (e.headers.dlt_error || "dead letter"); }
  if (typeof p !== "object") { return String(p).slice(0, 120); }
  if (e.topic === "Customer.created") { return (p.name || "") + " (" + (p.id || "") + ")"; }
  const route = (p.from || "·") + " → " + (p.to || "·");
  const base = (p.kind || "") + " " + (p.amount || "") + " " + (p.currency || "") + "  " + route;
  if (e.topic === "transaction.failed") { return base + "  ✗ " + (p.reason || ""); }
  if (e.topic === "transaction.processed" && p.balances) {
    return base + "  ✓ " + Object.entries(p.balances).map(([k, v]) => k + "=" + v).join(" ");
  }
  return base;
}

function drawEvents() {
  const f = filters();
  const rows = [];
  let shown = 0;
  for (const e of sortedEvents()) {
    if (f.topic && e.topic !== f.topic) { continue; }
    if (f.customer && !(e.customers.includes(f.customer) || e.key === f.customer)) { continue; }
    if (f.txn && e.transactionId !== f.txn) { continue; }
    shown += 1;
    if (rows.length >= MAX_ROWS) { continue; }
    const tr = el("tr");
    tr.dataset.topic = e.topic;
    if (e.transactionId) { tr.dataset.transaction = e.transactionId; }
    tr.append(el("td", time(e.timestamp), "time"));
    const topic = el("td"); topic.append(el("span", e.topic, "topic " + topicClass(e.topic))); tr.append(topic);
    tr.append(el("td", e.key || ""));
    tr.append(el("td", summary(e)));
    tr.append(el("td", e.transactionId || ""));
    tr.addEventListener("click", () => pick(e));
    rows.push(tr);
  }
  $("events").tBodies[0].replaceChildren(...rows);
  $("events-count").textContent = shown + " of " + model.events.size + " recent";
}

function pick(e) {
  if (e.transactionId) { $("f-txn").value = e.transactionId; }
  else if (e.customers.length) { $("f-customer").value = e.customers[0]; }
  changed.add("all");
  scheduleDraw();
}

// One transaction's path: request accepted → transaction.requested → outcome → each alert
// recorded and sent.
function hops(txn) {
  const events = [...model.events.values()].filter((e) => e.transactionId === txn);
  const requested = events.find((e) => e.topic === "transaction.requested");
  const outcome = events.find((e) => e.topic === "transaction.processed" || e.topic === "transaction.failed");
  const list = [];
  const source = requested || outcome;
  const payload = source && typeof source.payload === "object" ? source.payload : {};
  if (payload.requestedAt) {
    list.push({ hop: "accepted", at: ms(payload.requestedAt), label: "request accepted",
      detail: (payload.kind || "") + " " + (payload.amount || "") + " " + (payload.currency || "") + " " + (payload.from || "·") + " → " + (payload.to || "·") });
  }
  if (requested) {
    list.push({ hop: "requested", at: requested.timestamp, label: "transaction.requested",
      detail: "partition " + requested.partition + ", offset " + requested.offset });
  }
  if (outcome) {
    const p = outcome.payload || {};
    const ok = outcome.topic === "transaction.processed";
    list.push({ hop: "outcome", at: outcome.timestamp, label: outcome.topic, className: ok ? "" : "failed",
      detail: ok ? "balances " + Object.entries(p.balances || {}).map(([k, v]) => k + " " + v).join(", ") : (p.reason || "") + ": " + (p.message || "") });
  }
  const deliveries = [...model.deliveries.values()].filter((d) => d.transactionId === txn)
    .sort((a, b) => ms(a.createdAt) - ms(b.createdAt));
  for (const d of deliveries) {
    list.push({ hop: "alert-recorded", at: ms(d.createdAt), label: "alert recorded", detail: d.kind + " for " + d.customerId });
    if (d.sentAt) {
      list.push({ hop: "alert-sent", at: ms(d.sentAt), label: "alert sent", detail: d.kind + " to " + d.customerId + " (attempt " + d.attempts + ")" });
    } else {
      list.push({ hop: "alert-" + d.status, at: ms(d.updatedAt), label: "alert " + d.status, className: d.status === "failed" ? "bad" : "pending",
        detail: d.kind + " for " + d.customerId + (d.lastError ? ": " + d.lastError : "") });
    }
  }
  list.sort((a, b) => a.at - b.at);
  const trace = (requested && requested.traceId) || (outcome && outcome.traceId) || null;
  const complete = Boolean(requested && outcome && deliveries.length && deliveries.every((d) => d.sentAt));
  return { list, trace, complete };
}

function latestTransaction() {
  for (const e of sortedEvents()) { if (e.transactionId) { return e.transactionId; } }
  return null;
}

function drawTimeline() {
  const txn = filters().txn || latestTransaction();
  const ol = $("timeline");
  $("timeline-id").textContent = txn || "";
  $("timeline-hint").hidden = Boolean(txn);
  if (!txn) { ol.replaceChildren(); $("trace").textContent = ""; return; }
  const { list, trace, complete } = hops(txn);
  ol.dataset.transaction = txn;
  ol.dataset.complete = String(complete);
  $("trace").textContent = trace ? "trace id " + trace : "";
  $("trace").dataset.trace = trace || "";
  const start = list.length ? list[0].at : 0;
  let previous = start;
  ol.replaceChildren(...list.map((h) => {
    const li = el("li", null, h.className);
    li.dataset.hop = h.hop;
    const body = el("div");
    body.append(el("div", h.label), el("div", h.detail, "hop-detail"));
    const when = el("div", null, "hop-delta");
    when.append(el("div", time(h.at), "hop-time"), el("div", "+" + Math.max(0, h.at - previous) + " ms"));
    previous = h.at;
    li.append(body, when);
    return li;
  }));
}

function drawAccounts(only) {
  const tbody = $("accounts").tBodies[0];
  const f = filters();
  const rows = [...model.accounts.values()]
    .filter((a) => !f.customer || a.id === f.customer)
    .sort((a, b) => a.id.localeCompare(b.id))
    .map((a) => {
      const tr = el("tr");
      tr.dataset.account = a.id;
      tr.append(el("td", a.id), el("td", a.name || ""),
        el("td", a.balance == null ? "…" : a.balance + " " + (a.currency || ""), "num balance"));
      if (only && only.includes(a.id)) { tr.className = "flash"; }
      return tr;
    });
  tbody.replaceChildren(...rows);
}

function drawHealth() {
  const h = model.health;
  if (!h) { return; }
  $("health-time").textContent = h.checkedAt ? "measured " + h.checkedAt.slice(11, 19) + " UTC" : "";
  $("health-error").textContent = h.error || "";
  $("lag").tBodies[0].replaceChildren(...h.lag.map((l) => {
    const tr = el("tr");
    tr.append(el("td", l.group), el("td", l.topic), el("td", l.partition, "num"),
      el("td", l.committed == null ? "—" : l.committed, "num"), el("td", l.end, "num"), el("td", l.lag, "num" + (l.lag > 0 ? " error" : "")));
    return tr;
  }));
  $("outbox").tBodies[0].replaceChildren(...(h.outbox || []).map((o) => {
    const tr = el("tr");
    tr.dataset.service = o.service;
    const age = o.oldestPendingAgeSeconds;
    tr.append(el("td", o.service),
      el("td", o.pendingRows == null ? "n/a" : o.pendingRows, "num" + (o.pendingRows > 0 ? " error" : "")),
      el("td", age == null ? "n/a" : age.toFixed(1) + " s", "num"));
    return tr;
  }));
  const letters = sortedEvents().filter((e) => e.topic.endsWith(".DLT"));
  $("dead-letters").replaceChildren(...h.deadLetters.map((d) => {
    const li = el("li");
    li.dataset.topic = d.topic;
    li.append(el("span", d.topic + ": "), el("strong", d.count, d.count > 0 ? "error" : ""));
    for (const e of letters.filter((e) => e.topic === d.topic)) {
      const details = el("details");
      details.append(el("summary", time(e.timestamp) + " " + (e.headers.dlt_original_topic || "") + "#" + (e.headers.dlt_original_offset || "") + " — " + (e.headers.dlt_error || "")));
      details.append(el("pre", Object.entries(e.headers).map(([k, v]) => k + ": " + v).join("\n")));
      li.append(details);
    }
    return li;
  }));
}

for (const id of ["f-topic", "f-customer", "f-txn"]) {
  $(id).addEventListener("input", () => { changed.add("all"); scheduleDraw(); });
}
$("filters").addEventListener("submit", (e) => e.preventDefault());
start();
