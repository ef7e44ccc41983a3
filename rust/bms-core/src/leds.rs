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
use crate::limits::{LED_BLINK_OFF_MS, LED_BLINK_ON_MS};

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
