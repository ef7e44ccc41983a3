//! Safe wrappers over the platform functions of `bms_port.h`: record storage and log output.

use crate::abi::{BMS_EINVAL, BMS_EIO};
use crate::port_sys;

/// Longest record key in bytes, without the NUL that C needs.
pub(crate) const KEY_BYTES: usize = 15;

/// Sends one log line (UTF-8, not NUL-terminated) to the platform.
pub(crate) fn log(level: u8, line: &[u8]) {
    // SAFETY: `line` is a live slice for the duration of the call, and `bms_port_log` is
    // documented to read exactly `len` bytes and not to keep the pointer.
    unsafe { port_sys::bms_port_log(level, line.as_ptr().cast(), line.len()) }
}

/// Fills `buf` with random bytes from the platform; `Err` carries its negative errno.
pub(crate) fn random(buf: &mut [u8]) -> Result<(), i32> {
    // SAFETY: `buf` is writable for `buf.len()` bytes during the call, which does not keep the
    // pointer.
    let status = unsafe { port_sys::bms_port_random(buf.as_mut_ptr(), buf.len()) };
    status_of(status)
}

/// `key` as a NUL-terminated C string in a stack buffer; `BMS_EINVAL` when it is too long or
/// holds a NUL.
fn c_key(key: &str) -> Result<[u8; KEY_BYTES + 1], i32> {
    let mut c = [0u8; KEY_BYTES + 1];
    let dst = c.get_mut(..key.len()).filter(|_| key.len() <= KEY_BYTES);
    match dst {
        Some(dst) if !key.as_bytes().contains(&0) => {
            dst.copy_from_slice(key.as_bytes());
            Ok(c)
        }
        _ => Err(BMS_EINVAL),
    }
}

/// Reads the record under `key` into `buf`; returns its length, or the port's negative errno
/// (`BMS_ENOENT` when absent).
pub(crate) fn storage_read(key: &str, buf: &mut [u8]) -> Result<usize, i32> {
    let c = c_key(key)?;
    let mut len = 0usize;
    // SAFETY: `c` is NUL-terminated, `buf` is writable for `buf.len()` bytes and `len` is a
    // valid `size_t`; all three outlive the call, which does not keep the pointers.
    let status = unsafe {
        port_sys::bms_port_storage_read(c.as_ptr().cast(), buf.as_mut_ptr(), buf.len(), &mut len)
    };
    match status {
        0 if len <= buf.len() => Ok(len),
        err if err < 0 => Err(err),
        // A port that claims more than it was given room for, or returns a positive status, is
        // broken: treat that as an I/O error.
        _ => Err(BMS_EIO),
    }
}

/// Stores `bytes` under `key`; `Err` carries the port's negative errno.
pub(crate) fn storage_write(key: &str, bytes: &[u8]) -> Result<(), i32> {
    let c = c_key(key)?;
    // SAFETY: `c` is NUL-terminated and `bytes` is readable for `bytes.len()` bytes during the
    // call, which does not keep the pointers.
    let status =
        unsafe { port_sys::bms_port_storage_write(c.as_ptr().cast(), bytes.as_ptr(), bytes.len()) };
    status_of(status)
}

/// Removes the record under `key`; `Err` carries the port's negative errno.
pub(crate) fn storage_delete(key: &str) -> Result<(), i32> {
    let c = c_key(key)?;
    // SAFETY: `c` is NUL-terminated and lives during the call, which does not keep the pointer.
    let status = unsafe { port_sys::bms_port_storage_delete(c.as_ptr().cast()) };
    status_of(status)
}

/// `Ok` for 0, the errno for a negative status, `BMS_EIO` for a (broken) positive one.
fn status_of(status: i32) -> Result<(), i32> {
    match status {
        0 => Ok(()),
        err if err < 0 => Err(err),
        _ => Err(BMS_EIO),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_get_a_nul_and_bad_keys_are_refused() {
        let c = c_key("bms/settings").unwrap();
        assert_eq!(&c[..13], b"bms/settings\0");
        assert_eq!(c_key("a-key-of-16-byte"), Err(BMS_EINVAL));
        assert_eq!(c_key("nul\0inside"), Err(BMS_EINVAL));
        assert!(c_key("exactly-15-byte").is_ok());
    }
}
