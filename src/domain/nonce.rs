//! `Nonce`: the caller's idempotency key for an acquisition. It is a secret of the
//! holder: it is stored with the lock but never shown by status.

use std::fmt;

use super::InvalidInput;

/// The longest nonce accepted, in bytes.
pub const MAX_NONCE_LEN: usize = 64;

/// A holder's nonce: 1–64 bytes of printable ASCII without spaces.
#[derive(Clone, PartialEq, Eq)]
pub struct Nonce(String);

/// The stored form of [`Nonce::vacant`].
pub const VACANT: &str = " ";

impl Nonce {
    /// Parses a nonce, explaining what was expected when it is not one.
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        if raw.is_empty() || raw.len() > MAX_NONCE_LEN {
            return Err(InvalidInput::new(format!(
                "nonce must be 1 to {MAX_NONCE_LEN} characters long, got {}",
                raw.len()
            )));
        }
        if !raw.chars().all(|c| c.is_ascii_graphic()) {
            return Err(InvalidInput::new(
                "nonce must be printable ASCII without spaces (for example a UUID)",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The nonce of a record that never had a holder (a name disabled before its
    /// first acquire): a space, which [`Nonce::parse`] refuses, so that no request
    /// can name it.
    pub fn vacant() -> Self {
        Self(VACANT.to_owned())
    }

    /// A nonce no one can guess or repeat: 128 random bits, as hex.
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    /// The nonce as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

// A nonce is a secret: keep it out of logs and panics.
impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Nonce(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_uuids_and_short_tokens() {
        assert!(Nonce::parse("0b6f6bb4-5d6e-4a53-9d1d-6a4f3f0e2c11").is_ok());
        assert!(Nonce::parse("a").is_ok());
        assert!(Nonce::parse(&"x".repeat(MAX_NONCE_LEN)).is_ok());
    }

    #[test]
    fn rejects_empty_long_and_unprintable_nonces() {
        assert!(Nonce::parse("").is_err());
        assert!(Nonce::parse(&"x".repeat(MAX_NONCE_LEN + 1)).is_err());
        assert!(Nonce::parse("has space").is_err());
        assert!(Nonce::parse("tab\t").is_err());
        assert!(Nonce::parse("é").is_err());
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let nonce = Nonce::parse("secret-value").unwrap();
        assert!(!format!("{nonce:?}").contains("secret"));
    }
}
