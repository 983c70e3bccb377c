//! Call metadata (gRPC-style headers): ordered key/value entries, ASCII or binary, duplicates kept.
//!
//! Keys follow gRPC's rules so every transport can carry them unchanged: lower-case ASCII
//! letters, digits, `-`, `_` and `.`; keys ending in `-bin` hold binary values, every other key
//! holds printable ASCII (0x20..=0x7E). Keys starting with `grpc-` are reserved by gRPC and are
//! refused here so that no transport has to special-case them.

use bytes::Bytes;
use thiserror::Error;

/// Why a metadata entry was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MetadataError {
    /// The key is empty or has a character outside `[a-z0-9-_.]`.
    #[error("invalid metadata key {0:?}: keys are lower-case [a-z0-9-_.]")]
    InvalidKey(String),
    /// The key is reserved (`grpc-*`).
    #[error("metadata key {0:?} is reserved")]
    ReservedKey(String),
    /// An ASCII value has a byte outside printable ASCII.
    #[error("metadata value for {0:?} is not printable ASCII")]
    InvalidAsciiValue(String),
    /// A binary value was given for a key without the `-bin` suffix, or the reverse.
    #[error(
        "metadata key {0:?}: binary values need a key ending in -bin, ASCII values one without"
    )]
    KindMismatch(String),
}

/// One metadata value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataValue {
    /// A printable-ASCII value (key without `-bin`).
    Ascii(String),
    /// Arbitrary bytes (key ending in `-bin`).
    Binary(Bytes),
}

impl MetadataValue {
    /// The value's bytes, whatever its kind.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            MetadataValue::Ascii(s) => s.as_bytes(),
            MetadataValue::Binary(b) => b,
        }
    }
}

/// One key/value entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetadataEntry {
    key: String,
    value: MetadataValue,
}

impl MetadataEntry {
    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The value.
    pub fn value(&self) -> &MetadataValue {
        &self.value
    }
}

/// Ordered metadata; an empty `Metadata` does not allocate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    entries: Vec<MetadataEntry>,
}

/// True when `key` ends with `-bin` (a binary key).
pub fn is_binary_key(key: &str) -> bool {
    key.ends_with("-bin")
}

fn check_key(key: &str) -> Result<(), MetadataError> {
    let ok = !key.is_empty()
        && key
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.'));
    if !ok {
        return Err(MetadataError::InvalidKey(key.to_owned()));
    }
    if key.starts_with("grpc-") {
        return Err(MetadataError::ReservedKey(key.to_owned()));
    }
    Ok(())
}

/// Checks that `value` may be an ASCII metadata value.
pub fn is_valid_ascii_value(value: &str) -> bool {
    value.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

impl Metadata {
    /// Empty metadata.
    pub const fn new() -> Metadata {
        Metadata {
            entries: Vec::new(),
        }
    }

    /// Appends an ASCII entry (duplicates are kept, in order).
    pub fn append_ascii(
        &mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<(), MetadataError> {
        let key = key.into();
        let value = value.into();
        check_key(&key)?;
        if is_binary_key(&key) {
            return Err(MetadataError::KindMismatch(key));
        }
        if !is_valid_ascii_value(&value) {
            return Err(MetadataError::InvalidAsciiValue(key));
        }
        self.entries.push(MetadataEntry {
            key,
            value: MetadataValue::Ascii(value),
        });
        Ok(())
    }

    /// Appends a binary entry; the key must end in `-bin`.
    pub fn append_binary(
        &mut self,
        key: impl Into<String>,
        value: impl Into<Bytes>,
    ) -> Result<(), MetadataError> {
        let key = key.into();
        check_key(&key)?;
        if !is_binary_key(&key) {
            return Err(MetadataError::KindMismatch(key));
        }
        self.entries.push(MetadataEntry {
            key,
            value: MetadataValue::Binary(value.into()),
        });
        Ok(())
    }

    /// Appends an entry whose kind is decided by its key (`-bin` → binary). Used by decoders.
    pub fn append_raw(&mut self, key: &str, value: &[u8]) -> Result<(), MetadataError> {
        if is_binary_key(key) {
            self.append_binary(key, Bytes::copy_from_slice(value))
        } else {
            let value = std::str::from_utf8(value)
                .map_err(|_| MetadataError::InvalidAsciiValue(key.to_owned()))?;
            self.append_ascii(key, value)
        }
    }

    /// Appends an entry already validated (copied from other metadata).
    pub fn push(&mut self, entry: MetadataEntry) {
        self.entries.push(entry);
    }

    /// The first value for `key`.
    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.entries.iter().find(|e| e.key == key).map(|e| &e.value)
    }

    /// The first ASCII value for `key`.
    pub fn get_ascii(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(MetadataValue::Ascii(s)) => Some(s),
            _ => None,
        }
    }

    /// Every value for `key`, in order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a MetadataValue> + 'a {
        self.entries
            .iter()
            .filter(move |e| e.key == key)
            .map(|e| &e.value)
    }

    /// Removes every entry for `key`.
    pub fn remove(&mut self, key: &str) {
        self.entries.retain(|e| e.key != key);
    }

    /// All entries, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, MetadataEntry> {
        self.entries.iter()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of keys and values (a size estimate for limits).
    pub fn encoded_len(&self) -> usize {
        self.entries
            .iter()
            .map(|e| e.key.len() + e.value.as_bytes().len())
            .sum()
    }
}

impl<'a> IntoIterator for &'a Metadata {
    type Item = &'a MetadataEntry;
    type IntoIter = std::slice::Iter<'a, MetadataEntry>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_are_checked() {
        let mut md = Metadata::new();
        md.append_ascii("x-a", "1").unwrap();
        md.append_ascii("x-a", "2").unwrap();
        md.append_binary("x-b-bin", vec![0u8, 255]).unwrap();
        assert_eq!(md.get_all("x-a").count(), 2);
        assert_eq!(md.get_ascii("x-a"), Some("1"));
        assert!(matches!(
            md.append_ascii("X-Up", "v"),
            Err(MetadataError::InvalidKey(_))
        ));
        assert!(matches!(
            md.append_ascii("", "v"),
            Err(MetadataError::InvalidKey(_))
        ));
        assert!(matches!(
            md.append_ascii("grpc-x", "v"),
            Err(MetadataError::ReservedKey(_))
        ));
        assert!(matches!(
            md.append_ascii("x-bin", "v"),
            Err(MetadataError::KindMismatch(_))
        ));
        assert!(matches!(
            md.append_binary("x", vec![1u8]),
            Err(MetadataError::KindMismatch(_))
        ));
        assert!(matches!(
            md.append_ascii("x", "\n"),
            Err(MetadataError::InvalidAsciiValue(_))
        ));
        assert!(matches!(
            md.append_raw("x", &[0xff]),
            Err(MetadataError::InvalidAsciiValue(_))
        ));
        assert_eq!(md.len(), 3);
    }
}
