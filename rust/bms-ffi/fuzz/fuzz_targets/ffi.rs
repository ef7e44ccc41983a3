//! Fuzzes the C ABI (include/bms.h) as a hostile or careless C caller over a failing platform
//! (issue 15): every `bms_*` entry point, with handles, pointers, lengths and capacities the
//! input chooses (null, misaligned, overlapping, too short, oversized counts — anything the
//! contract in bms.h lets a caller pass, and lengths beyond `isize::MAX`, which it forbids but
//! the library checks cheaply), over `bms_port_*` functions whose storage fails as the input
//! decides: -EIO, -ENOENT, -ENOSPC, short reads, flipped bits, torn writes, a port claiming more
//! bytes than it was given room for, a random source without bytes, and callbacks that call back
//! into the library.
//!
//! What must hold (run under AddressSanitizer, the default of `cargo fuzz`):
//! - no crash, abort or out-of-bounds access;
//! - every call returns a status its documentation names, and exactly the refusal it documents
//!   for a bad argument (`BMS_EINVAL` before `BMS_ENOSPC`);
//! - a refused call changes nothing observable: not the caller's memory, not the stored
//!   records, not what the pure calls (`bms_retained`, `bms_passkey`, `bms_device_name`,
//!   `bms_next_deadline_ms`, GATT reads) show;
//! - a successful call writes only where it may (its buffer and out-pointers), and what it
//!   writes is well-formed;
//! - the library keeps its promises to the port (keys, lengths, log levels);
//! - a call made from inside a storage or random callback gets `BMS_EBUSY`.
//!
//! Input: one byte L, then L bytes of the port's fault tape (one byte per storage or random
//! call decides its fault; past the end everything works), then the calls.
#![no_main]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, CStr};

use bms_core::bus::{encode_report, BatteryFlags, BatteryModel, BatteryReport, MAX_FRAME_LEN};
use bms_core::protocol::{decode_response, Status};
use bms_core::retained::Retained;
use bms_core::storage::RecordKind;
use bms_ffi::*;
use libfuzzer_sys::fuzz_target;

const EIO: c_int = BMS_EIO;
const ENOENT: c_int = BMS_ENOENT;
const ENOSPC: c_int = BMS_ENOSPC;

/// The port: records in memory, a fault tape, and the handle a re-entrant call uses.
#[derive(Default)]
struct Port {
    records: BTreeMap<String, Vec<u8>>,
    tape: Vec<u8>,
    at: usize,
    /// The fuzz target itself is reading state: no faults, no re-entry.
    quiet: bool,
    handle: usize,
    random_state: u32,
}

thread_local! {
    static PORT: RefCell<Port> = RefCell::new(Port::default());
}

/// The next fault byte; 0 (no fault) when the tape is used up or the port is quiet.
fn fault() -> u8 {
    PORT.with(|p| {
        let mut p = p.borrow_mut();
        if p.quiet {
            return 0;
        }
        let byte = p.tape.get(p.at).copied().unwrap_or(0);
        p.at += 1;
        byte
    })
}

/// The key the library passes, checked against bms_port.h: NUL-terminated, 1–15 bytes.
///
/// # Safety
/// `key` is what the library passed.
unsafe fn key_of(key: *const c_char) -> String {
    assert!(!key.is_null(), "null key");
    // SAFETY: the library promises a NUL-terminated key (AddressSanitizer reports it if not).
    let key = unsafe { CStr::from_ptr(key) };
    let text = key.to_str().expect("a key is ASCII");
    assert!(
        !text.is_empty() && text.len() <= BMS_STORAGE_KEY_MAX_LEN,
        "key {text:?}"
    );
    text.to_string()
}

/// Faults 0x40.. also make the callback call back into the library, which must refuse.
fn reenter(byte: u8) {
    if byte < 0x40 {
        return;
    }
    let handle = PORT.with(|p| p.borrow().handle) as *mut Instance;
    let mut deadline = 0u64;
    // SAFETY: the handle is checked by the library; `deadline` is a writable u64.
    let status = unsafe { bms_next_deadline_ms(handle, &mut deadline) };
    // Before the first bms_open returned, the port has no handle to call with.
    let expected = if handle.is_null() {
        BMS_EINVAL
    } else {
        BMS_EBUSY
    };
    assert_eq!(status, expected, "a call from inside a port callback");
    assert!(bms_open().is_null(), "bms_open from inside a port callback");
}

