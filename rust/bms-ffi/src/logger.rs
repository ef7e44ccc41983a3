//! The `log` backend of the library: formats each record of bms-core and bms-ffi into a small
//! stack buffer and hands it to the platform's `bms_port_log` (Zephyr logging on the target).

use core::fmt::{self, Write};

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::port;

/// Longest log line in bytes; longer messages are cut (and end in `~`).
pub(crate) const LINE_BYTES: usize = 120;

/// A line buffer that keeps what fits and remembers that it cut.
struct Line {
    buf: [u8; LINE_BYTES],
    len: usize,
    cut: bool,
}

impl Line {
    const fn new() -> Self {
        Line {
            buf: [0; LINE_BYTES],
            len: 0,
            cut: false,
        }
    }

    /// The text written so far, ending in `~` when it was cut.
    fn text(&mut self) -> &[u8] {
        let mut len = self.len;
        if self.cut {
            // `write_str` leaves the last byte free for this mark.
            if let Some(mark) = self.buf.get_mut(len) {
                *mark = b'~';
                len += 1;
            }
        }
        self.buf.get(..len).unwrap_or_default()
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = (LINE_BYTES - 1).saturating_sub(self.len);
        // Cut at a character boundary, so the line stays valid UTF-8.
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        if let (Some(dst), Some(src)) = (self.buf.get_mut(self.len..self.len + take), s.get(..take))
        {
            dst.copy_from_slice(src.as_bytes());
            self.len += take;
        }
        if take < s.len() {
            self.cut = true;
            return Err(fmt::Error);
        }
        Ok(())
    }
}

/// Forwards records to `bms_port_log`.
struct PortLogger;

impl Log for PortLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut line = Line::new();
        let module = module_of(record.target());
        // A cut line is still worth sending, so the write results are not needed. The module
        // goes in with write_str: `{}` of a &str would bring core's padding code.
        let _ = line.write_str(module);
        let _ = line.write_str(": ");
        let _ = line.write_fmt(*record.args());
        port::log(level_number(record.level()), line.text());
    }

    fn flush(&self) {}
}

/// The last part of a module path ("protection" of "bms_core::protection"): Zephyr adds its own
/// prefix. A byte search, not `rsplit`, which would bring core's memrchr along.
fn module_of(target: &str) -> &str {
    match target.bytes().rposition(|b| b == b':') {
        Some(colon) => target.get(colon + 1..).unwrap_or(target),
        None => target,
    }
}

static LOGGER: PortLogger = PortLogger;

/// The `bms_port_log` level number of a `log` level: 1 error .. 5 trace.
pub(crate) const fn level_number(level: Level) -> u8 {
    match level {
        Level::Error => 1,
        Level::Warn => 2,
        Level::Info => 3,
        Level::Debug => 4,
        Level::Trace => 5,
    }
}

/// The `log` filter for a `bms_port_log` level number (0 = off, 1 error .. 5 trace and above).
pub(crate) const fn level_filter(level: u8) -> LevelFilter {
    match level {
        0 => LevelFilter::Off,
        1 => LevelFilter::Error,
        2 => LevelFilter::Warn,
        3 => LevelFilter::Info,
        4 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

/// Installs the port logger (once; later calls only change the level).
pub(crate) fn install(level: u8) {
    // An error means a logger is installed already: on the target that can only be ours, and in
    // host tests it is ours or the test's own, which then keeps the records.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level_filter(level));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_at_a_char_boundary_and_marked() {
        let mut line = Line::new();
        let long = "é".repeat(LINE_BYTES);
        assert!(write!(line, "{long}").is_err());
        let text = line.text();
        assert_eq!(
            text.len(),
            LINE_BYTES - 1,
            "59 two-byte characters plus the mark"
        );
        assert_eq!(text.last(), Some(&b'~'));
        assert!(core::str::from_utf8(text).is_ok());
    }

    #[test]
    fn short_lines_are_kept_whole() {
        let mut line = Line::new();
        write!(line, "atd: {}", 42).unwrap();
        assert_eq!(line.text(), b"atd: 42");
    }

    #[test]
    fn lines_name_the_module_without_its_crate() {
        assert_eq!(module_of("bms_core::protection"), "protection");
        assert_eq!(module_of("bms_core::storage::persist"), "persist");
        assert_eq!(module_of("bms_ffi"), "bms_ffi");
        assert_eq!(module_of(""), "");
    }

    #[test]
    fn level_numbers_round_trip() {
        for level in [
            Level::Error,
            Level::Warn,
            Level::Info,
            Level::Debug,
            Level::Trace,
        ] {
            assert_eq!(level_filter(level_number(level)), level.to_level_filter());
        }
        assert_eq!(level_filter(0), LevelFilter::Off);
    }
}
