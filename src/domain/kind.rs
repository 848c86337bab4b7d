//! What a name names: the kinds of resource fencelock keeps, as messages, metrics
//! and logs spell them.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A lock: one holder at a time, with a body.
    Lock,
    /// A semaphore: up to its limit of holders.
    Semaphore,
    /// A lock group: several locks taken together, all or none.
    Group,
    /// An election: a lock whose holder is the leader, its fence the term.
    Election,
    /// A record of fencelock's own, such as the server key.
    Record,
}

impl Kind {
    /// `lock`, `semaphore`, `group`, `election` or `record`: the word messages use, and the
    /// `kind` label of the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lock => "lock",
            Self::Semaphore => "semaphore",
            Self::Group => "group",
            Self::Election => "election",
            Self::Record => "record",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
