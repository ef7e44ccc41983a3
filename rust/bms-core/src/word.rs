//! Fixed words and integers in log lines and error messages, written without core's padding and
//! integer formatting code.

use core::fmt;

/// A fixed word in a log line (`log::info!("balancer {}", Word(state.name()))`).
///
/// `{}` of a plain `&str` goes through `Formatter::pad`, which supports width and precision and
/// costs flash (docs/ffi.md); no log line here pads, so this writes the text
/// as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Word(pub &'static str);

impl fmt::Display for Word {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// An integer in a log line or error message, in decimal
/// (`write!(f, "record truncated to {} bytes", Number::from(*len))`).
///
/// `{}` of an integer goes through core's per-type `Display` code and `Formatter::pad_integral`,
/// which support width, fill, sign and `#` and cost flash (docs/ffi.md); no
/// message here uses them, so this writes the plain digits (with a `-` when negative), the same
/// text as `{}`. Built with `Number::from` from any integer of up to 64 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Number {
    negative: bool,
    magnitude: u64,
}

macro_rules! number_from_unsigned {
    ($($t:ty),*) => {$(
        impl From<$t> for Number {
            fn from(value: $t) -> Self {
                Number { negative: false, magnitude: u64::from(value) }
            }
        }
    )*};
}

macro_rules! number_from_signed {
    ($($t:ty),*) => {$(
        impl From<$t> for Number {
            fn from(value: $t) -> Self {
                Number { negative: value < 0, magnitude: u64::from(value.unsigned_abs()) }
            }
        }
    )*};
}

number_from_unsigned!(u8, u16, u32, u64);
number_from_signed!(i8, i16, i32, i64);

impl From<usize> for Number {
    fn from(value: usize) -> Self {
        // Lossless: usize has at most 64 bits on every target Rust supports.
        Number::from(u64::try_from(value).unwrap_or(u64::MAX))
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The largest power of ten not above the magnitude (1 below 10); `scale * 10` stays at
        // most the magnitude, so it cannot overflow.
        let mut scale: u64 = 1;
        while scale <= self.magnitude / 10 {
            scale *= 10;
        }
        // "-" and the 20 digits of u64::MAX.
        let mut text = heapless::String::<21>::new();
        if self.negative {
            text.push('-').map_err(|_| fmt::Error)?;
        }
        let mut rest = self.magnitude;
        loop {
            // Below 10: `rest` is below `10 * scale`.
            let digit = (rest / scale) as u8;
            text.push(char::from(b'0' + digit))
                .map_err(|_| fmt::Error)?;
            rest %= scale;
            if scale == 1 {
                break;
            }
            scale /= 10;
        }
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_word_is_written_as_it_is() {
        assert_eq!(
            std::format!("[{}]", Word("free-floating")),
            "[free-floating]"
        );
    }

    #[test]
    fn a_number_is_written_as_core_writes_it() {
        let cases: [(Number, std::string::String); 14] = [
            (Number::from(0u8), 0u8.to_string()),
            (Number::from(7u8), 7u8.to_string()),
            (Number::from(10u16), 10u16.to_string()),
            (Number::from(999_999u32), 999_999u32.to_string()),
            (Number::from(1_000_000u32), 1_000_000u32.to_string()),
            (Number::from(u32::MAX), u32::MAX.to_string()),
            (Number::from(u64::MAX), u64::MAX.to_string()),
            (Number::from(usize::MAX), usize::MAX.to_string()),
            (Number::from(0i32), 0i32.to_string()),
            (Number::from(-1i32), (-1i32).to_string()),
            (Number::from(-22i32), (-22i32).to_string()),
            (Number::from(i32::MIN), i32::MIN.to_string()),
            (Number::from(i64::MIN), i64::MIN.to_string()),
            (Number::from(i64::MAX), i64::MAX.to_string()),
        ];
        for (number, core) in cases {
            assert_eq!(std::format!("[{number}]"), std::format!("[{core}]"));
        }
        assert_eq!(
            std::format!("{}", Number::from(i64::MIN)),
            "-9223372036854775808"
        );
        assert_eq!(std::format!("{}", Number::from(0i64)), "0");
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_number_is_written_as_core_writes_it(value: i64, unsigned: u64) {
            prop_assert_eq!(std::format!("{}", Number::from(value)), value.to_string());
            prop_assert_eq!(std::format!("{}", Number::from(unsigned)), unsigned.to_string());
        }
    }
}
