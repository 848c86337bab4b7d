//! API tests: real fencelock servers over HTTP against a real DynamoDB Local.

mod acquire;
mod contention;
mod errors;
mod fences;
mod gorilla;
mod helpers;
mod lease;
mod limits;
mod list;
mod logs;
mod metrics;
mod openapi;
mod ops;
mod reclaim;
mod release;
mod status;
mod takeover;
mod wait;
