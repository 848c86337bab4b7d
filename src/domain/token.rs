//! `Token`: the unguessable secret issued with each acquisition. Clients of the
//! Gorilla-compatible API address their lock by it.

use std::fmt;

use super::InvalidInput;

/// The longest token accepted in a request, in bytes.
const MAX_TOKEN_LEN: usize = 64;

/// A holder's secret token: 128 random bits from the operating system, as hex.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A new token no one can guess.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    /// Parses a token from a request or an item.
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        if raw.is_empty() || raw.len() > MAX_TOKEN_LEN || !raw.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(InvalidInput::new(format!(
                "token must be 1 to {MAX_TOKEN_LEN} printable characters: the token returned by acquire"
            )));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The token as stored and returned to its holder.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

// A token is a secret: keep it out of logs and panics.
impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_long_distinct_and_parse_back() {
        let (a, b) = (Token::generate(), Token::generate());
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 32);
        assert_eq!(Token::parse(a.as_str()).unwrap(), a);
    }

    #[test]
    fn malformed_tokens_are_refused_and_secrets_stay_out_of_debug() {
        assert!(Token::parse("").is_err());
        assert!(Token::parse(&"f".repeat(65)).is_err());
        assert!(Token::parse("has space").is_err());
        assert!(!format!("{:?}", Token::parse("s3cret").unwrap()).contains("s3cret"));
    }
}