#[no_mangle]
pub unsafe extern "C" fn bms_port_storage_read(
    key: *const c_char,
    buf: *mut u8,
    cap: usize,
    len: *mut usize,
) -> c_int {
    // SAFETY: as the library passed it.
    let key = unsafe { key_of(key) };
    assert!(!len.is_null(), "null len");
    assert!(!buf.is_null() || cap == 0, "null buffer");
    let f = fault();
    reenter(f);
    let record = PORT.with(|p| p.borrow().records.get(&key).cloned());
    let Some(mut record) = record else {
        return ENOENT;
    };
    match f % 16 {
        8 => return EIO,
        9 => return ENOENT,
        10 => return ENOSPC,
        // A broken port: claims more than the room it had, or a positive status.
        11 => {
            // SAFETY: `len` is a writable size_t (checked non-null above).
            unsafe { *len = cap + 1 };
            return 0;
        }
        12 => return 1,
        // A short read: only a prefix arrives.
        13 => record.truncate(usize::from(fault()) % (record.len() + 1)),
        // A flipped bit.
        14 if !record.is_empty() => {
            let bit = usize::from(fault()) % (record.len() * 8);
            record[bit / 8] ^= 1 << (bit % 8);
        }
        15 => return -libc_efault(),
        _ => {}
    }
    if record.len() > cap {
        return ENOSPC;
    }
    // SAFETY: `buf` is writable for `cap` bytes (the library's promise), `record.len() <= cap`.
    unsafe {
        std::ptr::copy_nonoverlapping(record.as_ptr(), buf, record.len());
        *len = record.len();
    }
    0
}

/// Some other errno a platform may give (-EFAULT).
const fn libc_efault() -> c_int {
    14
}

#[no_mangle]
pub unsafe extern "C" fn bms_port_storage_write(
    key: *const c_char,
    buf: *const u8,
    len: usize,
) -> c_int {
    // SAFETY: as the library passed it.
    let key = unsafe { key_of(key) };
    assert!(!buf.is_null() || len == 0, "null buffer");
    assert!(len <= 1024, "a record of {len} bytes");
    let value = if len == 0 {
        Vec::new()
    } else {
        // SAFETY: the library passes `len` readable bytes.
        unsafe { std::slice::from_raw_parts(buf, len) }.to_vec()
    };
    let f = fault();
    reenter(f);
    let store = |v: Vec<u8>| PORT.with(|p| p.borrow_mut().records.insert(key.clone(), v));
    match f % 16 {
        8 => EIO,
        9 => ENOSPC,
        // Torn: a prefix reached the flash.
        10 => {
            let keep = usize::from(fault()) % (value.len() + 1);
            store(value[..keep].to_vec());
            EIO
        }
        // Written, but reported as failed.
        11 => {
            store(value);
            EIO
        }
        12 => 1,
        _ => {
            store(value);
            0
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn bms_port_storage_delete(key: *const c_char) -> c_int {
    // SAFETY: as the library passed it.
    let key = unsafe { key_of(key) };
    let f = fault();
    reenter(f);
    if f % 16 == 8 {
        return EIO;
    }
    PORT.with(|p| p.borrow_mut().records.remove(&key));
    0
}

#[no_mangle]
pub unsafe extern "C" fn bms_port_random(buf: *mut u8, len: usize) -> c_int {
    assert!(!buf.is_null() || len == 0, "null buffer");
    let f = fault();
    reenter(f);
    match f % 16 {
        8 => return EIO,
        9 => return 1,
        _ => {}
    }
    PORT.with(|p| {
        let mut p = p.borrow_mut();
        for i in 0..len {
            // xorshift32: deterministic, so that a crash repeats.
            let mut s = p.random_state.max(1);
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            p.random_state = s;
            // SAFETY: `buf` is writable for `len` bytes (the library's promise).
            unsafe { *buf.add(i) = s as u8 };
        }
    });
    0
}

#[no_mangle]
pub unsafe extern "C" fn bms_port_log(level: u8, msg: *const c_char, len: usize) {
    assert!((1..=5).contains(&level), "log level {level}");
    assert!(!msg.is_null(), "null log line");
    assert!(len <= 120, "a log line of {len} bytes");
    // SAFETY: the library passes `len` readable bytes.
    let text = unsafe { std::slice::from_raw_parts(msg.cast::<u8>(), len) };
    assert!(
        std::str::from_utf8(text).is_ok(),
        "a log line that is not UTF-8"
    );
}

/// The fuzz input, read a little at a time; zeros once used up.
struct Input<'a> {
    data: &'a [u8],
    at: usize,
}

impl Input<'_> {
    fn done(&self) -> bool {
        self.at >= self.data.len()
    }
    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u8()).collect()
    }
}

/// The caller's memory: every buffer and out-pointer lies in here (so that overlaps and
/// misalignment happen), and what a call may not write is compared before and after.
const ARENA: usize = 1024;

#[repr(C, align(8))]
struct Arena([u8; ARENA]);

