//! Test support (feature `test-support`, dev use only): real servers on 127.0.0.1 that the
//! backends' integration tests, and the root crate's node-level discovery tests, talk to.
//!
//! Owns: starting and stopping those servers on OS-assigned ports. Does not: anything a
//! production build needs; nothing outside tests should depend on this module.

// The DNS server (in-process, hickory-server) lives in testing/dns.rs.
mod dns;
pub use dns::{DnsServer, TestRecord};

// The etcd fixture (a real etcd process) lives in testing/etcd.rs.
mod etcd;
pub use etcd::{Etcd, EtcdServer};
