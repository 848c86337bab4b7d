//! `LockName`: the validated name of a lock, and the namespace it belongs to.

use std::fmt;

use super::InvalidInput;

/// The longest lock name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// The namespace of a name that has no `:`.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A lock name: 1–255 bytes of `[A-Za-z0-9._:-]`, and not `.` or `..` (which HTTP
/// clients rewrite as path steps, so such a lock could not be addressed reliably).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockName(String);

#[cfg(test)]
impl LockName {
    /// `raw`, which a test knows to be a lock name.
    pub(crate) fn of(raw: &str) -> Self {
        Self::parse(raw).expect("a valid lock name")
    }
}

impl LockName {
    /// Parses a lock name, explaining what was expected when it is not one.
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        if raw.is_empty() || raw.len() > MAX_NAME_LEN {
            return Err(InvalidInput::new(format!(
                "lock name must be 1 to {MAX_NAME_LEN} bytes long, got {} bytes",
                raw.len()
            )));
        }
        if let Some(bad) = raw.chars().find(|c| !is_name_char(*c)) {
            return Err(InvalidInput::new(format!(
                "lock name {raw:?} contains {bad:?}; expected only letters, digits, '.', '_', ':' and '-'"
            )));
        }
        if raw == "." || raw == ".." {
            return Err(InvalidInput::new(format!(
                "lock name {raw:?} is reserved; expected a name with at least one character other than '.'"
            )));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The name as it is stored and shown.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the first `:`, or [`DEFAULT_NAMESPACE`] for a name without one.
    pub fn namespace(&self) -> &str {
        match self.0.split_once(':') {
            Some((namespace, _)) => namespace,
            None => DEFAULT_NAMESPACE,
        }
    }
}

/// Whether `raw` can be a namespace: what a lock name may hold before its first `:`,
/// and not empty.
pub fn is_namespace(raw: &str) -> bool {
    !raw.contains(':') && LockName::parse(&format!("{raw}:x")).is_ok()
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')
}

impl fmt::Display for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_allowed_character() {
        let name = LockName::parse("Billing-2024_v1.0:nightly").unwrap();
        assert_eq!(name.as_str(), "Billing-2024_v1.0:nightly");
    }

    #[test]
    fn accepts_the_longest_name() {
        assert!(LockName::parse(&"a".repeat(MAX_NAME_LEN)).is_ok());
    }

    #[test]
    fn rejects_empty_and_too_long_names() {
        assert!(LockName::parse("").is_err());
        let err = LockName::parse(&"a".repeat(MAX_NAME_LEN + 1)).unwrap_err();
        assert!(err.0.contains("256 bytes"), "{err}");
    }

    #[test]
    fn rejects_characters_outside_the_set_and_names_them() {
        for raw in ["job 1", "job/1", "jöb", "job%201", "job\n"] {
            assert!(LockName::parse(raw).is_err(), "{raw:?} should be rejected");
        }
        let err = LockName::parse("job/1").unwrap_err();
        assert!(err.0.contains("'/'"), "{err}");
    }

    #[test]
    fn rejects_path_steps_but_not_other_dotted_names() {
        assert!(LockName::parse(".").is_err());
        assert!(LockName::parse("..").is_err());
        assert!(LockName::parse("...").is_ok());
        assert!(LockName::parse(".hidden").is_ok());
    }

    #[test]
    fn namespace_is_the_part_before_the_first_colon() {
        assert_eq!(
            LockName::parse("billing:nightly").unwrap().namespace(),
            "billing"
        );
        assert_eq!(LockName::parse("a:b:c").unwrap().namespace(), "a");
        assert_eq!(
            LockName::parse("nightly").unwrap().namespace(),
            DEFAULT_NAMESPACE
        );
        assert_eq!(LockName::parse(":x").unwrap().namespace(), "");
    }

    #[test]
    fn a_namespace_is_a_name_start_without_colon() {
        for good in ["billing", "default", "team-7.prod"] {
            assert!(is_namespace(good), "{good:?}");
        }
        for bad in ["a:b", "has space", "<script>", &"n".repeat(254)] {
            assert!(!is_namespace(bad), "{bad:?}");
        }
    }
}
