// The OpenBMS web app. Every message is encoded and decoded by bms-core compiled to
// WebAssembly (pkg/, built from rust/bms-wasm); this file only moves bytes and shows values.
import init, * as core from './pkg/bms_wasm.js';
import { SMP_SERVICE, SMP_CHARACTERISTIC, SmpClient, SmpReassembler, parseImage, hex } from './smp.js';
import { SmpResponder } from './smp-responder.js';

const $ = (id) => document.getElementById(id);
const KNOWN_DEVICE = 'openbms.device';
const OPTIONAL_CHARACTERISTICS = ['name', 'soc'];
const SOC_KNOWLEDGE = { Unknown: 'not known yet', Estimated: 'estimated from the rested voltage',
  Counted: 'counted since the last synchronisation' };
const STATUS_POLL_MS = 1000;
const PAGE_POLL_MS = 3000;

// Words for the core's reason and code names (the names and numbers come from the core).
const REASON_WORDS = {
  no_valid_data: 'no complete battery data yet',
  remote_off: 'remote on/off switch is off',
  cell_undervoltage: 'a cell is too low (under-voltage)',
  prealarm_level: 'a cell is below the pre-alarm level',
  low_soc: 'state of charge at the low-SoC warning level',
  cell_overvoltage: 'a cell is too high (over-voltage)',
  low_temperature: 'too cold to charge',
  high_temperature: 'too hot to charge',
  very_high_temperature: 'too hot to discharge',
  battery_charge_not_allowed: 'a battery does not allow charging',
  battery_discharge_not_allowed: 'a battery does not allow discharging',
  discharge_floor: 'state of charge at the discharge floor',
  firmware_update: 'firmware update in progress',
  firmware_update_failed: 'firmware update failed or aborted',
  battery_lost: 'communication with a battery lost',
  configuration_error: 'the bank is wired or configured wrongly',
  invalid_data: 'a battery has sent no valid data yet',
  prealarm_released: 'released 60 s after the loads were switched off for under-voltage',
  restart: 'the BMS restarted',
};
const CODE_WORDS = {
  settings_corrupt: 'Stored settings were corrupt: factory settings in use',
  records_corrupt: 'Stored records were corrupt and were reset',
  invalid_battery_data: 'A battery reports impossible data',
  firmware_update_failed: 'Firmware update failed',
  configuration_error: 'Bank configuration error (mixed models, unequal strings or too many batteries)',
  cell_undervoltage: 'Cell under-voltage: loads switched off',
  cell_overvoltage: 'Cell over-voltage: charging switched off',
  low_temperature: 'Too cold to charge: charging switched off',
  high_temperature: 'Too hot: charging (or discharging) switched off',
  battery_lost: 'Battery communication lost: check the battery cables',
  low_soc: 'Discharge floor reached: loads switched off',
  low_cell_voltage: 'Low cell voltage (pre-alarm)',
  low_soc_warning: 'Low state of charge',
  battery_charge_blocked: 'A battery does not allow charging',
  battery_discharge_blocked: 'A battery does not allow discharging',
  storage_write_failed: 'Could not save to memory; retrying',
};
const SETTING_UNITS = ['mV per cell', '‰ of capacity', 'min', '% (0 = off)', '% (0 = off)', 'mV per cell'];
const SETTING_LABELS = ['Charged voltage', 'Tail current', 'Charged detection time',
  'Low-SoC warning level', 'Discharge floor', 'Pre-alarm level'];
const MODELS = { Lfp12V8: '12.8 V LiFePO4', Lfp25V6: '25.6 V LiFePO4', Lfp51V2: '51.2 V LiFePO4' };
const BALANCER = { Unknown: 'not known yet (needs a full charge)', Balanced: 'cells balanced',
  Imbalanced: 'cells imbalanced at the last full charge', Balancing: 'balancing now' };

let info; // protocolInfo() from the core
let link = null; // the connected transport
let pollTimer = null;
let lastStatusAt = 0;
let currentPage = 'status';
let settingsValues = null;
let settingsLoad = null;
let firstStatusPending = false;
// How status pages arrived: pushed by the device, or read by the fallback poll.
const statusUpdates = { notified: 0, read: 0 };

/** A request the device refused: `status` is the core's status number when known. */
class Refused extends Error {
  constructor(message, status = null, refusal = null) {
    super(message);
    this.status = status;
    this.refusal = refusal;
  }
}

const toBytes = (dv) => new Uint8Array(dv.buffer.slice(dv.byteOffset, dv.byteOffset + dv.byteLength));

// ---- transports ---------------------------------------------------------------------------------

/** The device over Web Bluetooth. */
class BleLink {
  constructor(device) {
    this.device = device;
    this.name = device.name || 'OpenBMS';
    this.chr = {};
    this.indications = [];
  }

