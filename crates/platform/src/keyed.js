// API keys and live streams in the browser, shared by the services' pages (served as /keyed.js).
// A key is kept in sessionStorage for the tab and sent as `Authorization: Bearer` — never in a
// URL, where it would end up in logs; server-sent events are read with fetch so that the
// stream request carries the header too.
"use strict";

const Keyed = {
  // The sessionStorage entry a page keeps its key in.
  storageKey: "api-key",

  key() { return sessionStorage.getItem(Keyed.storageKey); },
  remember(key) { sessionStorage.setItem(Keyed.storageKey, key); },
  forget() { sessionStorage.removeItem(Keyed.storageKey); },

  // `extra` headers plus the Authorization header when a key is kept.
  headers(extra) {
    const headers = Object.assign({}, extra);
    const key = Keyed.key();
    if (key) { headers.Authorization = "Bearer " + key; }
    return headers;
  },

  // fetch with the kept key.
  fetch(url, options) {
    const opts = Object.assign({ cache: "no-store" }, options);
    opts.headers = Keyed.headers(opts.headers);
    return fetch(url, opts);
  },

  // Resolvers of the pages' requests waiting for a key.
  waiting: [],

  // Shows the page's key form (#key-form, with #key and #key-error) with `message`; resolves
  // once a key is typed there and kept (every request waiting then goes on with it).
  ask(message) {
    const form = document.getElementById("key-form");
    const input = document.getElementById("key");
    if (!form.dataset.bound) {
      form.dataset.bound = "yes";
      form.addEventListener("submit", (e) => {
        e.preventDefault();
        const key = input.value.trim();
        if (!key) { return; }
        Keyed.remember(key);
        input.value = "";
        form.hidden = true;
        const waiting = Keyed.waiting;
        Keyed.waiting = [];
        waiting.forEach((resolve) => resolve());
      });
    }
    document.getElementById("key-error").textContent = message;
    form.hidden = false;
    input.focus();
    return new Promise((resolve) => Keyed.waiting.push(resolve));
  },

  // Reads a text/event-stream response until it ends, calling onEvent(name, data) per event
  // (data: the joined `data:` lines; name: `message` unless an `event:` line says otherwise).
  async readEvents(response, onEvent) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) { return; }
      buffer += value.replace(/\r\n/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) { name = line.slice(6).trim(); }
          else if (line.startsWith("data:")) { data.push(line.slice(5).replace(/^ /, "")); }
        }
        if (data.length) { onEvent(name, data.join("\n")); }
      }
    }
  },
};
