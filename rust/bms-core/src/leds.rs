//! (leds: work in progress)