  async connect() {
    const server = await this.device.gatt.connect();
    const service = await server.getPrimaryService(info.service_uuid);
    for (const [name, c] of info.characteristics) {
      try {
        this.chr[name] = await service.getCharacteristic(c.uuid);
      } catch (e) {
        // Characteristics added to the protocol later (the device name) may be missing on
        // older firmware: the page then hides what needs them.
        if (!OPTIONAL_CHARACTERISTICS.includes(name)) throw e;
      }
    }
    try {
      // The Device Information Service: firmware version (app/VERSION) and board.
      const dis = await server.getPrimaryService('device_information');
      const text = async (c) => new TextDecoder().decode(await (await dis.getCharacteristic(c)).readValue());
      this.firmware = await text('firmware_revision_string');
      this.hardware = await text('hardware_revision_string').catch(() => null);
    } catch { this.firmware = null; }
    try {
      const smp = await server.getPrimaryService(SMP_SERVICE);
      this.smpChr = await smp.getCharacteristic(SMP_CHARACTERISTIC);
    } catch { this.smpChr = null; }
    this.chr.control.addEventListener('characteristicvaluechanged', (e) => {
      const waiter = this.indications.shift();
      if (waiter) waiter(toBytes(e.target.value));
    });
    await this.enableIndications();
    localStorage.setItem(KNOWN_DEVICE, this.device.id);
  }

  /** Subscribes to the control point's indications (the command answers). The device allows it
   * on a paired link only, so a link paired after it connected subscribes at its next command. */
  async enableIndications() {
    if (!this.indicating) {
      try {
        await this.chr.control.startNotifications();
        this.indicating = true;
      } catch { /* not paired (yet): commands with an answer then cannot get it */ }
    }
    return this.indicating;
  }

  has(name) { return Boolean(this.chr[name]); }
  async read(name) { return toBytes(await this.chr[name].readValue()); }

  /** Writes; resolves with the response when the transport has it (null over BLE: Ok). */
  async write(name, bytes) {
    try {
      await this.chr[name].writeValueWithResponse(bytes);
      return null;
    } catch (e) {
      throw refusedFromBle(e);
    }
  }

  /** A control-point command; `withBody` waits for the indicated response. The device indicates
   * the response of every command, refusals included, in order, and nothing tells whose it is:
   * every command takes its own place in the queue (one without a body does not wait for it),
   * and a place whose indication never came leaves at the timeout, so that later commands do
   * not get earlier answers. */
  async command(bytes, withBody) {
    if (!(await this.enableIndications()) && !withBody) return this.write('control', bytes);
    const answer = new Promise((resolve, reject) => {
      const waiter = (value) => { clearTimeout(timer); resolve(value); };
      const timer = setTimeout(() => {
        const place = this.indications.indexOf(waiter);
        if (place >= 0) this.indications.splice(place, 1);
        reject(new Refused('the device did not answer (indication missing)'));
      }, 5000);
      this.indications.push(waiter);
    });
    answer.catch(() => {}); // awaited only with a body (and not after a refused write)
    await this.write('control', bytes);
    return withBody ? answer : null;
  }

  async watchStatus(onBytes) {
    try {
      await this.chr.status.startNotifications();
      this.chr.status.addEventListener('characteristicvaluechanged', (e) => onBytes(toBytes(e.target.value)));
    } catch { /* reads are polled anyway */ }
  }

  smp() {
    if (!this.smpChr) return null;
    const chr = this.smpChr;
    let listener = () => {};
    const joiner = new SmpReassembler();
    chr.addEventListener('characteristicvaluechanged', (e) => {
      const frame = joiner.push(toBytes(e.target.value));
      if (frame) listener(frame);
    });
    const started = chr.startNotifications();
    return {
      send: async (frame) => { await started; await chr.writeValueWithoutResponse(frame); },
      onFrame: (cb) => { listener = cb; },
    };
  }

  onDisconnect(cb) { this.device.addEventListener('gattserverdisconnected', cb); }
  disconnect() { this.device.gatt.disconnect(); }
}

/** What a failed Web Bluetooth write tells: the stack's refusal of an unpaired link, or the
 * application's ATT error (0x80 + status), which browsers report without its number. */
function refusedFromBle(e) {
  const text = String(e && e.message);
  if (/authenticat|authoriz|pair|encrypt|security/i.test(text) || e.name === 'SecurityError') {
    return new Refused(notPaired, 6);
  }
  return new Refused(`the BMS refused the request (${text})`);
}

const notPaired = 'not paired: the BMS accepts changes only from a paired phone. Press the BMS\'s button (its blue LED then blinks the passkey), pair with that passkey when the browser asks, and try again.';

/** The demo device: the real core and a simulated bank, in this page. */
class DemoLink {
  constructor(toml) {
    this.name = 'OpenBMS demo';
    this.firmware = 'demo (the core of this page)';
    this.dev = new core.DemoDevice('web-demo.toml', toml);
    this.speed = 600;
    this.listeners = [];
    this.responder = new SmpResponder({
      events: (what) => {
        if (what === 'upload-started') this.dev.act('dfu_start');
        if (what === 'reset') this.dev.act('dfu_complete');
      },
    });
    this.dev.advance(15000);
    let last = performance.now();
    this.timer = setInterval(() => {
      const now = performance.now();
      this.dev.advance((now - last) * this.speed);
      last = now;
      if (this.dev.statusChanged()) this.listeners.forEach((cb) => cb(this.dev.read(1, true)));
      $('demo-clock').textContent = `day ${Math.floor(this.dev.nowMs / 86400000) + 1}, ${new Date(this.dev.nowMs).toISOString().slice(11, 16)}`;
    }, 250);
  }

