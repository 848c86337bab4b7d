//! `ServerKey`: the secret that every fencelock server on one table shares (the
//! store keeps it in the table). From it come two things no reader can make:
//!
//! - the nonce of a Gorilla holding, a keyed hash of who asks and for what, so that
//!   the `owner` every reader sees is not the holder's secret, while the same owner
//!   re-acquiring through the same credentials still finds its holding;
//! - sealed list cursors (XChaCha20-Poly1305), which no client can read (they name a
//!   record of the table, maybe one of a namespace it may not see) or forge.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{LockName, Nonce};

/// The length of a server key, in bytes.
pub const SERVER_KEY_LEN: usize = 32;

/// What a sealed value begins with: the key's version of the format.
const SEALED_VERSION: u8 = 1;
/// The length of an XChaCha20 nonce.
const SEAL_NONCE_LEN: usize = 24;

/// The table's shared secret: 256 random bits.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerKey([u8; SERVER_KEY_LEN]);

impl ServerKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> Self {
        Self(<[u8; SERVER_KEY_LEN]>::generate())
    }

    /// The key stored as these bytes; `None` unless there are exactly
    /// [`SERVER_KEY_LEN`].
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// The key as stored.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A key of its own for each `purpose`, so that no output of one use helps
    /// against another.
    fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256>>::new_from_slice(&self.0).expect("HMAC takes any key");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The nonce of the Gorilla holding of `name` by `owner`, acquired by `caller`
    /// (the digest of its bearer token; empty on a server without tokens): 64 hex
    /// digits that only the servers can compute.
    pub fn gorilla_nonce(&self, caller: &str, name: &LockName, owner: &str) -> Nonce {
        let mut mac = <Hmac<Sha256>>::new_from_slice(&self.derive("gorilla-nonce"))
            .expect("HMAC takes any key");
        // Each part with its length, so that no two triples hash alike.
        for part in [caller, name.as_str(), owner] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        let digest = hex::encode(mac.finalize().into_bytes());
        Nonce::parse(&digest).expect("64 hex digits are a nonce")
    }

    /// `plaintext` sealed for `context` (what it may be opened for), as URL-safe
    /// base64: readable and alterable by no one without the key.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> String {
        let cipher = XChaCha20Poly1305::new(&self.derive("seal").into());
        let nonce = XNonce::generate();
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .expect("a small plaintext seals");
        let mut bytes = Vec::with_capacity(1 + SEAL_NONCE_LEN + sealed.len());
        bytes.push(SEALED_VERSION);
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Whether `sealed` has the shape of a value [`ServerKey::seal`] makes (version,
    /// nonce and tag), so that a value that cannot be one is refused without the key.
    pub fn could_be_sealed(sealed: &str) -> bool {
        URL_SAFE_NO_PAD.decode(sealed).is_ok_and(|bytes| {
            bytes.first() == Some(&SEALED_VERSION) && bytes.len() >= 1 + SEAL_NONCE_LEN + 16
        })
    }

    /// What [`ServerKey::seal`] sealed for `context`; `None` for anything else: a
    /// value altered or made up, sealed for another context, or under another key.
    pub fn open(&self, context: &str, sealed: &str) -> Option<Vec<u8>> {
        let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        let (&version, rest) = bytes.split_first()?;
        if version != SEALED_VERSION || rest.len() < SEAL_NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = rest.split_at(SEAL_NONCE_LEN);
        let nonce = XNonce::try_from(nonce).ok()?;
        let cipher = XChaCha20Poly1305::new(&self.derive("seal").into());
        cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: sealed,
                    aad: context.as_bytes(),
                },
            )
            .ok()
    }
}

// The key is the secret of every server on the table: never print it.
impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(raw: &str) -> LockName {
        LockName::of(raw)
    }

    #[test]
    fn a_gorilla_nonce_depends_on_the_key_the_caller_the_lock_and_the_owner() {
        let key = ServerKey::generate();
        let nonce = key.gorilla_nonce("caller", &name("orders"), "worker-1");
        assert_eq!(nonce.as_str().len(), 64);
        assert_eq!(
            nonce,
            key.gorilla_nonce("caller", &name("orders"), "worker-1")
        );
        for other in [
            key.gorilla_nonce("other", &name("orders"), "worker-1"),
            key.gorilla_nonce("caller", &name("orderz"), "worker-1"),
            key.gorilla_nonce("caller", &name("orders"), "worker-2"),
            // The parts are length-prefixed: moving a boundary changes the hash.
            key.gorilla_nonce("caller", &name("order"), "sworker-1"),
            ServerKey::generate().gorilla_nonce("caller", &name("orders"), "worker-1"),
        ] {
            assert_ne!(nonce, other);
        }
        assert!(!nonce.as_str().contains("worker-1"));
    }

    #[test]
    fn sealed_values_open_only_whole_for_their_context_under_their_key() {
        let key = ServerKey::generate();
        let sealed = key.seal("locks", b"payroll:x1");
        assert_eq!(
            key.open("locks", &sealed).as_deref(),
            Some(&b"payroll:x1"[..])
        );
        // The name is nowhere in the cursor, in any encoding a client might try.
        let raw = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        assert!(!raw.windows(7).any(|w| w == b"payroll"));
        assert!(!sealed.contains(&URL_SAFE_NO_PAD.encode("payroll:x1")));
        // Two seals of one value differ (a random nonce each).
        assert_ne!(sealed, key.seal("locks", b"payroll:x1"));
        assert!(key.open("semaphores", &sealed).is_none());
        assert!(ServerKey::generate().open("locks", &sealed).is_none());
        let mut altered = raw.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(
            key.open("locks", &URL_SAFE_NO_PAD.encode(altered))
                .is_none()
        );
        for junk in ["", "!!", &URL_SAFE_NO_PAD.encode("payroll:x1")] {
            assert!(key.open("locks", junk).is_none(), "{junk:?}");
            assert!(!ServerKey::could_be_sealed(junk), "{junk:?}");
        }
        assert!(ServerKey::could_be_sealed(&sealed));
    }

    #[test]
    fn a_key_round_trips_through_its_bytes_and_stays_out_of_debug() {
        let key = ServerKey::generate();
        assert_eq!(ServerKey::from_bytes(key.as_bytes()), Some(key.clone()));
        assert!(ServerKey::from_bytes(&[0; 31]).is_none());
        assert_eq!(format!("{key:?}"), "ServerKey(..)");
    }
}