/// A buffer argument: a pointer and a length as the caller passes them.
#[derive(Clone, Copy, Debug)]
struct Buf {
    ptr: *mut u8,
    len: usize,
}

impl Buf {
    /// `BMS_EINVAL` for this buffer (null with a length, a length beyond `isize::MAX`).
    fn bad(self) -> bool {
        (self.ptr.is_null() && self.len > 0) || self.len > isize::MAX as usize
    }
}

fn misaligned(ptr: *const u8, align: usize) -> bool {
    ptr.is_null() || (ptr as usize) % align != 0
}

fn overlap(a: *const u8, a_len: usize, b: *const u8, b_len: usize) -> bool {
    let (a, b) = (a as usize, b as usize);
    a_len > 0 && b_len > 0 && a < b.saturating_add(b_len) && b < a.saturating_add(a_len)
}

struct Harness<'a> {
    ops: Input<'a>,
    arena: Box<Arena>,
    /// What `bms_open` returned last (the one static instance: the same address each time).
    handle: *mut Instance,
    open: bool,
    now: u64,
    verdict: Option<i32>,
    warm_pending: bool,
    /// What the last successful call of `checked` saw before it ran.
    before: Option<Observed>,
}

/// Everything a refused call must leave as it was.
#[derive(Debug, PartialEq)]
struct Observed {
    records: BTreeMap<String, Vec<u8>>,
    instance: Option<Vec<(i32, Vec<u8>)>>,
}

impl<'a> Harness<'a> {
    fn base(&mut self) -> *mut u8 {
        self.arena.0.as_mut_ptr()
    }

    /// A handle as the input chooses: the open one, null, misaligned, or any address.
    fn handle_arg(&mut self) -> (*mut Instance, bool) {
        match self.ops.u8() % 8 {
            1 => (std::ptr::null_mut(), false),
            2 => (self.handle.wrapping_byte_add(1), false),
            3 => (self.base().cast(), false),
            4 => (self.ops.u64() as usize as *mut Instance, false),
            _ => (self.handle, self.open && !self.handle.is_null()),
        }
    }

    fn time(&mut self) -> u64 {
        self.now = match self.ops.u8() % 8 {
            0 => self.now,
            1 => self.ops.u64(),
            2 => self.now.wrapping_sub(u64::from(self.ops.u16())),
            3 => self.now.saturating_add(u64::from(self.ops.u32())),
            _ => self.now.saturating_add(u64::from(self.ops.u16())),
        };
        self.now
    }

    /// A buffer in the arena (or null, or oversized), `fill`ed with input bytes when it is one
    /// the library reads.
    fn buf(&mut self, fill: bool) -> Buf {
        let mode = self.ops.u8();
        let off = usize::from(self.ops.u16()) % ARENA;
        let ptr = self.base().wrapping_add(off);
        let buf = match mode % 16 {
            0 => Buf {
                ptr: std::ptr::null_mut(),
                len: 0,
            },
            1 => Buf {
                ptr: std::ptr::null_mut(),
                len: usize::from(self.ops.u16()),
            },
            2 => Buf {
                ptr: std::ptr::null_mut(),
                len: usize::MAX,
            },
            // Beyond isize::MAX: the contract forbids it, the library checks it.
            3 => Buf {
                ptr,
                len: isize::MAX as usize + 1 + usize::from(self.ops.u8()),
            },
            4 => Buf { ptr, len: 0 },
            _ => Buf {
                ptr,
                len: usize::from(self.ops.u16()) % (ARENA - off + 1),
            },
        };
        if fill && !buf.bad() && buf.len > 0 {
            let bytes = self.ops.bytes(buf.len.min(64));
            for (i, b) in bytes.iter().enumerate() {
                // SAFETY: in the arena (`i < len`, `off + len <= ARENA`).
                unsafe { *buf.ptr.add(i) = *b };
            }
        }
        buf
    }

    /// An out-pointer for a `T` in the arena (8 writable bytes at least), or null.
    fn out<T>(&mut self) -> *mut T {
        if self.ops.u8() % 8 == 0 {
            return std::ptr::null_mut();
        }
        let off = usize::from(self.ops.u16()) % (ARENA - 32);
        self.base().wrapping_add(off).cast()
    }

