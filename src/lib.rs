//! sqlraft: a fault-tolerant, distributed SQLite, wire-compatible with rqlite's HTTP API.

pub mod command;
pub mod http;
pub mod store;
