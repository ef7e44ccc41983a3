//! The two indicator LEDs (LED-1, LED-2): the core picks a pattern, the platform plays it.

/// What an LED shows. The platform plays the pattern with the timings of
/// [`LedPattern::on_ms`]/[`LedPattern::off_ms`] (or asks [`LedPattern::is_lit`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum LedPattern {
    /// Dark.
    #[default]
    Off = 0,
    /// Lit continuously.
    Solid = 1,
    /// Blinking.
    Blink = 2,
}
