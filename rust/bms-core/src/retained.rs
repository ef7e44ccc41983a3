//! PROT-1 (rev 2), DFU-1: the output state kept across a *warm* restart (a firmware update's
//! reboot, a watchdog reset), so that the outputs are driven again as soon as the application
//! starts instead of waiting for the first battery data.
//!
//! Each step the core makes a small record of its outputs ([`Retained`], [`RETAINED_LEN`]
//! bytes: magic, version, flags, the step's time, CRC-32). The platform keeps the bytes in RAM
//! that a reset does not clear (retained RAM: `docs/firmware.md`). At the next start it hands
//! them back with what only it knows ([`WarmRestart`]): that the reset was warm, and how long
//! the reset itself may have taken after the record was written. The core, at its first step,
//! drives ATD and ATC again as they were when the record is intact, was *safe* (made after a
//! complete data set was judged, no alarm active) and is younger than
//! [`WARM_RESTART_MAX_AGE_MS`]; BANK-4's lost time then applies if no valid data follows. A cold
//! power-up (or any doubt) keeps PROT-1: every output free-floating until the first data set.
//!
//! Inputs: the record bytes and the platform's gap bound. Outputs: the record each step. No
//! clock, no storage here: sans-IO like the rest of the core.

use core::fmt;

use crate::storage::record::CRC;
use crate::word::Number;

/// Bytes of an encoded [`Retained`] record.
pub const RETAINED_LEN: usize = 16;

/// PROT-1 (rev 2) **(choice)**: a retained output state older than this (gap before the reset
/// plus the boot) is not restored, ms.
pub const WARM_RESTART_MAX_AGE_MS: u64 = 10_000;

/// The record's first two bytes.
const MAGIC: [u8; 2] = *b"OR";
/// The layout version; a record of another version is not restored.
const VERSION: u8 = 1;

const FLAG_ATD: u8 = 1 << 0;
const FLAG_ATC: u8 = 1 << 1;
const FLAG_PREALARM: u8 = 1 << 2;
const FLAG_SAFE: u8 = 1 << 3;

/// The outputs as one step left them, for the next start.
///
/// Layout (little-endian): `b"OR"`, version 1, flags (bit 0 ATD high, 1 ATC high, 2 pre-alarm
/// high, 3 safe), the step's time in ms (u64, the caller's clock before the reset), CRC-32/ISCSI
/// of the first 12 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retained {
    /// ATD was high.
    pub atd: bool,
    /// ATC was high.
    pub atc: bool,
    /// The pre-alarm was high.
    pub prealarm: bool,
    /// The outputs came from a complete, judged data set with no alarm active.
    pub safe: bool,
    /// When the step ran, ms on the caller's clock of that boot.
    pub saved_at_ms: u64,
}

/// Why retained bytes were not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetainedError {
    /// `len` bytes where [`RETAINED_LEN`] are needed.
    Length {
        /// The length given.
        len: usize,
    },
    /// The first two bytes are not the record's (never written, or RAM after a power cycle).
    Magic,
    /// A record of layout `version`, not 1.
    Version {
        /// The version found.
        version: u8,
    },
    /// The CRC does not match (a bit flipped, a half-written record).
    Crc,
}

impl fmt::Display for RetainedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetainedError::Length { len } => write!(
                f,
                "retained output state of {} bytes, not {}",
                Number::from(*len),
                Number::from(RETAINED_LEN)
            ),
            RetainedError::Magic => f.write_str("no retained output state"),
            RetainedError::Version { version } => write!(
                f,
                "retained output state version {}",
                Number::from(*version)
            ),
            RetainedError::Crc => f.write_str("retained output state crc mismatch"),
        }
    }
}

impl Retained {
    /// The record's bytes.
    pub fn encode(&self) -> [u8; RETAINED_LEN] {
        let mut out = [0u8; RETAINED_LEN];
        let flags = [
            (self.atd, FLAG_ATD),
            (self.atc, FLAG_ATC),
            (self.prealarm, FLAG_PREALARM),
            (self.safe, FLAG_SAFE),
        ]
        .into_iter()
        .filter(|(set, _)| *set)
        .fold(0, |flags, (_, bit)| flags | bit);
        let (head, crc) = out.split_at_mut(RETAINED_LEN - 4);
        let (magic, rest) = head.split_at_mut(2);
        magic.copy_from_slice(&MAGIC);
        let (version_flags, time) = rest.split_at_mut(2);
        version_flags.copy_from_slice(&[VERSION, flags]);
        time.copy_from_slice(&self.saved_at_ms.to_le_bytes());
        crc.copy_from_slice(&CRC.checksum(head).to_le_bytes());
        out
    }

