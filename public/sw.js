// Graft's service worker: keeps the app working offline once it has been loaded.
//
// On install it caches the page, every asset the page names (hashed wasm/js/css) and the files the
// training worker loads (its build, the helper scripts, model manifest and weights). Only this origin is ever fetched.
const CACHE = "graft-v1";
const named = new URL(self.location.href).searchParams.get("worker");
const workerBuilds = ["worker", "worker-cpu"].includes(named) ? [named] : ["worker", "worker-cpu"];

async function precache() {
  const cache = await caches.open(CACHE);
  const index = await fetch("./", { cache: "no-store" });
  const html = await index.clone().text();
  await cache.put("./", index);
  const assets = [...html.matchAll(/(?:href|src)="([^"]+)"/g)]
    .map((m) => m[1])
    .filter((url) => !url.startsWith("http") && !url.startsWith("data:"));
  const fixed = [
    // The training worker: the build this page started (`sw.js?worker=worker-cpu`, for a browser
    // without a usable GPU, or `worker`), both when not named. The other build, should a person
    // switch "Compute on", is cached as it is fetched.
    "./engine_loader.js",
    ...workerBuilds.flatMap((name) => [`./${name}.js`, `./${name}_bg.wasm`]),
    "./models/manifest.json",
    // The helper workers the training worker starts on the CPU backend, one per spare core.
    "./helper_loader.js", "./helper.js", "./helper_bg.wasm",
    // The offline web page export's runtime (fetched by the worker when a person exports one).
    "./runtime/graft-runtime.wasm",
  ];
  const manifest = await fetch("./models/manifest.json").then((r) => r.json()).catch(() => ({ models: [] }));
  const weights = manifest.models.map((m) => "./models/" + m.file);
  await cache.addAll([...new Set([...assets, ...fixed, ...weights])]);
}

self.addEventListener("install", (event) => {
  event.waitUntil(precache().then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(self.clients.claim());
});

// A cached copy as the answer to `request`: under its own address when that has a query. A worker's
// `self.location` is the address of the response that started it, and the training worker reads its
// query (`engine_loader.js?build=worker-cpu&compute=cpu`); the copy cached under the bare address
// would lose it. A new response has no address, and takes the request's.
function answering(request, cached) {
  if (!cached || !new URL(request.url).search || cached.url === request.url) {
    return cached;
  }
  return new Response(cached.body, { status: cached.status, statusText: cached.statusText, headers: cached.headers });
}

// Network first (a new build is picked up), but never waiting more than 3 s on it when a cached copy
// exists: an unreachable server can hang rather than fail.
self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET" || new URL(request.url).origin !== self.location.origin) {
    return;
  }
  event.respondWith(
    caches.match(request, { ignoreSearch: true }).then((found) => {
      const cached = answering(request, found);
      const network = fetch(request).then((response) => {
        if (response.ok) {
          const copy = response.clone();
          caches.open(CACHE).then((cache) => cache.put(request, copy));
        }
        return response;
      });
      if (!cached) {
        return network.catch(() => caches.match("./"));
      }
      const timeout = new Promise((resolve) => setTimeout(() => resolve(cached), 3000));
      return Promise.race([network.catch(() => cached), timeout]);
    })
  );
});
