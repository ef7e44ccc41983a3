//! Fixed words in log lines, written without core's padding code.

use core::fmt;

/// A fixed word in a log line (`log::info!("balancer {}", Word(state.name()))`).
///
/// `{}` of a plain `&str` goes through `Formatter::pad`, which supports width and precision and
/// costs about 0.7 KB of the firmware's flash; no log line here pads, so this writes the text
/// as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Word(pub &'static str);

impl fmt::Display for Word {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
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
}
