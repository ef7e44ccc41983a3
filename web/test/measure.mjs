// Measures the page on a throttled phone profile (Chrome DevTools' "Slow 4G" network and 4x
// CPU slowdown): bytes transferred before the WebAssembly, and the time from a completed
// Bluetooth connection to the first status shown. Prints "bench" lines (docs/app.md).
import { serve, launch, openApp, emulateBms, connect } from './harness.mjs';

const server = await serve();
const browser = await launch();
const runs = [];
try {
  for (let i = 0; i < 3; i++) {
    const page = await browser.newPage();
    await page.setViewport({ width: 390, height: 844, deviceScaleFactor: 1 });
    const cdp = await page.createCDPSession();
    await cdp.send('Network.enable');
    await cdp.send('Network.setCacheDisabled', { cacheDisabled: true });
    await cdp.send('Network.emulateNetworkConditions', {
      offline: false, latency: 150, downloadThroughput: (1.6 * 1024 * 1024) / 8, uploadThroughput: (750 * 1024) / 8,
    });
    await cdp.send('Emulation.setCPUThrottlingRate', { rate: 4 });
    const sizes = new Map();
    cdp.on('Network.responseReceived', (e) => sizes.set(e.requestId, { url: e.response.url, bytes: 0 }));
    cdp.on('Network.loadingFinished', (e) => { const s = sizes.get(e.requestId); if (s) s.bytes = e.encodedDataLength; });
    const t0 = Date.now();
    await page.goto(server.url);
    await page.waitForSelector('body[data-ready="true"]', { timeout: 60000 });
    const readyMs = Date.now() - t0;
    const bms = await emulateBms(page);
    await connect(page);
    await page.waitForFunction(() => performance.getEntriesByName('openbms-first-status').length > 0, { timeout: 30000 });
    const firstStatusMs = await page.evaluate(() => performance.getEntriesByName('openbms-first-status')[0].startTime
      - performance.getEntriesByName('openbms-connected')[0].startTime);
    const all = [...sizes.values()];
    const before = all.filter((s) => !s.url.endsWith('.wasm')).reduce((a, s) => a + s.bytes, 0);
    const wasm = all.filter((s) => s.url.endsWith('.wasm')).reduce((a, s) => a + s.bytes, 0);
    runs.push({ before, wasm, readyMs, firstStatusMs });
    await page.close();
    await bms.stop();
  }
} finally {
  await browser.close();
  await server.close();
}
const best = (k) => Math.min(...runs.map((r) => r[k]));
console.log(`bench page weight before the WebAssembly: ${runs[0].before} B transferred (gzip), goal < 300000`);
console.log(`bench WebAssembly: ${runs[0].wasm} B transferred (gzip)`);
console.log(`bench app ready on Slow 4G + 4x CPU: ${best('readyMs')} ms (best of ${runs.length})`);
console.log(`bench first status after the connection: ${best('firstStatusMs').toFixed(0)} ms (best of ${runs.length}; all ${runs.map((r) => r.firstStatusMs.toFixed(0)).join(', ')}), goal < 1000`);
