//! API tests: real fencelock servers over HTTP against a real DynamoDB Local.

mod acquire;
mod contention;
mod errors;
mod gorilla;
mod helpers;
mod lease;
mod list;
mod openapi;
mod release;
mod status;
mod takeover;
mod wait;