    fn snapshot(&mut self) -> Observed {
        let records = PORT.with(|p| p.borrow().records.clone());
        if !self.open {
            return Observed {
                records,
                instance: None,
            };
        }
        PORT.with(|p| p.borrow_mut().quiet = true);
        let h = self.handle;
        let mut views = Vec::new();
        let mut buf = [0u8; 256];
        let mut len = 0usize;
        // SAFETY (all below): `h` is checked by the library; the buffers are local and sized
        // as passed.
        unsafe {
            let s = bms_retained(h, buf.as_mut_ptr(), buf.len(), &mut len);
            views.push((s, buf[..len.min(buf.len())].to_vec()));
            let mut passkey = 0u32;
            let s = bms_passkey(h, &mut passkey);
            views.push((s, passkey.to_le_bytes().to_vec()));
            let s = bms_device_name(h, buf.as_mut_ptr(), buf.len(), &mut len);
            views.push((s, buf[..len.min(buf.len())].to_vec()));
            let mut deadline = 0u64;
            let s = bms_next_deadline_ms(h, &mut deadline);
            views.push((s, deadline.to_le_bytes().to_vec()));
            for chr in [1u8, 2, 3, 4, 5, 7, 8] {
                let mut resp_len = 0usize;
                let s = bms_gatt_request(
                    h,
                    0,
                    chr,
                    0,
                    1,
                    std::ptr::null(),
                    0,
                    buf.as_mut_ptr(),
                    buf.len(),
                    &mut resp_len,
                );
                views.push((s, buf[..resp_len.min(buf.len())].to_vec()));
            }
        }
        PORT.with(|p| p.borrow_mut().quiet = false);
        Observed {
            records,
            instance: Some(views),
        }
    }

    /// Runs `call`; checks that a refusal (`refused(status)`) changed nothing, and that a
    /// success wrote only inside `writable`.
    fn checked(
        &mut self,
        writable: &[(*const u8, usize)],
        refused: impl Fn(i32) -> bool,
        call: impl FnOnce(&mut Self) -> i32,
    ) -> i32 {
        let before = self.snapshot();
        let memory = self.arena.0;
        let status = call(self);
        let base = self.arena.0.as_ptr() as usize;
        if refused(status) {
            assert!(
                memory == self.arena.0,
                "a refused call ({status}) wrote the caller's memory"
            );
            assert_eq!(
                self.snapshot(),
                before,
                "a refused call ({status}) changed state"
            );
        } else {
            self.before = Some(before);
            for (i, (old, new)) in memory.iter().zip(self.arena.0.iter()).enumerate() {
                let at = base + i;
                let allowed = writable.iter().any(|&(p, n)| {
                    let p = p as usize;
                    at >= p && at < p.saturating_add(n)
                });
                assert!(
                    old == new || allowed,
                    "a call ({status}) wrote outside its buffers"
                );
            }
        }
        status
    }

