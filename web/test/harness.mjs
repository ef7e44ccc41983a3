// Test harness: serves web/ on 127.0.0.1, starts Chromium (puppeteer-core) with Web Bluetooth
// on, and emulates an OpenBMS peripheral with Chromium's BluetoothEmulation domain. Every GATT
// read and write the page makes is answered by the real bms-core (the WebAssembly build of
// rust/bms-wasm, running the web demo scenario here in Node), exactly as the firmware answers
// (app/src/gatt.c): reads return the response, a refused write becomes an ATT error (the stack's
// 0x05 Insufficient Authentication on an unpaired link, else 0x80 + status).
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import puppeteer from 'puppeteer-core';
import init, * as core from '../pkg/bms_wasm.js';

export const WEB = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const REPO = path.resolve(WEB, '..');
const VERSION_FILE = Object.fromEntries(fs.readFileSync(path.join(REPO, 'app/VERSION'), 'utf8')
  .split('\n').filter((l) => l.includes('=')).map((l) => l.split('=').map((x) => x.trim())));
export const FIRMWARE_VERSION = `${VERSION_FILE.VERSION_MAJOR}.${VERSION_FILE.VERSION_MINOR}.${VERSION_FILE.PATCHLEVEL}+${VERSION_FILE.VERSION_TWEAK}`;
export const SCENARIO = fs.readFileSync(path.join(REPO, 'scenarios/web-demo.toml'), 'utf8');
export { core };

await init({ module_or_path: fs.readFileSync(path.join(WEB, 'pkg/bms_wasm_bg.wasm')) });
export const info = core.protocolInfo();

const TYPES = {
  '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.css': 'text/css',
  '.wasm': 'application/wasm', '.svg': 'image/svg+xml', '.webmanifest': 'application/manifest+json',
  '.toml': 'text/plain', '.json': 'application/json',
};