    /// The record in `bytes`, or why it is not one.
    pub fn decode(bytes: &[u8]) -> Result<Retained, RetainedError> {
        let bytes: &[u8; RETAINED_LEN] = bytes
            .try_into()
            .map_err(|_| RetainedError::Length { len: bytes.len() })?;
        let (head, crc) = bytes.split_first_chunk::<12>().ok_or(RetainedError::Crc)?;
        let [m0, m1, version, flags, t0, t1, t2, t3, t4, t5, t6, t7] = *head;
        let time = [t0, t1, t2, t3, t4, t5, t6, t7];
        if [m0, m1] != MAGIC {
            return Err(RetainedError::Magic);
        }
        if version != VERSION {
            return Err(RetainedError::Version { version });
        }
        let crc: [u8; 4] = crc.try_into().map_err(|_| RetainedError::Crc)?;
        if CRC.checksum(head) != u32::from_le_bytes(crc) {
            return Err(RetainedError::Crc);
        }
        Ok(Retained {
            atd: flags & FLAG_ATD != 0,
            atc: flags & FLAG_ATC != 0,
            prealarm: flags & FLAG_PREALARM != 0,
            safe: flags & FLAG_SAFE != 0,
            saved_at_ms: u64::from_le_bytes(time),
        })
    }
}

/// What the platform knows about a warm restart, for [`crate::Config::warm_restart`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WarmRestart {
    /// The record kept across the reset.
    pub retained: Retained,
    /// The longest time the reset may have come after the record was written, ms (the
    /// firmware: its watchdog period; the record is written every step). The age judged at the
    /// first step is this plus the time since start.
    pub gap_ms: u64,
}

impl WarmRestart {
    /// Whether ATD and ATC are driven again at the first step at `now_ms` (time since start):
    /// the record was safe and is younger than [`WARM_RESTART_MAX_AGE_MS`].
    pub fn restores(&self, now_ms: u64) -> bool {
        self.retained.safe && self.gap_ms.saturating_add(now_ms) < WARM_RESTART_MAX_AGE_MS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Retained {
        Retained {
            atd: true,
            atc: false,
            prealarm: true,
            safe: true,
            saved_at_ms: 0x0102_0304_0506_0708,
        }
    }

    #[test]
    fn prot_1_retained_round_trips_and_pins_its_layout() {
        let bytes = sample().encode();
        assert_eq!(&bytes[..4], &[b'O', b'R', 1, 0b1101]);
        assert_eq!(&bytes[4..12], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(Retained::decode(&bytes), Ok(sample()));
        assert_eq!(
            Retained::decode(&Retained::default().encode()),
            Ok(Retained::default())
        );
    }

    #[test]
    fn prot_1_every_bit_flip_and_bad_length_is_refused() {
        let bytes = sample().encode();
        for i in 0..RETAINED_LEN * 8 {
            let mut bad = bytes;
            bad[i / 8] ^= 1 << (i % 8);
            assert!(Retained::decode(&bad).is_err(), "bit {i}");
        }
        assert_eq!(
            Retained::decode(&bytes[..15]),
            Err(RetainedError::Length { len: 15 })
        );
        assert_eq!(Retained::decode(&[0; 16]), Err(RetainedError::Magic));
        let mut v2 = bytes;
        v2[2] = 2;
        assert_eq!(
            Retained::decode(&v2),
            Err(RetainedError::Version { version: 2 })
        );
        for e in [
            RetainedError::Length { len: 3 },
            RetainedError::Magic,
            RetainedError::Version { version: 2 },
            RetainedError::Crc,
        ] {
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn prot_1_only_a_safe_recent_record_restores() {
        let warm = |safe: bool, gap_ms: u64| WarmRestart {
            retained: Retained { safe, ..sample() },
            gap_ms,
        };
        assert!(warm(true, 3000).restores(6999));
        assert!(!warm(true, 3000).restores(7000), "10 s old");
        assert!(!warm(false, 0).restores(0), "an alarm was active");
        assert!(!warm(true, u64::MAX).restores(1), "no overflow");
    }
}
