//! The public HTTP API, wire-compatible with rqlite's.
//!
//! Owns: routing, parameter and body parsing, response encoding, and the choice of status codes.
//! Does not: execute SQL or decide leadership; it asks `store` (and later `cluster`).

pub mod body;
pub mod json;
pub mod params;
