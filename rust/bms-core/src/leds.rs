//! The two indicator LEDs (LED-1, LED-2): the core picks a pattern from the app connection and
//! the active codes; the platform plays it (C holds no logic, only the timings below).
//!
//! ```text
//!              0    100                      1000 ms
//! Off          ____________________________________   dark
//! Solid        ████████████████████████████████████   lit
//! Blink        ████_______________________________    100 ms lit, 900 ms dark, repeat
//! ```
//!
//! - LED-1 blue: Blink while no app is connected, Solid while one is.
//! - LED-2 red: Solid while any error or alarm is active, Blink while only warnings are, Off
//!   otherwise.

use crate::codes::{ActiveCodes, Severity};
use crate::limits::{
    LED_BLINK_OFF_MS, LED_BLINK_ON_MS, PASSKEY_DIGIT_GAP_MS, PASSKEY_FLASH_OFF_MS,
    PASSKEY_FLASH_ON_MS, PASSKEY_REPEATS,
};

/// What an LED shows. The discriminant is the C ABI value. The platform plays the pattern with
/// [`LedPattern::on_ms`] / [`LedPattern::off_ms`], or asks [`LedPattern::is_lit`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum LedPattern {
    /// Dark.
    #[default]
    Off = 0,
    /// Lit continuously.
    Solid = 1,
    /// Blinking: lit [`LED_BLINK_ON_MS`], then dark [`LED_BLINK_OFF_MS`].
    Blink = 2,
}

impl LedPattern {
    /// How long the LED is lit per period, ms (0 = never).
    pub const fn on_ms(self) -> u32 {
        match self {
            LedPattern::Off => 0,
            LedPattern::Solid => u32::MAX,
            LedPattern::Blink => LED_BLINK_ON_MS,
        }
    }

    /// How long the LED is dark per period, ms (0 = never).
    pub const fn off_ms(self) -> u32 {
        match self {
            LedPattern::Off => u32::MAX,
            LedPattern::Solid => 0,
            LedPattern::Blink => LED_BLINK_OFF_MS,
        }
    }

    /// Whether the LED is lit at `now_ms` (blink phase counted from time 0).
    pub const fn is_lit(self, now_ms: u64) -> bool {
        match self {
            LedPattern::Off => false,
            LedPattern::Solid => true,
            LedPattern::Blink => {
                let period = LED_BLINK_ON_MS as u64 + LED_BLINK_OFF_MS as u64;
                now_ms % period < LED_BLINK_ON_MS as u64
            }
        }
    }
}

/// LED-1: the blue LED's pattern.
pub const fn blue(app_connected: bool) -> LedPattern {
    if app_connected {
        LedPattern::Solid
    } else {
        LedPattern::Blink
    }
}

/// LED-2: the red LED's pattern for the active codes.
pub fn red(codes: ActiveCodes) -> LedPattern {
    if codes.any(Severity::Error) || codes.any(Severity::Alarm) {
        LedPattern::Solid
    } else if codes.any(Severity::Warning) {
        LedPattern::Blink
    } else {
        LedPattern::Off
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::Code;

    /// LED-1: blue blinks while no app is connected, solid while connected.
    #[test]
    fn led_1_blue_blinks_until_app_connects() {
        assert_eq!(blue(false), LedPattern::Blink);
        assert_eq!(blue(true), LedPattern::Solid);
    }

    /// LED-2: red solid for any error or alarm, blinking for warnings only, off otherwise.
    #[test]
    fn led_2_red_follows_severity() {
        let mut codes = ActiveCodes::EMPTY;
        assert_eq!(red(codes), LedPattern::Off);
        codes.insert(Code::LowSocWarning);
        assert_eq!(red(codes), LedPattern::Blink);
        codes.insert(Code::CellOvervoltage);
        assert_eq!(red(codes), LedPattern::Solid);
        let mut error_only = ActiveCodes::EMPTY;
        error_only.insert(Code::SettingsCorrupt);
        assert_eq!(red(error_only), LedPattern::Solid);
    }

    #[test]
    fn patterns_play_as_drawn() {
        assert!(!LedPattern::Off.is_lit(0) && LedPattern::Solid.is_lit(12_345));
        assert!(LedPattern::Blink.is_lit(0) && LedPattern::Blink.is_lit(99));
        assert!(!LedPattern::Blink.is_lit(100) && !LedPattern::Blink.is_lit(999));
        assert!(LedPattern::Blink.is_lit(1000));
        assert_eq!(
            (LedPattern::Blink.on_ms(), LedPattern::Blink.off_ms()),
            (100, 900)
        );
        assert_eq!(LedPattern::Off.on_ms(), 0);
        assert_eq!(LedPattern::Solid.off_ms(), 0);
    }
}

/// BLE-2: the blue LED blinking the six passkey digits, most significant first: a digit d as d
/// flashes ([`PASSKEY_FLASH_ON_MS`] lit, [`PASSKEY_FLASH_OFF_MS`] dark), 0 as ten, with
/// [`PASSKEY_DIGIT_GAP_MS`] dark between digits, the whole [`PASSKEY_REPEATS`] times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasskeyBlink {
    /// The passkey shown (0–999999).
    pub passkey: u32,
    /// When the display started, ms.
    pub start_ms: u64,
}

