//! Who may do what: bearer tokens, known to the server only by their SHA-256, each
//! allowed a set of namespaces and, or not, the listing of locks and the operators'
//! break-glass actions on those namespaces. The token file is
//! TOML, read at start-up and again on SIGHUP (a file that does not read keeps the
//! tokens in force).

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::{LockName, is_namespace};

/// The namespace list that allows every namespace.
pub const ALL_NAMESPACES: &str = "*";

/// The SHA-256 of a token.
pub type TokenDigest = [u8; 32];

/// The SHA-256 of `token`, as the token file lists it.
pub fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// The SHA-256 of `token` in hex, as the token file's `sha256` takes it.
pub fn digest_hex(token: &str) -> String {
    hex::encode(digest(token))
}

/// What one token may do.
#[derive(Clone, PartialEq, Eq)]
pub struct Grant {
    digest: TokenDigest,
    namespaces: Namespaces,
    /// Whether `GET /locks` is allowed (showing only the grant's namespaces).
    pub list: bool,
    /// Whether the operators' break-glass actions (`/admin/…`) are allowed on the
    /// grant's namespaces.
    pub admin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Namespaces {
    All,
    Only(BTreeSet<String>),
}

impl Grant {
    /// Whether this token may act on `name`.
    pub fn allows(&self, name: &LockName) -> bool {
        self.allows_namespace(name.namespace())
    }

    /// Whether this token may act on names in `namespace`.
    pub fn allows_namespace(&self, namespace: &str) -> bool {
        match &self.namespaces {
            Namespaces::All => true,
            Namespaces::Only(allowed) => allowed.contains(namespace),
        }
    }

    /// The token's digest: a key for per-token limits that is no secret.
    pub fn digest(&self) -> &TokenDigest {
        &self.digest
    }

    /// The first 8 hex digits of the digest, to name the token in logs.
    pub fn label(&self) -> String {
        hex::encode(&self.digest[..4])
    }
}

// The digest stands for the token: print only its label.
impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grant")
            .field("token", &self.label())
            .field("namespaces", &self.namespaces)
            .field("list", &self.list)
            .field("admin", &self.admin)
            .finish()
    }
}

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("token file {path}: {problem}")]
pub struct AuthFileError {
    path: String,
    problem: String,
}

/// The token file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    sha256: String,
    namespaces: Vec<String>,
    #[serde(default)]
    list: bool,
    #[serde(default)]
    admin: bool,
}

/// Parses the text of a token file into grants, explaining the first problem found.
pub fn parse_grants(text: &str) -> Result<Vec<Grant>, String> {
    let file: TokenFile = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut grants: Vec<Grant> = Vec::with_capacity(file.tokens.len());
    for (index, entry) in file.tokens.into_iter().enumerate() {
        let at = format!("tokens[{index}]");
        let mut digest = TokenDigest::default();
        hex::decode_to_slice(entry.sha256.trim(), &mut digest).map_err(|_| {
            format!(
                "{at}.sha256 must be the 64 hex digits of the token's SHA-256 (e.g. from `printf %s \"$TOKEN\" | sha256sum`)"
            )
        })?;
        if grants.iter().any(|grant| grant.digest == digest) {
            return Err(format!("{at}.sha256 is listed twice"));
        }
        let namespaces = if entry.namespaces.iter().any(|ns| ns == ALL_NAMESPACES) {
            Namespaces::All
        } else if entry.namespaces.is_empty() {
            return Err(format!(
                "{at}.namespaces is empty; list the namespaces the token may use, or \"*\""
            ));
        } else {
            for namespace in &entry.namespaces {
                if !is_namespace(namespace) {
                    return Err(format!(
                        "{at}.namespaces: {namespace:?} is not a namespace; expected letters, digits, '.', '_' and '-', or \"*\""
                    ));
                }
            }
            Namespaces::Only(entry.namespaces.into_iter().collect())
        };
        grants.push(Grant {
            digest,
            namespaces,
            list: entry.list,
            admin: entry.admin,
        });
    }
    Ok(grants)
}

/// The tokens in force, and the file they come from.
#[derive(Debug)]
pub struct Auth {
    path: PathBuf,
    grants: RwLock<Arc<Vec<Arc<Grant>>>>,
}

impl Auth {
    /// Reads the token file at `path`.
    pub fn load(path: &Path) -> Result<Self, AuthFileError> {
        let grants = read_grants(path)?;
        Ok(Self {
            path: path.to_owned(),
            grants: RwLock::new(Arc::new(grants)),
        })
    }

    /// Reads the token file again; on failure the tokens in force stay. Answers how
    /// many tokens are in force now.
    pub fn reload(&self) -> Result<usize, AuthFileError> {
        let grants = read_grants(&self.path)?;
        let count = grants.len();
        *self.grants.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(grants);
        Ok(count)
    }

