//! Who this process is, as a lock holder: a nonce that is this acquisition's alone, and
//! an owner people can read in `status`.

use crate::domain::{MAX_NONCE_LEN, MAX_OWNER_LEN};

/// A nonce from host, pid and 64 random bits, so that no other process (nor a restart
/// of this one) ever presents it and renews this holding by accident.
pub fn fresh_nonce() -> String {
    let pid = std::process::id().to_string();
    let random = format!("{:016x}", fastrand::u64(..));
    let room = MAX_NONCE_LEN - pid.len() - random.len() - 2;
    let host: String = host().chars().take(room).collect();
    format!("{host}.{pid}.{random}")
}

/// `"<host> pid <pid>: <command>"`, cut to what the server accepts.
pub fn default_owner(command: &[String]) -> String {
    let mut owner = format!(
        "{} pid {}: {}",
        host(),
        std::process::id(),
        command.join(" ")
    );
    if owner.len() > MAX_OWNER_LEN {
        let mut end = MAX_OWNER_LEN - '…'.len_utf8();
        while !owner.is_char_boundary(end) {
            end -= 1;
        }
        owner.truncate(end);
        owner.push('…');
    }
    owner
}

/// This machine's name, as printable ASCII (`host` when it has none).
fn host() -> String {
    let name: String = nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_graphic)
        .collect();
    if name.is_empty() {
        "host".to_owned()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Nonce;

    #[test]
    fn nonces_are_valid_and_never_repeat() {
        let first = fresh_nonce();
        assert!(Nonce::parse(&first).is_ok(), "{first}");
        assert!(first.contains(&format!(".{}.", std::process::id())));
        assert_ne!(first, fresh_nonce());
    }

    #[test]
    fn long_commands_are_cut_to_an_owner_the_server_accepts() {
        let command = vec!["é".repeat(300)];
        let owner = default_owner(&command);
        assert!(owner.len() <= MAX_OWNER_LEN, "{}", owner.len());
        assert!(owner.ends_with('…'));
        assert!(default_owner(&["./backup.sh".to_owned()]).ends_with(": ./backup.sh"));
    }
}
