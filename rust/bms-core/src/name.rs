//! The device name (BLE-1): what the BMS advertises and the GAP Device Name holds, so that two
//! BMSes in one marina can be told apart. Set by the owner over an authenticated link, kept
//! across restarts and factory resets (SET-4 restores the settings, not the name).
//!
//! In: a name written by the user (GATT, simulator). Out: the accepted name, or a
//! [`NameError`] saying what is wrong with it. Persisting it is the storage module's job.

use core::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::word::Number;

/// Longest device name, in UTF-8 bytes: its write request (version, length, text) fits one
/// 20-byte ATT payload of the default MTU, like every request. The firmware shortens a longer
/// name in the scan response to what fits beside the firmware-update service UUID; the GAP
/// Device Name holds it whole.
pub const MAX_NAME_LEN: usize = 18;

/// The factory name.
pub const DEFAULT_NAME: &str = "OpenBMS";

/// A device name: 1 to [`MAX_NAME_LEN`] bytes of UTF-8 text without control characters or
/// invisible format characters, neither starting nor ending with white space. On the wire and
/// in the store: a postcard string.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DeviceName {
    len: u8,
    bytes: [u8; MAX_NAME_LEN],
}

/// Why a name was refused. Nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameError {
    /// Empty, or longer than [`MAX_NAME_LEN`] bytes.
    Length {
        /// Bytes given.
        len: usize,
    },
    /// A control character (newline, tab, ...) at byte `at`.
    ControlCharacter {
        /// Byte offset of the character.
        at: usize,
    },
    /// Starts or ends with white space (an advertised name the owner could not see).
    OuterSpace,
    /// An invisible format character (zero-width, or a bidirectional control that shows the
    /// rest of the name in another order) at byte `at`: two names that look alike in a
    /// phone's device list could not be told apart.
    InvisibleCharacter {
        /// Byte offset of the character.
        at: usize,
    },
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Length { len } => write!(
                f,
                "device name of {} bytes: it must have 1 to {} bytes",
                Number::from(*len),
                Number::from(MAX_NAME_LEN)
            ),
            NameError::ControlCharacter { at } => write!(
                f,
                "device name has a control character at byte {}",
                Number::from(*at)
            ),
            NameError::OuterSpace => f.write_str("device name starts or ends with white space"),
            NameError::InvisibleCharacter { at } => write!(
                f,
                "device name has an invisible format character at byte {}",
                Number::from(*at)
            ),
        }
    }
}

impl DeviceName {
    /// The name `text`, if it is one (see [`DeviceName`]).
    pub fn new(text: &str) -> Result<DeviceName, NameError> {
        let len = text.len();
        if len == 0 || len > MAX_NAME_LEN {
            return Err(NameError::Length { len });
        }
        if let Some((at, _)) = text.char_indices().find(|(_, c)| c.is_control()) {
            return Err(NameError::ControlCharacter { at });
        }
        if let Some((at, _)) = text.char_indices().find(|(_, c)| is_invisible_format(*c)) {
            return Err(NameError::InvisibleCharacter { at });
        }
        if text.starts_with(char::is_whitespace) || text.ends_with(char::is_whitespace) {
            return Err(NameError::OuterSpace);
        }
        let mut bytes = [0; MAX_NAME_LEN];
        bytes
            .get_mut(..len)
            .ok_or(NameError::Length { len })?
            .copy_from_slice(text.as_bytes());
        Ok(DeviceName {
            len: len as u8,
            bytes,
        })
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        // Built only from a whole `&str` of `len` bytes: always valid UTF-8.
        self.bytes
            .get(..usize::from(self.len))
            .and_then(|b| core::str::from_utf8(b).ok())
            .unwrap_or(DEFAULT_NAME)
    }

    /// The name as UTF-8 bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.as_str().as_bytes()
    }
}

impl Default for DeviceName {
    /// [`DEFAULT_NAME`].
    fn default() -> Self {
        let mut bytes = [0; MAX_NAME_LEN];
        for (to, from) in bytes.iter_mut().zip(DEFAULT_NAME.as_bytes()) {
            *to = *from;
        }
        DeviceName {
            len: DEFAULT_NAME.len() as u8,
            bytes,
        }
    }
}

impl fmt::Debug for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for DeviceName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Any string, for the protocol to refuse with a reason rather than a decoding error: the
/// length limit is the request's ([`crate::protocol::MAX_REQUEST_LEN`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameText {
    len: u8,
    bytes: [u8; NameText::CAPACITY],
}

impl NameText {
    /// Longest text held: a whole request.
    pub const CAPACITY: usize = 32;

    /// The name it makes, or why it makes none.
    pub fn name(&self) -> Result<DeviceName, NameError> {
        let text = self
            .bytes
            .get(..usize::from(self.len))
            .and_then(|b| core::str::from_utf8(b).ok())
            .unwrap_or_default();
        DeviceName::new(text)
    }
}