    fn step(&mut self) {
        match self.ops.u8() % 26 {
            0 => {
                let handle = bms_open();
                if self.open {
                    assert!(handle.is_null(), "a second instance");
                } else {
                    assert!(!handle.is_null(), "bms_open failed");
                    self.handle = handle;
                    self.open = true;
                    self.verdict = None;
                    self.warm_pending = false;
                    PORT.with(|p| p.borrow_mut().handle = handle as usize);
                }
            }
            1 => {
                let (h, valid) = self.handle_arg();
                // SAFETY: any pointer value is accepted.
                let s = self.checked(&[], |s| s != BMS_OK, |_| unsafe { bms_close(h) });
                assert_eq!(s, if valid { BMS_OK } else { BMS_EINVAL });
                if valid {
                    self.open = false;
                }
            }
            2 => {
                let (h, valid) = self.handle_arg();
                let now = self.time();
                let inputs = self.out::<BmsInputs>();
                if !inputs.is_null() {
                    let bytes = self.ops.bytes(16);
                    // SAFETY: `out` leaves 32 bytes in the arena.
                    unsafe { std::ptr::copy(bytes.as_ptr(), inputs.cast::<u8>(), 16) };
                }
                let outputs = self.out::<BmsOutputs>();
                let bad = !valid || misaligned(inputs.cast(), 4) || misaligned(outputs.cast(), 4);
                let w = [(outputs.cast_const().cast::<u8>(), 32)];
                // SAFETY: inputs readable, outputs writable for their types (in the arena).
                let s = self.checked(
                    &w,
                    |s| s != BMS_OK,
                    |_| unsafe { bms_step(h, now, inputs, outputs) },
                );
                assert_eq!(s, if bad { BMS_EINVAL } else { BMS_OK });
                if s == BMS_OK {
                    // SAFETY: written by the call.
                    let o = unsafe { outputs.read() };
                    assert!(o.tick_ms > 0);
                    assert!((o.led_blue as u8) <= 2 && (o.led_red as u8) <= 2);
                }
            }
            3 => {
                let (h, valid) = self.handle_arg();
                let now = self.time();
                let b = self.buf(true);
                let bad = !valid || b.bad();
                // SAFETY: `b` is readable for its length, or refused.
                let s = self.checked(
                    &[],
                    |s| s < 0,
                    |_| unsafe { bms_feed_bus(h, now, b.ptr, b.len) },
                );
                if bad {
                    assert_eq!(s, BMS_EINVAL);
                } else {
                    assert!(s >= 0, "feed_bus {s}");
                }
            }
            4 => {
                let (h, valid) = self.handle_arg();
                let protocol = self.ops.u8() % 6;
                let baud = match self.ops.u8() % 4 {
                    0 => 9600,
                    1 => 115_200,
                    _ => self.ops.u32(),
                };
                let mut b = self.buf(true);
                if self.ops.u8() % 2 == 0 && !b.ptr.is_null() && b.len <= ARENA {
                    b.len %= 20;
                }
                let s = self.checked(
                    &[],
                    |s| s != BMS_OK,
                    |_| unsafe {
                        // SAFETY: `b` is readable for its length, or refused.
                        bms_line_configure(h, protocol, baud, b.ptr, b.len)
                    },
                );
                // A null list with a count is the "scan" list 1..count.
                let bad = !valid || protocol > 3 || b.len > BMS_LINE_MAX_PACKS;
                if bad {
                    assert_eq!(s, BMS_EINVAL);
                } else {
                    assert!(s == BMS_OK || s == BMS_EINVAL, "line_configure {s}");
                }
            }
            5 => {
                let (h, valid) = self.handle_arg();
                let now = self.time();
                let tx = self.buf(false);
                let len = self.out::<usize>();
                let next = self.out::<u64>();
                let size = std::mem::size_of::<usize>();
                let bad = !valid
                    || tx.bad()
                    || misaligned(len.cast(), size)
                    || misaligned(next.cast(), 8)
                    || overlap(tx.ptr, tx.len, len.cast(), size)
                    || overlap(tx.ptr, tx.len, next.cast(), 8)
                    || overlap(len.cast(), size, next.cast(), 8);
                let w = [
                    (tx.ptr.cast_const(), tx.len),
                    (len.cast_const().cast(), size),
                    (next.cast_const().cast(), 8),
                ];
                let s = self.checked(
                    &w,
                    |s| s != BMS_OK,
                    |_| unsafe {
                        // SAFETY: in the arena for their lengths, or refused.
                        bms_line_poll(h, now, tx.ptr, tx.len, len, next)
                    },
                );
                let expected = if bad {
                    BMS_EINVAL
                } else if tx.len < BMS_LINE_REQUEST_MAX {
                    BMS_ENOSPC
                } else {
                    BMS_OK
                };
                assert_eq!(s, expected);
                if s == BMS_OK {
                    // SAFETY: written by the call.
                    let used = unsafe { len.read() };
                    assert!(used <= BMS_LINE_REQUEST_MAX);
                }
            }
            6 => self.gatt(),
            7 => {
                // SAFETY: `fill` passes arena buffers for their lengths, or refused ones.
                let (s, _, used) = self.fill(BMS_ADVERTISEMENT_LEN, true, |h, b, c, l| unsafe {
                    bms_advertisement(h, b, c, l)
                });
                if s == BMS_OK {
                    assert_eq!(used, BMS_ADVERTISEMENT_LEN);
                }
            }
            8 => {
                let (h, valid) = self.handle_arg();
                let now = self.time();
                let event = self.ops.u8() % 8;
                // SAFETY: no pointer but the handle.
                let s = self.checked(
                    &[],
                    |s| s != BMS_OK,
                    |_| unsafe { bms_dfu_event(h, now, event) },
                );
                let bad = !valid || event > BmsDfu::Progress as u8;
                assert_eq!(s, if bad { BMS_EINVAL } else { BMS_OK });
            }
            9 => {
                let (h, valid) = self.handle_arg();
                let now = self.time();
                let (ble, storage) = (self.ops.u8(), self.ops.u8());
                let s = self.checked(
                    &[],
                    |s| s == BMS_EINVAL,
                    |_| unsafe {
                        // SAFETY: no pointer but the handle.
                        bms_self_check(h, now, ble, storage)
                    },
                );
                if !valid {
                    assert_eq!(s, BMS_EINVAL);
                } else {
                    assert!(matches!(s, 0 | 1 | BMS_ETIMEDOUT), "self_check {s}");
                    if let Some(v) = self.verdict {
                        assert_eq!(s, v, "the self-check verdict changed");
                    } else if s != 0 {
                        self.verdict = Some(s);
                    }
                }
            }
            10 => {
                let (h, valid) = self.handle_arg();
                let out = self.out::<u64>();
                let bad = !valid || misaligned(out.cast(), 8);
                let w = [(out.cast_const().cast(), 8)];
                // SAFETY: in the arena, or refused.
                let s = self.checked(
                    &w,
                    |s| s != BMS_OK,
                    |_| unsafe { bms_next_deadline_ms(h, out) },
                );
                assert_eq!(s, if bad { BMS_EINVAL } else { BMS_OK });
            }
            11 => {
                let (h, valid) = self.handle_arg();
                let out = self.out::<u32>();
                let bad = !valid || misaligned(out.cast(), 4);
                let w = [(out.cast_const().cast(), 4)];
                // SAFETY: in the arena, or refused. EAGAIN stores 0: not a refusal.
                let s = self.checked(&w, |s| s == BMS_EINVAL, |_| unsafe { bms_passkey(h, out) });
                if bad {
                    assert_eq!(s, BMS_EINVAL);
                } else {
                    // SAFETY: written by the call.
                    let key = unsafe { out.read() };
                    match s {
                        BMS_OK => assert!((1..=BMS_PASSKEY_MAX).contains(&key), "passkey {key}"),
                        BMS_EAGAIN => assert_eq!(key, 0),
                        _ => panic!("passkey {s}"),
                    }
                }
            }
            12 => {
                let (h, valid) = self.handle_arg();
                let now = self.time();
                let pressed = self.ops.u8();
                // SAFETY: no pointer but the handle.
                let s = self.checked(&[], |s| s < 0, |_| unsafe { bms_button(h, now, pressed) });
                if valid {
                    assert!((0..=2).contains(&s), "button {s}");
                } else {
                    assert_eq!(s, BMS_EINVAL);
                }
            }
            13 => {
                let (h, valid) = self.handle_arg();
                let now = self.time();
                let success = self.ops.u8();
                let s = self.checked(
                    &[],
                    |s| s != BMS_OK,
                    |_| unsafe {
                        // SAFETY: no pointer but the handle.
                        bms_pairing_result(h, now, success)
                    },
                );
                assert_eq!(s, if valid { BMS_OK } else { BMS_EINVAL });
            }
            14 => {
                let (h, valid) = self.handle_arg();
                let count = match self.ops.u8() % 4 {
                    0 => usize::from(self.ops.u8()),
                    1 => usize::MAX,
                    _ => usize::from(self.ops.u8() % 5),
                };
                let bonds: *const BmsBond = if self.ops.u8() % 4 == 0 {
                    std::ptr::null()
                } else {
                    let off = usize::from(self.ops.u16()) % (ARENA - 7 * BMS_MAX_BONDS);
                    let bytes = self.ops.bytes(7 * BMS_MAX_BONDS);
                    self.arena.0[off..off + bytes.len()].copy_from_slice(&bytes);
                    self.base().wrapping_add(off).cast()
                };
                let bad = !valid || count > BMS_MAX_BONDS || (count > 0 && bonds.is_null());
                // SAFETY: readable for up to BMS_MAX_BONDS bonds, or refused.
                let s = self.checked(
                    &[],
                    |s| s != BMS_OK,
                    |_| unsafe { bms_bonds_set(h, bonds, count) },
                );
                assert_eq!(s, if bad { BMS_EINVAL } else { BMS_OK });
            }
            15 => {
                let (h, valid) = self.handle_arg();
                let out = self.out::<BmsBondAction>();
                let bad = !valid || out.is_null();
                let w = [(out.cast_const().cast(), 8)];
                // SAFETY: in the arena, or refused.
                let s = self.checked(&w, |s| s != BMS_OK, |_| unsafe { bms_bond_action(h, out) });
                assert_eq!(s, if bad { BMS_EINVAL } else { BMS_OK });
                if s == BMS_OK {
                    // SAFETY: written by the call.
                    let action = unsafe { out.read() };
                    assert!(action.kind <= BmsBondActionKind::Remove as u8);
                }
            }
            16 => {
                let (h, valid) = self.handle_arg();
                let now = self.time();
                // SAFETY: no pointer but the handle.
                let s = self.checked(&[], |s| s != BMS_OK, |_| unsafe { bms_flush(h, now) });
                assert_eq!(s, if valid { BMS_OK } else { BMS_EINVAL });
            }
            17 => {
                // SAFETY: as for 7.
                let (s, name, used) =
                    self.fill(BMS_DEVICE_NAME_MAX + 1, false, |h, b, c, l| unsafe {
                        bms_device_name(h, b, c, l)
                    });
                if s == BMS_OK {
                    assert!(used <= BMS_DEVICE_NAME_MAX);
                    // SAFETY: `name.len` > `used` bytes in the arena.
                    let text = unsafe { std::slice::from_raw_parts(name.ptr, used + 1) };
                    assert_eq!(text[used], 0, "no NUL after the name");
                    let text = std::str::from_utf8(&text[..used]).expect("a UTF-8 name");
                    assert!(!text.chars().any(char::is_control), "control characters");
                }
            }
            18 => assert_eq!(bms_set_log_level(self.ops.u8()), BMS_OK),
            19 => {
                let b = self.buf(true);
                let gap = self.ops.u64();
                // SAFETY: readable for its length, or refused.
                let s = self.checked(
                    &[],
                    |s| s != BMS_OK,
                    |_| unsafe { bms_set_warm_restart(b.ptr, b.len, gap) },
                );
                let intact = !b.bad()
                    && b.len == BMS_RETAINED_LEN
                    // SAFETY: 16 bytes in the arena.
                    && Retained::decode(unsafe { std::slice::from_raw_parts(b.ptr, b.len) })
                        .is_ok();
                assert_eq!(s, if intact { BMS_OK } else { BMS_EINVAL });
                self.warm_pending |= intact;
            }
            20 => {
                // SAFETY: as for 7.
                let (s, buf, used) = self.fill(BMS_RETAINED_LEN, false, |h, b, c, l| unsafe {
                    bms_retained(h, b, c, l)
                });
                if s == BMS_OK {
                    assert_eq!(used, BMS_RETAINED_LEN);
                    // SAFETY: 16 bytes in the arena.
                    let bytes = unsafe { std::slice::from_raw_parts(buf.ptr, BMS_RETAINED_LEN) };
                    assert!(
                        Retained::decode(bytes).is_ok(),
                        "a retained record that does not decode"
                    );
                }
            }
            21 => {
                let id = self.ops.u16();
                let s = bms_set_readout_product_id(id);
                let bad = id == 0 || id == u16::MAX;
                assert_eq!(s, if bad { BMS_EINVAL } else { BMS_OK });
            }
            // The platform's flash holds anything: a value under a record key.
            22 => {
                let kind = RecordKind::ALL[usize::from(self.ops.u8()) % RecordKind::ALL.len()];
                let n = usize::from(self.ops.u16()) % 300;
                let value = self.ops.bytes(n);
                PORT.with(|p| p.borrow_mut().records.insert(kind.key().to_string(), value));
            }
            23 => {
                let kind = RecordKind::ALL[usize::from(self.ops.u8()) % RecordKind::ALL.len()];
                let bit = usize::from(self.ops.u16());
                PORT.with(|p| {
                    if let Some(v) = p.borrow_mut().records.get_mut(kind.key()) {
                        if !v.is_empty() {
                            let bit = bit % (v.len() * 8);
                            v[bit / 8] ^= 1 << (bit % 8);
                        }
                    }
                });
            }
            // A valid battery report, so that the bank forms and the outputs switch.
            _ => {
                let (h, valid) = self.handle_arg();
                let now = self.time();
                let serial = u32::from(self.ops.u8() % 4) + 1;
                let base_mv = 2500 + self.ops.u16() % 1300;
                let cells = (0..4).map(|i| base_mv + i).collect::<Vec<u16>>();
                let report = BatteryReport {
                    serial,
                    model: BatteryModel::Lfp12V8,
                    capacity_dah: 1000,
                    firmware: 0x0100,
                    cells_mv: heapless::Vec::from_slice(&cells).expect("4 cells"),
                    temps_ddegc: heapless::Vec::from_slice(&[i16::from(self.ops.u8())])
                        .expect("1 sensor"),
                    current_ma: i32::from(self.ops.u16() as i16) * 10,
                    flags: BatteryFlags {
                        allowed_to_charge: true,
                        allowed_to_discharge: true,
                        balancing: false,
                    },
                };
                let mut frame = [0u8; MAX_FRAME_LEN];
                let n = encode_report(&report, &mut frame).expect("a report fits a frame");
                // SAFETY: a local buffer of `n` bytes.
                let s = unsafe { bms_feed_bus(h, now, frame.as_ptr(), n) };
                assert_eq!(s < 0, !valid, "feed_bus {s}");
            }
        }
    }