  async connect() {}
  has() { return true; }
  number(name) { return Object.fromEntries(info.characteristics)[name].number; }
  async read(name) { return this.dev.read(this.number(name), true); }
  async write(name, bytes) {
    const resp = this.dev.write(this.number(name), true, bytes);
    if (resp[1] !== 0) {
      const d = core.decode(name === 'settings' || name === 'name' ? name : 'command', resp);
      throw new Refused(d.refusal ? d.refusal.text : d.status_text, d.status, d.refusal);
    }
    return resp;
  }
  async command(bytes) { return this.write('control', bytes); }
  async watchStatus(cb) { this.listeners.push(cb); }
  smp() {
    let listener = () => {};
    return {
      send: async (frame) => { const rsp = await this.responder.handle(frame); setTimeout(() => listener(rsp), 5); },
      onFrame: (cb) => { listener = cb; },
    };
  }
  onDisconnect() {}
  disconnect() { clearInterval(this.timer); }
}

// ---- formatting ---------------------------------------------------------------------------------

const num = (v, digits = 0) => v.toLocaleString('en-GB', { minimumFractionDigits: digits, maximumFractionDigits: digits });
const opt = (v, f) => (v === null || v === undefined ? '–' : f(v));
const volts = (mv) => `${num(mv / 1000, 2)} V`;
const amps = (ma) => `${num(ma / 1000, 1)} A`;
const ah = (mah) => `${num(mah / 1000, 1)} Ah`;
const kwh = (mwh) => `${num(mwh / 1e6, 2)} kWh`;
const degc = (d) => `${num(d / 10, 1)} °C`;
function duration(min) {
  if (min >= 1440) return `${Math.floor(min / 1440)} d ${Math.floor((min % 1440) / 60)} h`;
  return `${Math.floor(min / 60)} h ${min % 60} min`;
}
function reasonsText(bits) {
  return info.reasons.filter((r) => bits & (1 << r.number)).map((r) => REASON_WORDS[r.name] || r.name.replaceAll('_', ' '));
}
function li(text, cls) {
  const e = document.createElement('li');
  e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

// ---- pages --------------------------------------------------------------------------------------

/** Shows a status page; false when the device refused it (then the reason is shown instead). */
function showStatus(bytes) {
  const d = core.decode('status', bytes);
  if (!d.ok) {
    // NotAuthenticated: read protection is on and this link is not paired (BLE-2).
    $('st-live').textContent = d.status === 6 ? `Read protection is on: ${notPaired}`
      : `The BMS refused the status page: ${d.status_text}`;
    return false;
  }
  const s = d.page;
  lastStatusAt = performance.now();
  if (firstStatusPending) {
    firstStatusPending = false;
    // Shown in the next frame: measured by web/test/measure.mjs.
    requestAnimationFrame(() => performance.mark('openbms-first-status'));
  }
  $('soc-value').textContent = opt(s.soc_permille, (p) => `${num(p / 10, 1)} %`);
  $('soc-kind').textContent = SOC_KNOWLEDGE[s.soc_permille === null ? 'Unknown'
    : s.soc_estimated ? 'Estimated' : 'Counted'];
  $('soc-kind').className = `badge ${s.soc_estimated ? 'warn' : ''}`;
  $('st-voltage').textContent = opt(s.bank_mv, volts);
  $('st-current').textContent = opt(s.current_ma, (ma) => `${ma > 0 ? '+' : ''}${amps(ma)}${ma > 0 ? ' charging' : ma < 0 ? ' discharging' : ''}`);
  $('st-power').textContent = opt(s.power_w, (w) => `${num(w)} W`);
  $('st-ttg').textContent = opt(s.time_remaining_min, duration);
  $('st-consumed').textContent = opt(s.consumed_mah, (m) => `−${ah(m)}`);
  $('st-temp').textContent = opt(s.temp_ddegc, degc);
  const outs = $('st-outputs');
  outs.replaceChildren(
    outputLine('Loads (ATD)', s.atd, s.atd_reasons, 'allowed', 'switched off'),
    outputLine('Charging (ATC)', s.atc, s.atc_reasons, 'allowed', 'switched off'),
    outputLine('Pre-alarm', !s.prealarm, s.prealarm_reasons, 'quiet', 'ALARM'),
  );
  const codes = info.codes.filter((c) => s.codes & (1 << c.number));
  $('st-codes').replaceChildren(...(codes.length
    ? codes.map((c) => li(`${c.severity[0].toUpperCase()}${c.severity.slice(1)} ${c.number}: ${CODE_WORDS[c.name] || c.name}`, c.severity))
    : [li('None', 'ok')]));
  return true;
}

function outputLine(label, good, reasons, goodWord, badWord) {
  const why = reasonsText(reasons);
  return li(`${label}: ${good ? goodWord : badWord}${why.length ? ` — ${why.join('; ')}` : ''}`, good ? 'ok' : 'alarm');
}

async function refreshStatus() {
  statusUpdates.read++;
  if (showStatus(await link.read('status'))) $('st-live').textContent = 'Updated by reading the BMS every second';
}

/** A status page the device pushed (notification). */
function notifiedStatus(bytes) {
  statusUpdates.notified++;
  if (showStatus(bytes)) $('st-live').textContent = 'Live: the BMS sends every change';
}

/** How the SoC is known and how sure the BMS is (the SoC page), beside the status page's SoC. */
async function refreshSoc() {
  if (!link.has('soc')) return;
  const d = core.decode('soc', await link.read('soc'));
  if (!d.ok) return;
  const p = d.page;
  $('soc-uncertainty').textContent = p.uncertainty_permille === null || p.soc_permille === null ? ''
    : `± ${num(p.uncertainty_permille / 10, 1)} %`;
  $('soc-uncertainty').title = 'One standard deviation: about two times in three the true state of charge is this close.';
  $('soc-kind').textContent = SOC_KNOWLEDGE[p.knowledge] || p.knowledge;
}

async function refreshBank() {
  const d = core.decode('bank', await link.read('bank'));
  if (!d.ok) return;
  const b = d.page;
  $('st-balancer').textContent = BALANCER[b.balancer] || b.balancer;
  $('bank-topology').textContent = b.series
    ? `${b.series} in series × ${b.parallel} in parallel: ${b.members} of ${b.batteries} batteries, ${MODELS[b.model] || b.model}, ${volts(b.nominal_mv)} ${num(b.capacity_dah / 10)} Ah, ${b.cells_total} cells${b.config_error ? ' — CONFIGURATION ERROR' : ''}`
    : `${b.batteries} batteries seen, topology not known yet`;
  $('bank-extremes').textContent = b.min_cell
    ? `Lowest cell ${volts(b.min_cell.mv)} (battery ${b.min_cell.battery + 1}, cell ${b.min_cell.cell + 1}); highest ${volts(b.max_cell.mv)} (battery ${b.max_cell.battery + 1}, cell ${b.max_cell.cell + 1}); temperature ${degc(b.min_temp.ddegc)} to ${degc(b.max_temp.ddegc)}`
    : '';
  if (currentPage !== 'bank') return;
  const cards = [];
  for (let n = 0; n < b.batteries; n++) {
    const sel = await link.write('battery', core.encodeBatterySelect(n));
    const page = core.decode('battery', sel ?? await link.read('battery'));
    if (page.ok) cards.push(batteryCard(page.page, b));
  }
  $('batteries').replaceChildren(...cards);
}

function batteryCard(p, bank) {
  const card = document.createElement('article');
  card.className = `battery${p.lost ? ' lost' : ''}`;
  const h = document.createElement('h3');
  h.textContent = `Battery ${p.number + 1}: ${volts(p.voltage_mv)}, ${amps(p.current_ma)}, ${degc(p.max_temp_ddegc)}`;
  const meta = document.createElement('p');
  const flags = [p.flags.allowed_to_charge ? 'may charge' : 'CHARGE BLOCKED',
    p.flags.allowed_to_discharge ? 'may discharge' : 'DISCHARGE BLOCKED',
    p.flags.balancing ? 'balancing' : null, p.lost ? 'LOST (no data for 5 s)' : null,
    !p.valid && !p.lost ? 'data not valid' : null].filter(Boolean);
  meta.textContent = `${MODELS[p.model] || p.model} ${num(p.capacity_dah / 10)} Ah, serial ${p.serial}, firmware v${p.firmware >> 8}.${p.firmware & 0xff}, temperatures ${degc(p.min_temp_ddegc)}–${degc(p.max_temp_ddegc)}; ${flags.join(', ')}`;
  const cells = document.createElement('div');
  cells.className = 'cells';
  const lo = Math.min(...p.cells_mv, 3000);
  const hi = Math.max(...p.cells_mv, 3500);
  p.cells_mv.forEach((mv, i) => {
    const bar = document.createElement('div');
    bar.className = 'cell';
    const isMin = bank.min_cell && bank.min_cell.battery === p.number && bank.min_cell.cell === i;
    const isMax = bank.max_cell && bank.max_cell.battery === p.number && bank.max_cell.cell === i;
    if (isMin) bar.classList.add('min');
    if (isMax) bar.classList.add('max');
    bar.style.setProperty('--h', `${Math.max(8, ((mv - lo) / Math.max(1, hi - lo)) * 100)}%`);
    bar.title = `cell ${i + 1}: ${mv} mV`;
    bar.innerHTML = `<span class="fill"></span><span class="mv">${mv}</span><span class="n">${i + 1}${isMin ? ' min' : ''}${isMax ? ' max' : ''}</span>`;
    cells.append(bar);
  });
  card.append(h, meta, cells);
  return card;
}

async function refreshHistory() {
  const d = core.decode('history', await link.read('history'));
  if (!d.ok) return;
  const h = d.page;
  const rows = [
    ['Deepest discharge', ah(h.deepest_discharge_mah)],
    ['Cumulative charge drawn', ah(h.cumulative_drawn_mah)],
    ['Discharged energy', kwh(h.discharged_energy_mwh)],
    ['Charged energy', kwh(h.charged_energy_mwh)],
    ['Synchronisations', num(h.synchronisations)],
    ['Charge cycles', num(h.cycles)],
    ['Time since last full charge', opt(h.since_full_charge_ms, (ms) => duration(Math.floor(ms / 60000)))],
    ['Lowest bank voltage', opt(h.min_bank_mv, volts)],
    ['Highest bank voltage', opt(h.max_bank_mv, volts)],
    ['Lowest cell voltage', opt(h.min_cell_mv, volts)],
    ['Highest cell voltage', opt(h.max_cell_mv, volts)],
    ['Lowest temperature', opt(h.min_temp_ddegc, degc)],
    ['Highest temperature', opt(h.max_temp_ddegc, degc)],
    ['Last errors and alarms (newest first)', h.last_errors.filter((e) => e !== null).map((n) => {
      const c = info.codes.find((x) => x.number === n);
      return c ? `${n}: ${CODE_WORDS[c.name] || c.name}` : `${n}`;
    }).join('; ') || 'none'],
  ];
  $('history-table').replaceChildren(...rows.map(([k, v]) => {
    const tr = document.createElement('tr');
    tr.innerHTML = '<th></th><td></td>';
    tr.firstChild.textContent = k;
    tr.lastChild.textContent = v;
    return tr;
  }));
}

function buildSettingsForm() {
  const form = $('settings-form');
  form.replaceChildren(...info.settings.map((f) => {
    const row = document.createElement('p');
    row.innerHTML = `<label><span class="label"></span> <input type="number" step="1"> <span class="unit"></span></label> <small class="range"></small>`;
    row.querySelector('.label').textContent = SETTING_LABELS[f.number] || f.name;
    const input = row.querySelector('input');
    input.id = `setting-${f.number}`;
    input.min = f.min;
    input.max = f.max;
    input.addEventListener('input', checkSettings);
    row.querySelector('.unit').textContent = SETTING_UNITS[f.number] || '';
    row.querySelector('.range').textContent = `range ${f.min}–${f.max}, default ${f.default}`;
    return row;
  }));
}

function formValues() {
  return Uint16Array.from(info.settings.map((f) => {
    const v = Number($(`setting-${f.number}`).value);
    return Number.isInteger(v) && v >= 0 && v <= 65535 ? v : 65535;
  }));
}

/** The device's own check, run in the page: the same refusal the device would send. */
function checkSettings() {
  const refusal = core.validateSettings(formValues());
  info.settings.forEach((f) => $(`setting-${f.number}`).classList.toggle('invalid', refusal !== null && refusal.field === f.number));
  $('settings-result').textContent = refusal ? `Not accepted: ${refusal.text}.` : '';
  $('settings-result').className = refusal ? 'error' : '';
  return refusal;
}

async function refreshSettings() {
  const from = link;
  const d = core.decode('settings', await from.read('settings'));
  // An answer that arrives after a disconnect belongs to the old device, not the next one.
  if (!d.ok || link !== from) return;
  settingsValues = d.page;
  info.settings.forEach((f) => { $(`setting-${f.number}`).value = settingsValues[f.number]; });
  checkSettings();
}

async function refreshName() {
  const known = link.has('name');
  for (const id of ['device-name', 'name-save']) $(id).disabled = !known;
  if (!known) {
    $('name-result').textContent = 'This BMS firmware has no device name setting: update it to rename the BMS.';
    return;
  }
  const from = link;
  const d = core.decode('name', await from.read('name'));
  if (d.ok && link === from) $('device-name').value = d.page;
}

async function saveName() {
  const out = $('name-result');
  let bytes;
  try {
    // The device's own check, in the page: the same rules the BMS applies.
    bytes = core.encodeName($('device-name').value);
  } catch (e) {
    out.textContent = `Not accepted: ${e.message}.`;
    out.className = 'error';
    return;
  }
  try {
    await link.write('name', bytes);
    await refreshName();
    out.textContent = `Renamed: the BMS now advertises itself as "${$('device-name').value}".`;
    out.className = 'ok';
  } catch (e) {
    const why = e.refusal ? e.refusal.text : e.status === null ? notPaired : e.message;
    out.textContent = `The BMS refused the name: ${why}`;
    out.className = 'error';
  }
}

async function saveSettings() {
  const out = $('settings-result');
  if (checkSettings()) return;
  try {
    await link.write('settings', core.encodeSettings(formValues()));
    await refreshSettings();
    out.textContent = 'Saved: the BMS uses the new settings now.';
    out.className = 'ok';
  } catch (e) {
    // The values passed the device's own check above, so over Bluetooth (where the browser
    // does not say which ATT error came) the one refusal left is the unpaired link.
    const why = e.refusal ? e.refusal.text : e.status === null ? notPaired : e.message;
    out.textContent = `The BMS refused the settings: ${why}`;
    out.className = 'error';
  }
}

async function runCommand(command, resultEl, doneText, withBody = false) {
  try {
    const resp = await link.command(core.encodeCommand(command), withBody);
    // Commands whose answer the caller shows (doneText '') leave the line as it is.
    if (doneText) {
      resultEl.textContent = doneText;
      resultEl.className = 'ok';
    }
    return resp;
  } catch (e) {
    const why = e.refusal ? e.refusal.text : e.status === null ? `${e.message}: is this phone paired with the BMS (and has it seen its batteries)?` : e.message;
    resultEl.textContent = `Refused: ${why}`;
    resultEl.className = 'error';
    return null;
  }
}

/** The paired phones (bonds) and the read protection, from the device (ListBonds). */
async function listBonds() {
  const resp = await runCommand('ListBonds', $('security-result'), '', true);
  const d = resp && core.decode('bonds', resp);
  if (!d || !d.ok) return;
  $('read-protection').checked = d.page.read_protection;
  $('read-protection').disabled = false;
  const rows = d.page.bonds.map((bond) => {
    const tr = document.createElement('tr');
    tr.innerHTML = '<th></th><td><button class="danger">Remove</button></td>';
    const address = bond.address.slice().reverse().map((b) => b.toString(16).padStart(2, '0')).join(':').toUpperCase();
    tr.firstChild.textContent = `${address} (${bond.address_type === 0 ? 'public' : 'random'} address)`;
    tr.querySelector('button').onclick = async () => {
      if (!confirm(`Remove the paired phone ${address}? It must pair again to change anything.`)) return;
      await runCommand({ RemoveBond: { bond } }, $('security-result'), `Removed ${address}.`);
      await listBonds();
    };
    return tr;
  });
  $('bonds-table').replaceChildren(...(rows.length ? rows : [Object.assign(document.createElement('tr'), { textContent: 'No paired phones.' })]));
}

// ---- firmware update ----------------------------------------------------------------------------

let image = null;
let smp = null;
function smpClient() {
  if (!smp) {
    const t = link.smp();
    if (!t) throw new Error('this BMS has no firmware update service (SMP)');
    smp = new SmpClient(t);
  }
  return smp;
}

async function chooseImage() {
  const file = $('image-file').files[0];
  image = null;
  $('image-upload').disabled = true;
  if (!file) return;
  const bytes = new Uint8Array(await file.arrayBuffer());
  try {
    const meta = parseImage(bytes);
    if (!meta.signature) throw new Error('the image is not signed: the bootloader would refuse it');
    image = { bytes, meta };
    $('image-info').textContent = `Version ${meta.version}, ${num(meta.fileSize)} bytes, signed (${meta.signature}), SHA-256 ${hex(meta.hash).slice(0, 16)}…`;
    $('image-info').className = '';
    $('image-upload').disabled = false;
  } catch (e) {
    $('image-info').textContent = `Cannot use this file: ${e.message}`;
    $('image-info').className = 'error';
  }
}

async function upload() {
  const bar = $('image-progress');
  const out = $('image-result');
  bar.hidden = false;
  $('image-upload').disabled = true;
  try {
    const sha = new Uint8Array(await crypto.subtle.digest('SHA-256', image.bytes));
    await smpClient().upload(image.bytes, sha, (sent, total) => {
      bar.value = Math.round((sent / total) * 100);
      out.textContent = `Uploading: ${num(sent)} of ${num(total)} bytes`;
    });
    out.textContent = `Uploaded version ${image.meta.version}. Press "Test new image and restart".`;
    out.className = 'ok';
    $('image-test').disabled = false;
    await listImages();
  } catch (e) {
    out.textContent = `Upload failed: ${e.message}`;
    out.className = 'error';
    $('image-upload').disabled = false;
  }
}

async function listImages() {
  const state = await smpClient().imageState();
  $('image-slots').replaceChildren(...state.images.map((s) => {
    const tr = document.createElement('tr');
    const flags = [s.active && 'running', s.confirmed && 'confirmed', s.pending && 'will run after restart (test)',
      s.permanent && 'permanent'].filter(Boolean).join(', ') || 'stored';
    tr.innerHTML = '<th></th><td></td>';
    tr.firstChild.textContent = `Slot ${s.slot}: version ${s.version}`;
    tr.lastChild.textContent = flags;
    return tr;
  }));
  return state;
}

async function testAndRestart() {
  const out = $('image-result');
  try {
    await smpClient().testImage(image.meta.hash);
    await smpClient().reset();
    out.textContent = 'Restarting into the new image. When it runs well, confirm it; without confirmation the next restart goes back to the old firmware.';
    out.className = 'ok';
    setTimeout(() => listImages().catch(() => {}), 500);
  } catch (e) {
    out.textContent = `Test failed: ${e.message}`;
    out.className = 'error';
  }
}

async function confirmImage() {
  try {
    await smpClient().confirmRunning();
    await listImages();
    $('image-result').textContent = 'The running image is confirmed: it stays after restarts.';
  } catch (e) {
    $('image-result').textContent = `Confirm failed: ${e.message}`;
  }
}

// ---- navigation and connection ------------------------------------------------------------------

function show(page) {
  currentPage = page;
  for (const s of document.querySelectorAll('section.page')) {
    s.hidden = !(s.id === page || (s.id === 'demo-panel' && link instanceof DemoLink && page === 'status'));
  }
  for (const b of document.querySelectorAll('#tabs button')) {
    if (b.dataset.page === page) b.setAttribute('aria-current', 'page');
    else b.removeAttribute('aria-current');
  }
  refreshPage().catch(report);
}

/** Refreshes the page shown: one refresh at a time, and one more after it when asked meanwhile.
 * A refresh reads the batteries by selecting each on the Battery characteristic and reading it,
 * so two at once (a refresh taking longer than the poll period: a slow link, a big bank) would
 * read one battery's page in another's place. */
let pageRefresh = null;
let pageRefreshAgain = false;
function refreshPage() {
  if (pageRefresh) {
    pageRefreshAgain = true;
    return pageRefresh;
  }
  pageRefresh = (async () => {
    try {
      do {
        pageRefreshAgain = false;
        await refreshPageOnce();
      } while (pageRefreshAgain);
    } finally {
      pageRefresh = null;
    }
  })();
  return pageRefresh;
}

async function refreshPageOnce() {
  if (!link) return;
  if (currentPage === 'bank' || currentPage === 'status') await refreshBank();
  if (currentPage === 'status') await refreshSoc();
  if (currentPage === 'history') await refreshHistory();
  if (currentPage === 'settings' && !settingsValues) {
    // One load at a time: a second one started by the periodic refresh while the first is still
    // reading would put the device's values back over what the user has typed meanwhile.
    settingsLoad ??= (async () => { await refreshSettings(); await refreshName(); })()
      .finally(() => { settingsLoad = null; });
    await settingsLoad;
  }
}

function report(e) {
  console.error(e);
  $('link').textContent = `${link ? link.name : 'Not connected'}: ${e.message}`;
}

async function start(newLink) {
  $('connect-error').textContent = '';
  $('link').textContent = `Connecting to ${newLink.name}…`;
  await newLink.connect();
  performance.mark('openbms-connected');
  firstStatusPending = true;
  link = newLink;
  settingsValues = null;
  smp = null;
  $('link').textContent = `Connected: ${link.name}`;
  $('version').textContent = link.firmware
    ? `${link.name}: firmware ${link.firmware}${link.hardware ? `, board ${link.hardware}` : ''}` : '';
  document.body.dataset.connected = link instanceof DemoLink ? 'demo' : 'ble';
  $('tabs').hidden = false;
  $('connect').hidden = true;
  $('disconnect').hidden = false;
  await link.watchStatus(notifiedStatus);
  await refreshStatus();
  show('status');
  link.onDisconnect(() => {
    $('link').textContent = `Disconnected from ${link.name}`;
    stop();
  });
  let tick = 0;
  pollTimer = setInterval(async () => {
    tick++;
    try {
      // Notifications carry changes; reads keep the page live when they do not arrive.
      if (performance.now() - lastStatusAt > STATUS_POLL_MS) await refreshStatus();
      if (tick % (PAGE_POLL_MS / STATUS_POLL_MS) === 0) await refreshPage();
    } catch (e) { report(e); }
  }, STATUS_POLL_MS);
}

function stop() {
  clearInterval(pollTimer);
  pollTimer = null;
  link = null;
  $('tabs').hidden = true;
  $('version').textContent = '';
  for (const s of document.querySelectorAll('section.page')) s.hidden = s.id !== 'connect';
  $('disconnect').hidden = true;
  delete document.body.dataset.connected;
  offerReconnect();
}

async function find() {
  try {
    const device = await navigator.bluetooth.requestDevice({
      // A renamed BMS is found by the service its connectable advertisement carries. Not by the
      // Instant Readout's manufacturer data: the readout is a second, non-connectable advertising
      // set at another address (app/src/ble.c), which a chooser would offer as a second device.
      filters: [{ services: [info.service_uuid] }, { namePrefix: 'OpenBMS' }],
      optionalServices: [info.service_uuid, SMP_SERVICE, 'device_information'],
    });
    await start(new BleLink(device));
  } catch (e) {
    $('connect-error').textContent = e.name === 'NotFoundError' ? 'No device chosen.' : `Could not connect: ${e.message}`;
  }
}

async function offerReconnect() {
  const id = localStorage.getItem(KNOWN_DEVICE);
  if (!id || !navigator.bluetooth || !navigator.bluetooth.getDevices) return;
  const device = (await navigator.bluetooth.getDevices()).find((d) => d.id === id);
  if (!device) return;
  const button = $('reconnect');
  button.textContent = `Reconnect to ${device.name || 'my BMS'}`;
  button.hidden = false;
  button.onclick = () => start(new BleLink(device)).catch((e) => { $('connect-error').textContent = `Could not reconnect: ${e.message}`; });
}

async function startDemo() {
  const toml = await (await fetch('demo/web-demo.toml')).text();
  await start(new DemoLink(toml));
}

function demo(fn) {
  return () => {
    if (link instanceof DemoLink) {
      try { fn(link.dev); } catch (e) { report(e); }
    }
  };
}

async function main() {
  await init();
  info = core.protocolInfo();
  window.openbms = { core, statusUpdates, get link() { return link; } };
  buildSettingsForm();
  if (!navigator.bluetooth) { $('no-bluetooth').hidden = false; $('find').disabled = true; }
  $('find').onclick = find;
  $('demo').onclick = () => startDemo().catch(report);
  $('disconnect').onclick = () => { const l = link; stop(); l.disconnect(); };
  for (const b of document.querySelectorAll('#tabs button')) b.onclick = () => show(b.dataset.page);
  $('settings-save').onclick = saveSettings;
  $('name-save').onclick = saveName;
  $('name-range').textContent = `1 to ${info.max_name_len} characters (bytes), factory name ${info.default_name}`;
  $('factory-reset').onclick = async () => {
    if (!confirm('Restore the factory settings? The pre-alarm level is kept.')) return;
    await runCommand('ResetToDefaults', $('settings-result'), 'Factory settings restored.');
    await refreshSettings();
  };
  $('passkey-save').onclick = () => {
    const v = $('passkey').value;
    if (!/^[0-9]{6}$/.test(v) || Number(v) === 0) { $('passkey-result').textContent = 'The passkey is six digits, 000001–999999.'; return; }
    runCommand({ ChangePasskey: { passkey: Number(v) } }, $('passkey-result'), 'Passkey changed: it is asked at the next pairing.');
  };
  $('history-reset').onclick = async () => {
    if (!confirm('Reset every history item to zero? This cannot be undone.')) return;
    await runCommand('ResetHistory', $('history-result'), 'History reset.');
    await refreshHistory();
  };
  $('sync').onclick = () => runCommand('Synchronise', $('action-result'), 'State of charge set to 100 %.');
  $('set-soc-go').onclick = () => {
    const pct = Number($('set-soc').value);
    const permille = Math.round(pct * 10);
    runCommand({ SetSoc: { soc_permille: Number.isFinite(permille) && permille >= 0 ? Math.min(permille, 65535) : 65535 } },
      $('action-result'), `State of charge set to ${pct} %.`);
  };
  $('key-show').onclick = async () => {
    const resp = await runCommand('ReadAdvertisementKey', $('action-result'), 'Key read from the BMS.', true);
    if (!resp) return;
    const d = core.decode('key', resp);
    if (d.ok) {
      $('key-value').textContent = hex(d.page.key);
      $('key-copy').hidden = false;
    }
  };
  $('key-new').onclick = async () => {
    if (!confirm('Make a new Instant Readout key? Home Assistant and other readers then need the new key.')) return;
    const resp = await runCommand('NewReadoutKey', $('action-result'), 'New key made: give it to Home Assistant.', true);
    const d = resp && core.decode('key', resp);
    if (d && d.ok) {
      $('key-value').textContent = hex(d.page.key);
      $('key-copy').hidden = false;
    }
  };
  $('forget-lost').onclick = async () => {
    const resp = await runCommand('ForgetLostBatteries', $('forget-result'), '', true);
    const d = resp && core.decode('forgotten', resp);
    if (d && d.ok) {
      const n = d.page.count;
      $('forget-result').textContent = n ? `Forgot ${n} lost ${n === 1 ? 'battery' : 'batteries'}.` : 'No battery was lost: nothing forgotten.';
    }
  };
  $('bonds-list').onclick = listBonds;
  $('read-protection').onchange = async () => {
    const enabled = $('read-protection').checked;
    await runCommand({ SetReadProtection: { enabled } }, $('security-result'),
      enabled ? 'Read protection on: only paired phones may read the BMS.' : 'Read protection off: anyone nearby may read the BMS.');
    await listBonds();
  };
  $('key-copy').onclick = () => navigator.clipboard.writeText($('key-value').textContent)
    .then(() => { $('action-result').textContent = 'Key copied.'; });
  $('image-file').onchange = chooseImage;
  $('image-upload').onclick = upload;
  $('image-list').onclick = () => listImages().catch((e) => { $('image-result').textContent = e.message; });
  $('image-test').onclick = testAndRestart;
  $('image-confirm').onclick = confirmImage;
  $('demo-unplug').onclick = demo((d) => d.act('unplug_cable', 1));
  $('demo-replug').onclick = demo((d) => d.act('replug_cable', 1));
  $('demo-cold').onclick = demo((d) => d.setAmbient(-10));
  $('demo-warm').onclick = demo((d) => d.setAmbient(undefined));
  $('demo-drain').onclick = demo((d) => d.act('enable', undefined, 'inverter'));
  $('demo-stop').onclick = demo((d) => d.act('disable', undefined, 'inverter'));
  $('demo-charge').onclick = demo((d) => d.act('enable', undefined, 'shore power'));
  $('demo-nocharge').onclick = demo((d) => d.act('disable', undefined, 'shore power'));
  $('demo-speed').onchange = () => { if (link instanceof DemoLink) link.speed = Number($('demo-speed').value); };
  offerReconnect();
  if ('serviceWorker' in navigator && window.isSecureContext) {
    navigator.serviceWorker.register('sw.js').catch(() => {});
  }
  document.body.dataset.ready = 'true';
}

main().catch((e) => { document.body.dataset.ready = 'error'; $('link').textContent = `The app could not start: ${e.message}`; });