/** A static file server for web/ on 127.0.0.1 (gzip when asked, as a host would). */
export async function serve() {
  const { gzipSync } = await import('node:zlib');
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    let file = path.join(WEB, decodeURIComponent(url.pathname));
    if (!file.startsWith(WEB)) { res.writeHead(403).end(); return; }
    if (file.endsWith('/')) file += 'index.html';
    fs.readFile(file, (err, data) => {
      if (err) { res.writeHead(404).end(); return; }
      const headers = { 'content-type': TYPES[path.extname(file)] || 'application/octet-stream', 'cache-control': 'no-cache' };
      if (/gzip/.test(req.headers['accept-encoding'] || '')) {
        data = gzipSync(data);
        headers['content-encoding'] = 'gzip';
      }
      res.writeHead(200, headers).end(data);
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${server.address().port}/`, close: () => new Promise((r) => server.close(r)) };
}

export async function launch() {
  return puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--enable-experimental-web-platform-features',
      '--enable-features=WebBluetoothNewPermissionsBackend'],
  });
}

/** Opens the app in a phone-sized page; fails the test on any page error. */
export async function openApp(browser, url) {
  const page = await browser.newPage();
  await page.setViewport({ width: 390, height: 844, deviceScaleFactor: 1 });
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(e));
  page.on('console', (m) => { if (m.type() === 'error') page.errors.push(new Error(m.text())); });
  await page.goto(url);
  // Generous: compiling the WebAssembly on a loaded machine (CI) takes a while.
  await page.waitForSelector('body[data-ready="true"]', { timeout: 60000 });
  return page;
}

const ADDRESS = '09:09:09:09:09:09';

/**
 * An emulated OpenBMS peripheral in `page`, answered by a demo device running the web demo
 * scenario. `bms.authenticated` says whether the link is paired; `bms.device` is the core.
 */
export async function emulateBms(page) {
  // The emulated adapter belongs to the browser: its domain is on the browser's session.
  const cdp = await page.browser().target().createCDPSession();
  const device = new core.DemoDevice('web-demo.toml', SCENARIO);
  device.advance(15000);
  const bms = { device, cdp, authenticated: false, log: [], subscribed: new Set() };
  const numberOf = {};
  await cdp.send('BluetoothEmulation.enable', { state: 'powered-on', leSupported: true });
  await cdp.send('BluetoothEmulation.simulatePreconnectedPeripheral', {
    address: ADDRESS, name: 'OpenBMS', manufacturerData: [], knownServiceUuids: [info.service_uuid, '0000180a-0000-1000-8000-00805f9b34fb'],
  });
  const { serviceId } = await cdp.send('BluetoothEmulation.addService', { address: ADDRESS, serviceUuid: info.service_uuid });
  const props = {
    status: { read: true, notify: true }, bank: { read: true }, battery: { read: true, write: true },
    history: { read: true }, settings: { read: true, write: true }, control: { write: true, indicate: true },
    name: { read: true, write: true }, soc: { read: true },
  };
  for (const [name, c] of info.characteristics) {
    const { characteristicId } = await cdp.send('BluetoothEmulation.addCharacteristic', {
      serviceId, characteristicUuid: c.uuid, properties: props[name],
    });
    numberOf[characteristicId] = c.number;
    // The Client Characteristic Configuration descriptor the stack adds (BT_GATT_CCC):
    // without it the browser refuses to subscribe.
    if (props[name].notify || props[name].indicate) {
      await cdp.send('BluetoothEmulation.addDescriptor', { characteristicId, descriptorUuid: '00002902-0000-1000-8000-00805f9b34fb' });
    }
  }
  // The Device Information Service as Zephyr serves it (CONFIG_BT_DIS_FW_REV_STR defaults to
  // app/VERSION's "major.minor.patch+tweak"): answered here, it is not the core's.
  const { serviceId: disId } = await cdp.send('BluetoothEmulation.addService', { address: ADDRESS, serviceUuid: '0000180a-0000-1000-8000-00805f9b34fb' });
  const dis = {};
  for (const [uuid, value] of [['00002a26-0000-1000-8000-00805f9b34fb', FIRMWARE_VERSION], ['00002a27-0000-1000-8000-00805f9b34fb', 'openbms_ng']]) {
    const { characteristicId } = await cdp.send('BluetoothEmulation.addCharacteristic', { serviceId: disId, characteristicUuid: uuid, properties: { read: true } });
    dis[characteristicId] = Buffer.from(value).toString('base64');
  }
  cdp.on('BluetoothEmulation.gattOperationReceived', ({ address, type }) => {
    cdp.send('BluetoothEmulation.simulateGATTOperationResponse', { address, type, code: 0 }).catch(() => {});
  });
  cdp.on('BluetoothEmulation.characteristicOperationReceived', ({ characteristicId, type, data }) => {
    if (dis[characteristicId]) {
      cdp.send('BluetoothEmulation.simulateCharacteristicOperationResponse', { characteristicId, type, code: 0, data: dis[characteristicId] }).catch(() => {});
      return;
    }
    const number = numberOf[characteristicId];
    let code = 0;
    let out;
    // The control point's CCC needs an authenticated write (app/src/ble.c: BT_GATT_CCC with
    // BT_GATT_PERM_WRITE_AUTHEN): an unpaired link cannot enable its indications.
    if (type === 'subscribe-to-notifications' && number === 6 && !bms.authenticated) code = 0x05;
    else if (type === 'subscribe-to-notifications') bms.subscribed.add(number);
    if (type === 'unsubscribe-from-notifications') bms.subscribed.delete(number);
    if (type === 'read') {
      out = Buffer.from(device.read(number, bms.authenticated)).toString('base64');
    } else if (type === 'write') {
      const resp = device.write(number, bms.authenticated, Buffer.from(data, 'base64'));
      const status = resp[1];
      // What the device's stack and app/src/gatt.c make of the core's answer.
      code = status === 0 ? 0 : status === 6 ? 0x05 : 0x80 + status;
      bms.log.push({ number, status });
    }
    cdp.send('BluetoothEmulation.simulateCharacteristicOperationResponse', {
      characteristicId, type, code, ...(out !== undefined ? { data: out } : {}),
    }).catch(() => {});
  });
  // The bank lives on in real time while the test runs, until `bms.holdClock()`: then it changes
  // only when the test advances it (for exact values of what grows with time).
  let last = Date.now();
  bms.timer = setInterval(() => { const now = Date.now(); device.advance(now - last); last = now; }, 100);
  bms.holdClock = () => clearInterval(bms.timer);
  bms.stop = async () => {
    clearInterval(bms.timer);
    await cdp.send('BluetoothEmulation.disable').catch(() => {});
    await cdp.detach().catch(() => {});
  };
  return bms;
}

/**
 * Clicks "Find my BMS" and picks the emulated OpenBMS in the browser's device chooser.
 *
 * Drives the chooser through the DeviceAccess domain on a session of its own rather than
 * puppeteer's page.waitForDevicePrompt(): puppeteer (24.x) takes any Target.detachedFromTarget
 * on the page's session for its own, so when the app's service worker detaches while a prompt
 * is awaited, the prompt's arrival throws an uncaught assertion and kills the test run
 * (test "the device chooser survives the service worker detaching" reproduces it).
 */
export async function connect(page, { beforeClick } = {}) {
  const session = await page.createCDPSession();
  let timer;
  try {
    await session.send('DeviceAccess.enable');
    // The chooser is announced again whenever its device list changes: wait for the list
    // that holds the emulated peripheral (listed by address; its name comes empty).
    // The first chooser of a freshly started browser can be slow on a loaded machine.
    const prompted = new Promise((resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`no device chooser listing ${ADDRESS} within 60 s of clicking #find`)), 60000);
      session.on('DeviceAccess.deviceRequestPrompted', (prompt) => {
        if (prompt.devices.some((d) => d.id === ADDRESS)) resolve(prompt);
      });
    });
    if (beforeClick) await beforeClick();
    await page.click('#find');
    const { id } = await prompted.catch(async (e) => {
      const said = await page.$eval('#connect-error', (x) => x.textContent).catch(() => null);
      throw new Error(`${e.message} (the page says ${JSON.stringify(said)})`);
    });
    await session.send('DeviceAccess.selectPrompt', { id, deviceId: ADDRESS });
  } finally {
    // Also when beforeClick or the click failed: no timer left to reject unobserved.
    clearTimeout(timer);
    await session.detach().catch(() => {});
  }
  // Generous for a loaded machine (CI): the connection discovers the service, reads the Device
  // Information and subscribes, every step a round trip through this process.
  await page.waitForFunction(() => document.body.dataset.connected === 'ble', { timeout: 60000 }).catch(async (e) => {
    const said = await page.$eval('#link', (x) => x.textContent).catch(() => null);
    throw new Error(`the page did not connect within 60 s of choosing ${ADDRESS}: it says ${JSON.stringify(said)} (${e.message})`);
  });
}