    /// A call that fills a caller's buffer and stores the length used (`bms_advertisement`,
    /// `bms_device_name`, `bms_retained`): `BMS_EINVAL` for a bad handle, buffer or length
    /// pointer or an overlap of the two, then `BMS_ENOSPC` below `need` bytes, else `BMS_OK`
    /// (or `BMS_EAGAIN` where `eagain`). Returns the status, the buffer and the length used.
    fn fill(
        &mut self,
        need: usize,
        eagain: bool,
        call: impl FnOnce(*mut Instance, *mut u8, usize, *mut usize) -> i32,
    ) -> (i32, Buf, usize) {
        let (h, valid) = self.handle_arg();
        let buf = self.buf(false);
        let len = self.out::<usize>();
        let size = std::mem::size_of::<usize>();
        let bad = !valid
            || buf.bad()
            || misaligned(len.cast(), size)
            || overlap(buf.ptr, buf.len, len.cast(), size);
        let w = [
            (buf.ptr.cast_const(), buf.len),
            (len.cast_const().cast(), size),
        ];
        let s = self.checked(&w, |s| s != BMS_OK, |_| call(h, buf.ptr, buf.len, len));
        if bad {
            assert_eq!(s, BMS_EINVAL);
        } else if buf.len < need {
            assert!(s == BMS_ENOSPC || (eagain && s == BMS_EAGAIN), "status {s}");
        } else {
            assert!(s == BMS_OK || (eagain && s == BMS_EAGAIN), "status {s}");
        }
        // SAFETY: written by the call when it succeeded.
        let used = if s == BMS_OK {
            unsafe { len.read() }
        } else {
            0
        };
        (s, buf, used)
    }

