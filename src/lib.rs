//! fencelock: an HTTP lock service whose only state is one DynamoDB table, changed by
//! conditional writes. Each acquisition hands out a fence that only grows, so the
//! systems downstream can refuse a write from a holder whose lease ran out.
//!
//! Layers: [`api`] (HTTP) → [`store`] (DynamoDB) → [`domain`] (names, fences, leases).
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod cli;
pub mod client;
pub mod clock;
pub mod clock_check;
pub mod config;
pub mod domain;
mod follow;
pub mod listing;
pub mod metrics;
pub mod reclaim;
pub mod semaphore_watch;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod transport;
pub mod wait;
pub mod watch;