impl PasskeyBlink {
    /// The flashes of each digit, most significant first.
    fn flashes(&self) -> [u64; 6] {
        let mut out = [0u64; 6];
        let mut rest = self.passkey;
        for slot in out.iter_mut().rev() {
            let digit = u64::from(rest % 10);
            *slot = if digit == 0 { 10 } else { digit };
            rest /= 10;
        }
        out
    }

    /// Whether the LED is lit at `now_ms`, or `None` once the display is over (the LED goes back
    /// to its LED-1 pattern), and when that next changes.
    pub fn at(&self, now_ms: u64) -> Option<(bool, u64)> {
        let mut t = self.start_ms;
        for _ in 0..PASSKEY_REPEATS {
            for flashes in self.flashes() {
                for _ in 0..flashes {
                    let lit_until = t.saturating_add(PASSKEY_FLASH_ON_MS);
                    if now_ms < lit_until {
                        return Some((now_ms >= t, if now_ms < t { t } else { lit_until }));
                    }
                    t = lit_until.saturating_add(PASSKEY_FLASH_OFF_MS);
                    if now_ms < t {
                        return Some((false, t));
                    }
                }
                t = t.saturating_add(PASSKEY_DIGIT_GAP_MS);
                if now_ms < t {
                    return Some((false, t));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod passkey_tests {
    use super::*;

    /// BLE-2: the blinked digits read back as the passkey (0 as ten flashes), and the display
    /// ends.
    #[test]
    fn ble_2_passkey_blinks_digit_by_digit() {
        let blink = PasskeyBlink {
            passkey: 305_019,
            start_ms: 1_000,
        };
        let mut digits = std::vec::Vec::new();
        let (mut now, mut lit, mut flashes, mut dark_since) = (1_000u64, false, 0u64, 1_000u64);
        while let Some((on, next)) = blink.at(now) {
            if on && !lit {
                if now - dark_since >= PASSKEY_DIGIT_GAP_MS && flashes > 0 {
                    digits.push(flashes % 10);
                    flashes = 0;
                }
                flashes += 1;
            }
            if !on && lit {
                dark_since = now;
            }
            lit = on;
            assert!(next > now);
            now = next;
        }
        digits.push(flashes % 10);
        assert_eq!(digits, [3, 0, 5, 0, 1, 9, 3, 0, 5, 0, 1, 9]);
    }

    /// BLE-2: asked in the middle of a flash or a pause (the control tick comes every 100 ms,
    /// a flash lasts 300 ms), the display names the end of that flash or pause as its next
    /// change, never a time already past (the core's next deadline would make the control loop
    /// spin until the flash ends). Before the display starts, the start is the next change.
    #[test]
    fn ble_2_passkey_blink_names_the_next_change_ahead() {
        let blink = PasskeyBlink {
            passkey: 100_000,
            start_ms: 1_000,
        };
        assert_eq!(blink.at(500), Some((false, 1_000)), "before the start");
        let flash_end = 1_000 + PASSKEY_FLASH_ON_MS;
        assert_eq!(blink.at(1_100), Some((true, flash_end)), "mid-flash");
        let dark_end = flash_end + PASSKEY_FLASH_OFF_MS;
        assert_eq!(blink.at(flash_end + 100), Some((false, dark_end)));
        let gap_end = dark_end + PASSKEY_DIGIT_GAP_MS;
        assert_eq!(blink.at(dark_end + 100), Some((false, gap_end)));
        assert_eq!(
            blink.at(gap_end + 100),
            Some((true, gap_end + PASSKEY_FLASH_ON_MS)),
            "mid-flash of the second digit"
        );
    }
}
