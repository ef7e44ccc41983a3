// Firmware update over SMP (MCUmgr's Simple Management Protocol), the subset the OpenBMS
// firmware needs: image upload, image state (list, test, confirm) and reset. Written against the
// SMP specification (Zephyr docs: "SMP Protocol Specification", "SMP Group 1: Application /
// software image management"); there is no maintained JavaScript SMP package on npm.
// Also: the MCUboot image header and TLV parser, to show an image's version before uploading.

export const SMP_SERVICE = '8d53dc1d-1db7-4cd3-868b-8a527460aa84';
export const SMP_CHARACTERISTIC = 'da2e7828-fbce-4e01-ae9e-261174997c48';

export const OP = { READ: 0, READ_RSP: 1, WRITE: 2, WRITE_RSP: 3 };
export const GROUP = { OS: 0, IMAGE: 1 };
export const ID = { OS_RESET: 5, IMAGE_STATE: 0, IMAGE_UPLOAD: 1 };
const HEADER_LEN = 8;

// ---- CBOR (RFC 8949): the types SMP uses -----------------------------------------------------

function head(major, n, out) {
  if (n < 24) out.push((major << 5) | n);
  else if (n < 0x100) out.push((major << 5) | 24, n);
  else if (n < 0x10000) out.push((major << 5) | 25, n >> 8, n & 0xff);
  else out.push((major << 5) | 26, (n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
}

export function cborEncode(value, out = []) {
  if (value === false) out.push(0xf4);
  else if (value === true) out.push(0xf5);
  else if (value === null) out.push(0xf6);
  else if (typeof value === 'number') {
    if (!Number.isInteger(value) || value > 0xffffffff || value < -0x100000000) {
      throw new Error(`CBOR: cannot encode ${value}`);
    }
    if (value >= 0) head(0, value, out);
    else head(1, -1 - value, out);
  } else if (typeof value === 'string') {
    const bytes = new TextEncoder().encode(value);
    head(3, bytes.length, out);
    for (const b of bytes) out.push(b);
  } else if (value instanceof Uint8Array) {
    head(2, value.length, out);
    for (const b of value) out.push(b);
  } else if (Array.isArray(value)) {
    head(4, value.length, out);
    for (const v of value) cborEncode(v, out);
  } else if (typeof value === 'object') {
    const entries = Object.entries(value).filter(([, v]) => v !== undefined);
    head(5, entries.length, out);
    for (const [k, v] of entries) {
      cborEncode(k, out);
      cborEncode(v, out);
    }
  } else {
    throw new Error(`CBOR: cannot encode ${typeof value}`);
  }
  return out;
}

export function cborDecode(bytes) {
  let pos = 0;
  const need = (n) => {
    if (pos + n > bytes.length) throw new Error('CBOR: truncated');
  };
  const arg = (info) => {
    if (info < 24) return info;
    const len = { 24: 1, 25: 2, 26: 4, 27: 8 }[info];
    if (!len) throw new Error(`CBOR: bad length code ${info}`);
    need(len);
    let n = 0;
    for (let i = 0; i < len; i++) n = n * 256 + bytes[pos++];
    return n;
  };
  const item = () => {
    need(1);
    const first = bytes[pos++];
    const major = first >> 5;
    const info = first & 31;
    if (info === 31) {
      // Indefinite length (zcbor writes definite ones, older MCUmgr indefinite maps).
      if (major === 4 || major === 5) {
        const out = major === 4 ? [] : {};
        while (bytes[pos] !== 0xff) {
          need(1);
          if (major === 4) out.push(item());
          else out[item()] = item();
        }
        pos++;
        return out;
      }
      if (major === 7) throw new Error('CBOR: unexpected break');
      throw new Error(`CBOR: indefinite type ${major} not supported`);
    }
    if (major === 7) {
      if (info === 20) return false;
      if (info === 21) return true;
      if (info === 22 || info === 23) return null;
      throw new Error(`CBOR: simple value ${info} not supported`);
    }
    const n = arg(info);
    switch (major) {
      case 0: return n;
      case 1: return -1 - n;
      case 2: need(n); pos += n; return bytes.slice(pos - n, pos);
      case 3: need(n); pos += n; return new TextDecoder().decode(bytes.slice(pos - n, pos));
      case 4: { const a = []; for (let i = 0; i < n; i++) a.push(item()); return a; }
      case 5: { const m = {}; for (let i = 0; i < n; i++) { const k = item(); m[k] = item(); } return m; }
      default: throw new Error(`CBOR: tag ${n} not supported`);
    }
  };
  const value = item();
  if (pos !== bytes.length) throw new Error('CBOR: bytes after the value');
  return value;
}

// ---- SMP frames -------------------------------------------------------------------------------

export function smpFrame(op, group, id, seq, body) {
  const payload = cborEncode(body);
  const f = new Uint8Array(HEADER_LEN + payload.length);
  f[0] = op;
  f[1] = 0;
  f[2] = payload.length >> 8;
  f[3] = payload.length & 0xff;
  f[4] = group >> 8;
  f[5] = group & 0xff;
  f[6] = seq & 0xff;
  f[7] = id;
  f.set(payload, HEADER_LEN);
  return f;
}

export function smpParse(frame) {
  if (frame.length < HEADER_LEN) throw new Error(`SMP: frame of ${frame.length} bytes is shorter than its header`);
  const len = (frame[2] << 8) | frame[3];
  if (frame.length !== HEADER_LEN + len) {
    throw new Error(`SMP: header says ${len} payload bytes, frame has ${frame.length - HEADER_LEN}`);
  }
  return {
    op: frame[0], group: (frame[4] << 8) | frame[5], seq: frame[6], id: frame[7],
    body: cborDecode(frame.subarray(HEADER_LEN)),
  };
}

/** Frames arrive in notifications of at most MTU − 3 bytes: joins them into whole frames. */
export class SmpReassembler {
  constructor() { this.buf = new Uint8Array(0); }
  push(chunk) {
    const b = new Uint8Array(this.buf.length + chunk.length);
    b.set(this.buf);
    b.set(chunk, this.buf.length);
    this.buf = b;
    if (this.buf.length < HEADER_LEN) return null;
    const total = HEADER_LEN + ((this.buf[2] << 8) | this.buf[3]);
    if (this.buf.length < total) return null;
    const frame = this.buf.slice(0, total);
    this.buf = this.buf.slice(total);
    return frame;
  }
}

const MGMT_ERR = {
  1: 'unknown error', 2: 'out of memory', 3: 'invalid value', 4: 'timeout', 5: 'no such entry',
  6: 'bad state', 7: 'response too large', 8: 'not supported', 9: 'corrupt', 10: 'busy',
  11: 'access denied',
};

/**
 * An SMP client over a transport `{ send(frame: Uint8Array): Promise<void>, onFrame(cb) }`
 * (BLE: writes to and notifications from the SMP characteristic).
 */
export class SmpClient {
  constructor(transport, { timeoutMs = 5000 } = {}) {
    this.transport = transport;
    this.seq = 0;
    this.pending = new Map();
    this.timeoutMs = timeoutMs;
    transport.onFrame((frame) => {
      let rsp;
      try { rsp = smpParse(frame); } catch (e) { console.warn(e); return; }
      const p = this.pending.get(rsp.seq);
      if (p) { this.pending.delete(rsp.seq); p.resolve(rsp); }
    });
  }

  async request(op, group, id, body) {
    const seq = this.seq = (this.seq + 1) & 0xff;
    const answer = new Promise((resolve, reject) => {
      this.pending.set(seq, { resolve });
      setTimeout(() => {
        if (this.pending.delete(seq)) reject(new Error('the device did not answer (SMP timeout)'));
      }, this.timeoutMs);
    });
    await this.transport.send(smpFrame(op, group, id, seq, body));
    const rsp = await answer;
    const rc = rsp.body.rc ?? rsp.body.err?.rc ?? 0;
    if (rc !== 0) throw new Error(`the device refused: ${MGMT_ERR[rc] ?? `error ${rc}`}`);
    return rsp.body;
  }

  imageState() { return this.request(OP.READ, GROUP.IMAGE, ID.IMAGE_STATE, {}); }
  testImage(hash) { return this.request(OP.WRITE, GROUP.IMAGE, ID.IMAGE_STATE, { hash, confirm: false }); }
  confirmRunning() { return this.request(OP.WRITE, GROUP.IMAGE, ID.IMAGE_STATE, { confirm: true }); }
  reset() { return this.request(OP.WRITE, GROUP.OS, ID.OS_RESET, {}); }

  /** Uploads `image` to the secondary slot in chunks, calling `progress(sent, total)`. */
  async upload(image, sha256, progress, { chunk = 160 } = {}) {
    let off = 0;
    while (off < image.length) {
      const data = image.subarray(off, Math.min(off + chunk, image.length));
      const body = off === 0
        ? { image: 0, len: image.length, off, sha: sha256, data }
        : { off, data };
      const rsp = await this.request(OP.WRITE, GROUP.IMAGE, ID.IMAGE_UPLOAD, body);
      if (typeof rsp.off !== 'number' || rsp.off <= off || rsp.off > image.length) {
        throw new Error(`the device answered offset ${rsp.off} after ${off}`);
      }
      off = rsp.off;
      progress(off, image.length);
    }
  }
}

// ---- MCUboot images ---------------------------------------------------------------------------

export const IMAGE_MAGIC = 0x96f3b83d;
const TLV_INFO_MAGIC = 0x6907;
const TLV_PROT_INFO_MAGIC = 0x6908;
const TLV_SHA256 = 0x10;
const SIGNATURE_TLVS = { 0x20: 'RSA-2048', 0x22: 'ECDSA P-256', 0x23: 'RSA-3072', 0x24: 'Ed25519' };

/**
 * Reads an MCUboot image: its version, size and the SHA-256 and signature TLVs. Throws with a
 * clear message when the file is not a signed MCUboot image.
 */
export function parseImage(bytes) {
  if (bytes.length < 32) throw new Error(`not an MCUboot image: ${bytes.length} bytes is shorter than its header`);
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = v.getUint32(0, true);
  if (magic !== IMAGE_MAGIC) {
    throw new Error(`not an MCUboot image: magic 0x${magic.toString(16)}, expected 0x${IMAGE_MAGIC.toString(16)} (choose zephyr.signed.bin)`);
  }
  const hdrSize = v.getUint16(8, true);
  const protSize = v.getUint16(10, true);
  const imgSize = v.getUint32(12, true);
  const version = `${bytes[20]}.${bytes[21]}.${v.getUint16(22, true)}+${v.getUint32(24, true)}`;
  let pos = hdrSize + imgSize;
  const tlvs = [];
  const readArea = (expectMagic) => {
    if (pos + 4 > bytes.length) return false;
    const m = v.getUint16(pos, true);
    if (m !== expectMagic) return false;
    const end = pos + v.getUint16(pos + 2, true);
    pos += 4;
    while (pos + 4 <= end && end <= bytes.length) {
      const type = v.getUint16(pos, true);
      const len = v.getUint16(pos + 2, true);
      tlvs.push({ type, value: bytes.subarray(pos + 4, pos + 4 + len) });
      pos += 4 + len;
    }
    pos = end;
    return true;
  };
  if (protSize > 0) readArea(TLV_PROT_INFO_MAGIC);
  if (!readArea(TLV_INFO_MAGIC)) throw new Error('not a complete MCUboot image: no TLV area after the image (truncated file?)');
  const hash = tlvs.find((t) => t.type === TLV_SHA256)?.value;
  if (!hash) throw new Error('the image has no SHA-256 (not made by imgtool?)');
  const sig = tlvs.find((t) => SIGNATURE_TLVS[t.type]);
  return {
    version, imageSize: imgSize, fileSize: bytes.length, hash,
    signature: sig ? SIGNATURE_TLVS[sig.type] : null,
  };
}

export function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}