    /// How many tokens are in force.
    pub fn len(&self) -> usize {
        self.current().len()
    }

    /// Whether no token is in force (every request is then refused).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file the tokens come from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The grant of `token`, if it is one in force. Compares the token's digest with
    /// every listed digest in constant time.
    pub fn authenticate(&self, token: &str) -> Option<Arc<Grant>> {
        let presented = digest(token);
        let mut found = None;
        for grant in self.current().iter() {
            if bool::from(grant.digest.ct_eq(&presented)) {
                found = Some(grant.clone());
            }
        }
        found
    }

    fn current(&self) -> Arc<Vec<Arc<Grant>>> {
        self.grants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn read_grants(path: &Path) -> Result<Vec<Arc<Grant>>, AuthFileError> {
    let failed = |problem: String| AuthFileError {
        path: path.display().to_string(),
        problem,
    };
    let text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
    let grants = parse_grants(&text).map_err(failed)?;
    Ok(grants.into_iter().map(Arc::new).collect())
}

/// Whether `presented` is `expected`, compared in constant time.
pub fn same_secret(presented: &str, expected: &str) -> bool {
    bool::from(digest(presented).ct_eq(&digest(expected)))
}

/// Writes a token file of one token, `secret`, that may use `namespaces` (a TOML
/// array's items, such as `"billing"`), with `more` TOML lines of it: for tests.
#[cfg(test)]
pub(crate) fn write_token_file(dir: &Path, secret: &str, namespaces: &str, more: &str) -> PathBuf {
    let path = dir.join("tokens.toml");
    let text = format!(
        "[[tokens]]\nsha256 = \"{}\"\nnamespaces = [{namespaces}]\n{more}",
        hex::encode(digest(secret))
    );
    std::fs::write(&path, text).expect("the token file is written");
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(raw: &str) -> LockName {
        LockName::of(raw)
    }

    #[test]
    fn a_grant_allows_its_namespaces_only() {
        let text = format!(
            "[[tokens]]\nsha256 = \"{}\"\nnamespaces = [\"billing\", \"default\"]\nlist = false\n\
             [[tokens]]\nsha256 = \"{}\"\nnamespaces = [\"*\"]\nlist = true\nadmin = true\n",
            hex::encode(digest("billing-secret")),
            hex::encode(digest("admin-secret")),
        );
        let grants = parse_grants(&text).unwrap();
        let billing = &grants[0];
        assert!(billing.allows(&name("billing:invoices")));
        assert!(
            billing.allows(&name("nightly")),
            "names without ':' are in default"
        );
        assert!(!billing.allows(&name("payroll:run")));
        assert!(!billing.list && !billing.admin);
        assert!(grants[1].allows(&name("payroll:run")) && grants[1].list && grants[1].admin);
    }

    #[test]
    fn bad_files_are_explained() {
        let cases = [
            (
                "[[tokens]]\nsha256 = \"abc\"\nnamespaces = [\"a\"]",
                "64 hex digits",
            ),
            (
                "[[tokens]]\nsha256 = \"00\"\nnamespace = [\"a\"]",
                "unknown field",
            ),
            (
                &format!(
                    "[[tokens]]\nsha256 = \"{}\"\nnamespaces = []",
                    hex::encode(digest("t"))
                ),
                "is empty",
            ),
            (
                &format!(
                    "[[tokens]]\nsha256 = \"{}\"\nnamespaces = [\"a:b\"]",
                    hex::encode(digest("t"))
                ),
                "is not a namespace",
            ),
            (
                &format!(
                    "[[tokens]]\nsha256 = \"{0}\"\nnamespaces = [\"a\"]\n[[tokens]]\nsha256 = \"{0}\"\nnamespaces = [\"b\"]",
                    hex::encode(digest("t"))
                ),
                "listed twice",
            ),
        ];
        for (text, expected) in cases {
            let err = parse_grants(text).unwrap_err();
            assert!(err.contains(expected), "{err:?} should say {expected:?}");
        }
    }

    #[test]
    fn only_a_listed_token_authenticates() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_token_file(dir.path(), "s3cret", "\"*\"", "");
        let auth = Auth::load(&path).unwrap();
        assert!(auth.authenticate("s3cret").is_some());
        assert!(auth.authenticate("s3cre").is_none());
        assert!(auth.authenticate("").is_none());

        // A file that does not read keeps the tokens in force.
        std::fs::write(&path, "not toml [").unwrap();
        assert!(auth.reload().is_err());
        assert!(auth.authenticate("s3cret").is_some());
        std::fs::write(&path, "").unwrap();
        assert_eq!(auth.reload().unwrap(), 0);
        assert!(auth.authenticate("s3cret").is_none());
    }
}