export async function textOf(page, sel) {
  return page.$eval(sel, (e) => e.textContent);
}

/**
 * Replaces the value of the input `sel` with `text`, typed key by key so the page sees the same
 * input events as from a user. Clears the field in the page rather than by a triple click: a
 * triple click on a loaded machine can land as two clicks and leave the old value in front.
 */
export async function fill(page, sel, text) {
  await page.$eval(sel, (e) => { e.focus(); e.value = ''; });
  await page.type(sel, text);
  const value = await page.$eval(sel, (e) => e.value);
  if (value !== text) throw new Error(`${sel} holds ${JSON.stringify(value)} after typing ${JSON.stringify(text)}`);
}

/** Waits until the text of `sel` matches `re`; on timeout says what it was. The default is
 * generous: what the page shows comes by its 1 s and 3 s polls, slower on a loaded machine (CI). */
export async function waitText(page, sel, re, timeout = 30000) {
  try {
    await page.waitForFunction((s, src, flags) => {
      const e = document.querySelector(s);
      return e && new RegExp(src, flags).test(e.textContent);
    }, { timeout }, sel, re.source, re.flags);
  } catch {
    throw new Error(`${sel} never matched ${re}: it says ${JSON.stringify(await textOf(page, sel).catch(() => null))}`);
  }
}

export async function screenshot(page, name) {
  const dir = path.join(REPO, 'docs/app');
  fs.mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: path.join(dir, `${name}.png`), fullPage: false });
}

export function decode(kind, bytes) {
  const d = core.decode(kind, bytes);
  if (!d.ok) throw new Error(`${kind}: ${d.status_text}`);
  return d.page;
}