    fn gatt(&mut self) {
        let (h, valid) = self.handle_arg();
        let now = self.time();
        let characteristic = self.ops.u8() % 12;
        let write = self.ops.u8() % 3;
        let authenticated = self.ops.u8() % 3;
        let req = self.buf(true);
        let resp = self.buf(false);
        let resp_len = self.out::<usize>();
        let size = std::mem::size_of::<usize>();
        let bad = !valid
            || req.bad()
            || resp.bad()
            || misaligned(resp_len.cast(), size)
            || overlap(req.ptr, req.len, resp.ptr, resp.len)
            || overlap(req.ptr, req.len, resp_len.cast(), size)
            || overlap(resp.ptr, resp.len, resp_len.cast(), size);
        let w = [
            (resp.ptr.cast_const(), resp.len),
            (resp_len.cast_const().cast(), size),
        ];
        let s = self.checked(
            &w,
            |s| s != BMS_OK,
            |_| unsafe {
                // SAFETY: in the arena for their lengths, or refused.
                bms_gatt_request(
                    h,
                    now,
                    characteristic,
                    write,
                    authenticated,
                    req.ptr,
                    req.len,
                    resp.ptr,
                    resp.len,
                    resp_len,
                )
            },
        );
        let expected = if bad {
            BMS_EINVAL
        } else if resp.len < BMS_GATT_RESPONSE_MAX {
            BMS_ENOSPC
        } else {
            BMS_OK
        };
        assert_eq!(s, expected);
        if s == BMS_OK {
            // SAFETY: written by the call.
            let used = unsafe { resp_len.read() };
            assert!(
                (2..=BMS_GATT_RESPONSE_MAX).contains(&used),
                "a response of {used} bytes"
            );
            // SAFETY: `used` <= `resp.len` bytes in the arena.
            let bytes = unsafe { std::slice::from_raw_parts(resp.ptr, used) };
            let status = decode_response(bytes).map(|r| r.0);
            assert!(status.is_ok(), "a response that does not decode: {bytes:?}");
            // A request the protocol refuses changes nothing either (BLE-4).
            if status != Ok(Status::Ok) {
                let before = self.before.take().expect("taken by `checked`");
                assert_eq!(
                    self.snapshot(),
                    before,
                    "a refused request ({status:?}) changed state"
                );
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (tape_len, rest) = match data.split_first() {
        Some((n, rest)) => (usize::from(*n).min(rest.len()), rest),
        None => return,
    };
    let (tape, ops) = rest.split_at(tape_len);
    PORT.with(|p| {
        *p.borrow_mut() = Port {
            tape: tape.to_vec(),
            random_state: 2_463_534_242,
            ..Port::default()
        }
    });
    assert_eq!(bms_set_log_level(5), BMS_OK);
    assert_eq!(bms_set_readout_product_id(0xA3EC), BMS_OK);
    let mut h = Harness {
        ops: Input { data: ops, at: 0 },
        arena: Box::new(Arena([0xA5; ARENA])),
        handle: std::ptr::null_mut(),
        open: false,
        now: 0,
        verdict: None,
        warm_pending: false,
        before: None,
    };
    let mut calls = 0;
    while !h.ops.done() && calls < 64 {
        h.step();
        calls += 1;
    }
    // Leave nothing for the next input: the instance closed, no warm restart waiting.
    PORT.with(|p| p.borrow_mut().quiet = true);
    if h.open {
        // SAFETY: the open handle.
        assert_eq!(unsafe { bms_close(h.handle) }, BMS_OK);
    }
    if h.warm_pending {
        let handle = bms_open();
        // SAFETY: the handle just opened.
        assert_eq!(unsafe { bms_close(handle) }, BMS_OK);
    }
});
