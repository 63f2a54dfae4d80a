//! The store level, as rqlite's `store/` tests: several [`sqlraft::store::Store`]s talking to
//! each other over the real internode transport on loopback, with no HTTP API, no `Node` and
//! no forwarding. Tests here call the store facade directly and look at Raft's own state, so a
//! failure points at the store and Raft rather than at the layers above them.

mod cluster;
mod harness;