struct TextVisitor<const N: usize>;

impl<'de, const N: usize> Visitor<'de> for TextVisitor<N> {
    type Value = (u8, [u8; N]);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a UTF-8 string")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        let mut bytes = [0; N];
        bytes
            .get_mut(..text.len())
            .ok_or_else(|| E::invalid_length(text.len(), &self))?
            .copy_from_slice(text.as_bytes());
        Ok((text.len() as u8, bytes))
    }
}

impl<'de> Deserialize<'de> for NameText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (len, bytes) = deserializer.deserialize_str(TextVisitor::<{ NameText::CAPACITY }>)?;
        Ok(NameText { len, bytes })
    }
}

impl Serialize for NameText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = self
            .bytes
            .get(..usize::from(self.len))
            .and_then(|b| core::str::from_utf8(b).ok())
            .unwrap_or_default();
        serializer.serialize_str(text)
    }
}

impl From<DeviceName> for NameText {
    fn from(name: DeviceName) -> NameText {
        let mut bytes = [0; NameText::CAPACITY];
        if let Some(to) = bytes.get_mut(..name.as_bytes().len()) {
            to.copy_from_slice(name.as_bytes());
        }
        NameText {
            len: name.len,
            bytes,
        }
    }
}

impl<'de> Deserialize<'de> for DeviceName {
    /// Only a valid name decodes (a stored record, a response).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = NameText::deserialize(deserializer)?;
        text.name()
            .map_err(|e| de::Error::custom(format_args!("{e}")))
    }
}

/// Unicode format characters a name must not hold: the soft hyphen, the Arabic letter mark,
/// the Mongolian vowel separator, zero-width space/joiners and the direction marks, the
/// bidirectional embeddings, overrides and isolates, the invisible operators, and the byte
/// order mark.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ble_1_device_name_accepts_text_and_refuses_what_cannot_be_advertised() {
        assert_eq!(DeviceName::default().as_str(), "OpenBMS");
        assert_eq!(
            DeviceName::new("Boot Élodie").unwrap().as_str(),
            "Boot Élodie"
        );
        assert_eq!(
            DeviceName::new("a".repeat(MAX_NAME_LEN).as_str())
                .unwrap()
                .as_bytes()
                .len(),
            MAX_NAME_LEN
        );
        assert_eq!(DeviceName::new(""), Err(NameError::Length { len: 0 }));
        assert_eq!(
            DeviceName::new("a".repeat(MAX_NAME_LEN + 1).as_str()),
            Err(NameError::Length { len: 19 })
        );
        assert_eq!(
            DeviceName::new("two\nlines"),
            Err(NameError::ControlCharacter { at: 3 })
        );
        assert_eq!(DeviceName::new(" Boat"), Err(NameError::OuterSpace));
        assert_eq!(DeviceName::new("Boat "), Err(NameError::OuterSpace));
        assert_eq!(DeviceName::new("Boat\u{a0}"), Err(NameError::OuterSpace));
        assert_eq!(DeviceName::new("\u{3000}Boat"), Err(NameError::OuterSpace));
        // Invisible or reordering characters: "Open\u{200b}BMS" looks like "OpenBMS", and
        // "\u{202e}SMBnepO" shows as "OpenBMS".
        assert_eq!(
            DeviceName::new("Open\u{200b}BMS"),
            Err(NameError::InvisibleCharacter { at: 4 })
        );
        assert_eq!(
            DeviceName::new("\u{202e}SMBnepO"),
            Err(NameError::InvisibleCharacter { at: 0 })
        );
        assert_eq!(
            DeviceName::new("\u{feff}"),
            Err(NameError::InvisibleCharacter { at: 0 })
        );
        assert_eq!(
            NameError::InvisibleCharacter { at: 4 }.to_string(),
            "device name has an invisible format character at byte 4"
        );
        assert_eq!(
            DeviceName::new("Båt «Ærø» 2").unwrap().as_str(),
            "Båt «Ærø» 2"
        );
        assert_eq!(
            NameError::Length { len: 19 }.to_string(),
            "device name of 19 bytes: it must have 1 to 18 bytes"
        );
    }

    #[test]
    fn ble_1_device_name_is_a_postcard_string() {
        let name = DeviceName::new("Boat 2").unwrap();
        let mut buf = [0u8; 32];
        let bytes = postcard::to_slice(&name, &mut buf).unwrap();
        assert_eq!(bytes, b"\x06Boat 2");
        assert_eq!(postcard::from_bytes::<DeviceName>(bytes), Ok(name));
        // Text that is no name decodes as NameText (so the protocol can say why), not as a name.
        let bytes = postcard::to_slice(&" x", &mut buf).unwrap();
        assert!(postcard::from_bytes::<DeviceName>(bytes).is_err());
        let text = postcard::from_bytes::<NameText>(bytes).unwrap();
        assert_eq!(text.name(), Err(NameError::OuterSpace));
    }
}
