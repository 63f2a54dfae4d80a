//! A fixed list of peers, as given by `-join`.

use crate::{normalize, DiscoStatus, DiscoveryError, Lookup, Peer, StatusCell};

#[derive(Debug)]
pub struct StaticList {
    peers: Vec<Peer>,
    status: StatusCell,
}

impl StaticList {
    /// Builds a list from `host:port` strings, dropping blanks and duplicates.
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(addrs: I) -> Self {
        let peers: Vec<Peer> = addrs
            .into_iter()
            .map(|a| a.as_ref().trim().to_string())
            .filter(|a| !a.is_empty())
            .map(|raft_addr| Peer { raft_addr })
            .collect();
        let peers = normalize(peers);
        let target = peers
            .iter()
            .map(|p| p.raft_addr.as_str())
            .collect::<Vec<_>>()
            .join(",");
        Self {
            peers,
            status: StatusCell::new("static", target),
        }
    }
}

impl Lookup for StaticList {
    async fn lookup(&self) -> Result<Vec<Peer>, DiscoveryError> {
        let r = Ok(self.peers.clone());
        self.status.record(
            &r,
            Some(self.peers.iter().map(|p| p.raft_addr.clone()).collect()),
        );
        r
    }

    fn status(&self) -> DiscoStatus {
        self.status.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drops_blanks_and_duplicates_and_sorts() {
        let l = StaticList::new(["b:2", " ", "a:1", "b:2"]);
        let got: Vec<String> = l
            .lookup()
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.raft_addr)
            .collect();
        assert_eq!(got, vec!["a:1", "b:2"]);
        assert_eq!(l.status().last_addresses, vec!["a:1", "b:2"]);
    }
}
