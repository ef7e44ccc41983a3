// Offline use: the app's files are cached at install; requests are answered from the cache
// and refreshed from the network when it is there (stale-while-revalidate).
const CACHE = 'openbms-v1';
const FILES = ['./', 'index.html', 'style.css', 'app.js', 'smp.js', 'smp-responder.js',
  'manifest.webmanifest', 'icon.svg', 'pkg/bms_wasm.js', 'pkg/bms_wasm_bg.wasm', 'demo/web-demo.toml'];

self.addEventListener('install', (e) => {
  e.waitUntil(caches.open(CACHE).then((c) => c.addAll(FILES)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (e) => {
  e.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
    .then(() => self.clients.claim()));
});

self.addEventListener('fetch', (e) => {
  if (e.request.method !== 'GET' || new URL(e.request.url).origin !== self.location.origin) return;
  e.respondWith(caches.open(CACHE).then(async (cache) => {
    const cached = await cache.match(e.request);
    const fresh = fetch(e.request).then((r) => {
      if (r.ok) cache.put(e.request, r.clone());
      return r;
    }).catch(() => cached);
    return cached || fresh;
  }));
});
