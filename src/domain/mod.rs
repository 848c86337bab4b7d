//! The words of the lock domain, free of HTTP and DynamoDB: names, nonces, fences,
//! durations and the lock record itself. Everything here parses or decides; nothing
//! here performs I/O.

mod duration;
mod kind;
mod lease;
mod lock;
mod name;
mod nonce;
mod secret;
mod semaphore;
mod token;

pub use duration::{TtlBounds, format_duration, human_duration, parse_duration};
pub use kind::Kind;
pub use lease::LeasePolicy;
pub use lock::{
    Disabled, Fence, Holder, Lock, LockRejection, Marks, Millis, Predecessor, Reservation,
    check_holder, parse_fence,
};
pub use name::{DEFAULT_NAMESPACE, LockName, is_namespace};
pub use nonce::{MAX_NONCE_LEN, Nonce, VACANT};
pub use secret::{SERVER_KEY_LEN, ServerKey};
pub use semaphore::{
    AcquirePlan, MAX_LIMIT, MAX_SLOT_DETAILS, Semaphore, Slot, SlotRejection, check_limit,
    check_slot, parse_limit, plan_acquire,
};
pub use token::Token;

/// The longest owner a lock may carry, in bytes.
pub const MAX_OWNER_LEN: usize = 255;

/// A request value that failed to parse, with a sentence saying what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

impl InvalidInput {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}
