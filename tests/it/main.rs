//! The integration test binary: real nodes on loopback, one module per behaviour.

mod harness;

mod api;
mod auth;
mod binary;
mod cluster;
mod console;
mod discovery;
mod failures;
mod golden;
mod limits;
mod operations;
mod shell;
mod snapshots;
mod status;
mod tls;
mod transactions;
