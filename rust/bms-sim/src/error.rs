//! The one error the command line shows for bad input: which file, which line, which field, what
//! is wrong. Printed on one line, exit code 2.

use std::fmt;
use std::path::{Path, PathBuf};

/// Bad input in a scenario, settings or CSV file (or a file that cannot be read or written).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line number, when known.
    pub line: Option<usize>,
    /// The offending field or column, when known.
    pub field: Option<String>,
    /// What is wrong, lowercase, without trailing period.
    pub message: String,
}

impl InputError {
    /// A problem with the file as a whole (missing, unreadable).
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        InputError {
            file: file.to_path_buf(),
            line: None,
            field: None,
            message: message.into(),
        }
    }

    /// A problem at `line` (1-based) with `field`.
    pub fn at(file: &Path, line: usize, field: &str, message: impl Into<String>) -> Self {
        InputError {
            file: file.to_path_buf(),
            line: Some(line),
            field: Some(field.to_string()),
            message: message.into(),
        }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        if let Some(field) = &self.field {
            write!(f, " field `{field}`")?;
        }
        write!(f, ": {}", self.message.replace('\n', " "))
    }
}

impl std::error::Error for InputError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_file_line_and_field_on_one_line() {
        let e = InputError::at(Path::new("in.csv"), 3, "t_s", "not a number: \"x\"\nmore");
        assert_eq!(
            e.to_string(),
            "in.csv line 3 field `t_s`: not a number: \"x\" more"
        );
        let e = InputError::file(Path::new("gone.toml"), "cannot read: no such file");
        assert_eq!(e.to_string(), "gone.toml: cannot read: no such file");
    }
}
