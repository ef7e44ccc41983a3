// An SMP image-management responder, as MCUmgr answers on the device: the demo device's
// firmware update, and the browser tests' SMP peer. It keeps the running image (slot 0) and
// the uploaded one (slot 1) in memory, checks offsets and the SHA-256 of the whole upload as
// img_mgmt does, and marks the new image pending on "test" and running after a reset.
import { OP, GROUP, ID, smpFrame, smpParse, parseImage, hex } from './smp.js';

const RC = { OK: 0, EINVAL: 3, ENOENT: 5, EBADSTATE: 6 };

async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
}

export class SmpResponder {
  /** `events` gets 'upload-started', 'upload-done', 'reset' (the demo tells the BMS core). */
  constructor({ runningVersion = '0.1.0', events = () => {} } = {}) {
    this.slots = [{ slot: 0, version: runningVersion, hash: new Uint8Array(32).fill(0x5a),
      bootable: true, pending: false, confirmed: true, active: true, permanent: false }];
    this.upload = null;
    this.events = events;
  }

  /** One request frame in, one response frame out. */
  async handle(frame) {
    const req = smpParse(frame);
    const rspOp = req.op === OP.READ ? OP.READ_RSP : OP.WRITE_RSP;
    const body = await this.answer(req);
    return smpFrame(rspOp, req.group, req.id, req.seq, body);
  }

  async answer({ op, group, id, body }) {
    if (group === GROUP.IMAGE && id === ID.IMAGE_STATE && op === OP.READ) {
      return { images: this.slots.map((s) => ({ ...s })), splitStatus: 0 };
    }
    if (group === GROUP.IMAGE && id === ID.IMAGE_STATE && op === OP.WRITE) {
      if (body.confirm === true && body.hash === undefined) {
        this.slots[0].confirmed = true;
        return this.answer({ op: OP.READ, group, id, body: {} });
      }
      const target = this.slots.find((s) => body.hash && hex(s.hash) === hex(body.hash));
      if (!target) return { rc: RC.ENOENT };
      if (target.slot === 1) {
        target.pending = true;
        target.permanent = body.confirm === true;
      }
      return this.answer({ op: OP.READ, group, id, body: {} });
    }
    if (group === GROUP.IMAGE && id === ID.IMAGE_UPLOAD && op === OP.WRITE) {
      return this.chunk(body);
    }
    if (group === GROUP.OS && id === ID.OS_RESET && op === OP.WRITE) {
      setTimeout(() => this.reset(), 0);
      return {};
    }
    return { rc: 8 };
  }

  async chunk(body) {
    if (!(body.data instanceof Uint8Array) || typeof body.off !== 'number') return { rc: RC.EINVAL };
    if (body.off === 0) {
      if (typeof body.len !== 'number' || body.len <= 0) return { rc: RC.EINVAL };
      this.upload = { len: body.len, sha: body.sha, bytes: new Uint8Array(body.len), off: 0 };
      this.slots = this.slots.filter((s) => s.slot === 0);
      this.events('upload-started');
    }
    const u = this.upload;
    if (!u) return { rc: RC.EBADSTATE };
    // A chunk at another offset than expected is answered with the expected offset (the
    // client resumes from there), as img_mgmt does.
    if (body.off !== u.off) return { rc: RC.OK, off: u.off };
    if (u.off + body.data.length > u.len) return { rc: RC.EINVAL };
    u.bytes.set(body.data, u.off);
    u.off += body.data.length;
    if (u.off === u.len) {
      this.upload = null;
      const digest = await sha256(u.bytes);
      if (u.sha && hex(digest) !== hex(u.sha)) return { rc: RC.EINVAL };
      let info;
      try { info = parseImage(u.bytes); } catch { return { rc: RC.EINVAL }; }
      this.received = u.bytes;
      this.slots.push({ slot: 1, version: info.version.split('+')[0], hash: info.hash,
        bootable: true, pending: false, confirmed: false, active: false, permanent: false });
      this.events('upload-done');
    }
    return { rc: RC.OK, off: u.off };
  }

  reset() {
    const next = this.slots.find((s) => s.slot === 1 && s.pending);
    if (next) {
      // MCUboot swaps: the tested image runs, unconfirmed; the old one waits in slot 1.
      const old = this.slots.find((s) => s.slot === 0);
      this.slots = [
        { ...next, slot: 0, pending: false, active: true, confirmed: next.permanent },
        { ...old, slot: 1, active: false, pending: false, confirmed: false },
      ];
    }
    this.events('reset');
  }
}
