/* mnist-edge service worker: after the first visit the page works with the network gone.
 * `mnist-edge export --format web` fills in the cache name (a hash of the files) and the list of
 * files to keep: the page, model.json, the models and the wasm runtime. Navigations go to the
 * network first (a new export shows at once) and fall back to the cache; everything else comes
 * from the cache first, and what the network answers with 200 is kept for next time. */
"use strict";
const CACHE = "{{CACHE}}";
const PRECACHE = {{PRECACHE}};

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(PRECACHE)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys.filter((k) => k.startsWith("mnist-edge-") && k !== CACHE).map((k) => caches.delete(k))))
    .then(() => self.clients.claim()));
});

async function keep(request, response) {
  if (response.ok && new URL(request.url).origin === self.location.origin) {
    const c = await caches.open(CACHE);
    await c.put(request, response.clone());
  }
  return response;
}

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET") return;
  if (request.mode === "navigate") {
    event.respondWith(fetch(request).then((r) => keep(request, r))
      .catch(() => caches.match(request, { ignoreSearch: true }).then((r) => r || caches.match("./"))));
    return;
  }
  event.respondWith(caches.match(request).then((hit) => hit || fetch(request).then((r) => keep(request, r))));
});
