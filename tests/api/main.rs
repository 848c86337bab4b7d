//! API and command-line tests: real fencelock servers over HTTP against a real
//! DynamoDB Local, driven by HTTP requests and by the built `fencelock` binary.

mod acquire;
mod admin;
mod browser;
mod cli;
mod connections;
mod contention;
mod cursors;
mod elect;
mod elections;
mod errors;
mod fences;
mod fencing;
mod gorilla;
mod groups;
mod health;
mod helpers;
mod lease;
mod limits;
mod list;
mod logs;
mod metrics;
mod openapi;
mod ops;
mod page;
mod reclaim;
mod release;
mod run;
mod secrets;
mod security;
mod semaphores;
mod status;
mod takeover;
mod tls;
mod wait;
mod watch;
