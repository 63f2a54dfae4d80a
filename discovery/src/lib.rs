//! Peer discovery for sqlraft.
//!
//! Owns: finding the Raft addresses of the other members of a cluster.
//! Does not: join, bootstrap or talk Raft; the root crate does that with what is found here.

use std::fmt;

/// A node found by discovery: the Raft address other members reach it at.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Peer {
    /// `host:port` of the peer's Raft (internode) listener.
    pub raft_addr: String,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raft_addr)
    }
}

/// Why a discovery lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The backend could not be reached or answered with an error.
    #[error("discovery backend unavailable: {0}")]
    Unavailable(String),
    /// The configuration of the backend is invalid.
    #[error("invalid discovery config: {0}")]
    Config(String),
}

/// A source of peer addresses.
///
/// # Invariants
/// - `lookup` returns each address at most once, in a stable order.
/// - An empty answer is not an error: it means "nobody found yet".
pub trait Discovery: Send + Sync {
    /// The peers known right now.
    fn lookup(&self) -> Result<Vec<Peer>, DiscoveryError>;
}

/// A fixed list of peers, as given by `-join`.
#[derive(Debug, Clone, Default)]
pub struct StaticList {
    peers: Vec<Peer>,
}

impl StaticList {
    /// Builds a list from `host:port` strings, dropping blanks and duplicates.
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(addrs: I) -> Self {
        let mut peers: Vec<Peer> = Vec::new();
        for a in addrs {
            let a = a.as_ref().trim();
            if a.is_empty() || peers.iter().any(|p| p.raft_addr == a) {
                continue;
            }
            peers.push(Peer {
                raft_addr: a.to_string(),
            });
        }
        Self { peers }
    }
}

impl Discovery for StaticList {
    fn lookup(&self) -> Result<Vec<Peer>, DiscoveryError> {
        Ok(self.peers.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_list_drops_blanks_and_duplicates() {
        let l = StaticList::new(["a:1", " ", "b:2", "a:1"]);
        let got: Vec<String> = l
            .lookup()
            .unwrap()
            .into_iter()
            .map(|p| p.raft_addr)
            .collect();
        assert_eq!(got, vec!["a:1", "b:2"]);
    }
}
