//! DNS discovery, rqlite's `dns` and `dns-srv` modes: peers are whoever the DNS names.
//!
//! - [`Dns`]: every A and AAAA address of one name, each with one Raft port (the configured
//!   `port`, else this node's own): `{"name":"rqlite.cluster","port":4002}`.
//! - [`DnsSrv`]: every SRV record of `_<service>._tcp.<name>`, each target resolved to its
//!   A/AAAA addresses, with the record's port: `{"name":"rqlite.local","service":"rqlite-raft"}`.
//!
//! Owns: the two configs, turning answers into sorted, deduplicated `host:port` peers, the time
//! bound of one lookup, and the status of the last one. Does not: poll, filter out this node,
//! or decide anything from the answer; the caller does (see [`Lookup`]).
//!
//! Answers are cached for at most a second, so a node whose record was just added is seen on
//! the next round. A name that does not exist, or has no such records, is an empty answer, not
//! an error: in a starting cluster (a Kubernetes headless service, say) records appear as nodes
//! come up.

mod resolve;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{normalize, DiscoStatus, DiscoveryError, Lookup, Peer, StatusCell};
use resolve::{Family, HickoryResolver, Resolve, ResolveError};

const MODE_DNS: &str = "dns";
const MODE_SRV: &str = "dns-srv";

/// The default bound on one whole lookup (for `dns-srv`: the SRV query and every target's).
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// `-disco-config` of mode `dns`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// The name whose A and AAAA records list the nodes, e.g. `rqlite.cluster`.
    pub name: String,
    /// The Raft port of every node; this node's own Raft port when absent.
    #[serde(default)]
    pub port: Option<u16>,
    /// `ip:port` (or just `ip`, port 53) of the DNS server to ask instead of the system
    /// resolver. An addition of ours; rqlite always uses the system resolver.
    #[serde(default)]
    pub nameserver: Option<String>,
}

/// `-disco-config` of mode `dns-srv`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSrvConfig {
    /// The domain of the service, e.g. `rqlite.local`.
    pub name: String,
    /// The service, without the leading underscore, e.g. `rqlite-raft`; the records looked up
    /// are those of `_rqlite-raft._tcp.rqlite.local`.
    pub service: String,
    /// As [`DnsConfig::nameserver`].
    #[serde(default)]
    pub nameserver: Option<String>,
}

/// Mode `dns`: the A and AAAA records of one name.
#[derive(Debug)]
pub struct Dns {
    inner: Hosts<HickoryResolver>,
}

impl Dns {
    /// Checks `cfg` and prepares the resolver; queries nothing yet. `default_port` (this node's
    /// Raft port) is used when `cfg.port` is absent.
    ///
    /// Needs no runtime and does no I/O beyond reading `/etc/resolv.conf` (when no `nameserver`
    /// is given); [`Lookup::lookup`] must run on a tokio runtime.
    ///
    /// # Errors
    /// [`DiscoveryError::Config`] for an invalid name, port or nameserver;
    /// [`DiscoveryError::Unavailable`] when, without `nameserver`, the system DNS configuration
    /// cannot be read.
    pub fn new(cfg: DnsConfig, default_port: u16) -> Result<Dns, DiscoveryError> {
        let name = check_name(MODE_DNS, &cfg.name)?;
        let port = cfg.port.unwrap_or(default_port);
        if port == 0 {
            return Err(DiscoveryError::Config(format!(
                "{MODE_DNS}: port must be 1-65535 (give \"port\" in -disco-config, or a Raft port)"
            )));
        }
        let resolver = resolver(MODE_DNS, cfg.nameserver.as_deref())?;
        Ok(Dns {
            inner: Hosts::new(resolver, name, port),
        })
    }

    /// Replaces the bound on one lookup ([`LOOKUP_TIMEOUT`] by default).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.inner.timeout = timeout;
        self
    }
}

impl Lookup for Dns {
    async fn lookup(&self) -> Result<Vec<Peer>, DiscoveryError> {
        self.inner.lookup().await
    }

    fn status(&self) -> DiscoStatus {
        self.inner.status.get()
    }
}

/// Mode `dns-srv`: the SRV records of `_<service>._tcp.<name>`.
///
/// Each SRV target is resolved to its A and AAAA addresses, as rqlite does, and each address
/// becomes `ip:port` with the record's port. A target with no address records is kept as
/// `target:port` (its name, without the trailing dot) rather than dropped: SRV records are
/// often published before (or by a different system than) the targets' A records, and a name
/// the caller cannot reach yet costs one failed connection attempt, while a dropped one would
/// make a present node invisible. A target of `.` ("no service here", RFC 2782) is skipped.
#[derive(Debug)]
pub struct DnsSrv {
    inner: Srv<HickoryResolver>,
}

impl DnsSrv {
    /// Checks `cfg` and prepares the resolver; queries nothing yet.
    ///
    /// # Errors
    /// As [`Dns::new`]; also [`DiscoveryError::Config`] for a service that is not a bare name.
    pub fn new(cfg: DnsSrvConfig) -> Result<DnsSrv, DiscoveryError> {
        let name = check_name(MODE_SRV, &cfg.name)?;
        let service = cfg.service.trim();
        if service.is_empty() || service.starts_with('_') || service.contains('.') {
            return Err(DiscoveryError::Config(format!(
                "{MODE_SRV}: service {:?} must be a bare service name such as \"rqlite-raft\" \
                 (no leading underscore, no dots)",
                cfg.service
            )));
        }
        let resolver = resolver(MODE_SRV, cfg.nameserver.as_deref())?;
        Ok(DnsSrv {
            inner: Srv::new(resolver, format!("_{service}._tcp.{name}")),
        })
    }

    /// Replaces the bound on one lookup ([`LOOKUP_TIMEOUT`] by default).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.inner.timeout = timeout;
        self
    }
}

impl Lookup for DnsSrv {
    async fn lookup(&self) -> Result<Vec<Peer>, DiscoveryError> {
        self.inner.lookup().await
    }

    fn status(&self) -> DiscoStatus {
        self.inner.status.get()
    }
}

fn check_name(mode: &str, name: &str) -> Result<String, DiscoveryError> {
    let name = name.trim();
    // A `host:port` here is the likeliest slip (the port belongs in "port"); spaces and empty
    // labels cannot be in a DNS name at all.
    let bad = name.is_empty()
        || name.contains(|c: char| c.is_whitespace() || c == ':' || c == '/')
        || name.trim_end_matches('.').split('.').any(str::is_empty);
    if bad {
        return Err(DiscoveryError::Config(format!(
            "{mode}: name {name:?} is not a DNS name such as \"rqlite.cluster\""
        )));
    }
    Ok(name.to_string())
}

fn resolver(
    mode: &'static str,
    nameserver: Option<&str>,
) -> Result<HickoryResolver, DiscoveryError> {
    let addr = match nameserver.map(str::trim) {
        None => None,
        Some(s) => Some(parse_nameserver(s).ok_or_else(|| {
            DiscoveryError::Config(format!(
                "{mode}: nameserver {s:?} must be an IP address with an optional port, \
                 e.g. \"10.0.0.2:53\", \"10.0.0.2\" or \"[fd00::2]:53\""
            ))
        })?),
    };
    HickoryResolver::new(addr).map_err(|msg| DiscoveryError::Unavailable { mode, msg })
}

/// `ip:port`, `[ipv6]:port` or a bare IP (port 53). Not a host name: resolving the resolver
/// would need a resolver.
fn parse_nameserver(s: &str) -> Option<SocketAddr> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return (addr.port() != 0).then_some(addr);
    }
    s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53))
}

/// The A and AAAA addresses of `name`, both asked at once. An IP literal is its own answer.
///
/// When one family fails and the other has addresses, those addresses are the answer (as with
/// Go's resolver, which rqlite uses): a server that mishandles AAAA must not stop discovery.
/// When the other family has none, the failure is reported: "nobody found" would be a guess.
async fn addresses<R: Resolve>(resolver: &R, name: &str) -> Result<Vec<IpAddr>, ResolveError> {
    if let Ok(ip) = name.trim_end_matches('.').parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let (v4, v6) = tokio::join!(
        resolver.ips(name, Family::V4),
        resolver.ips(name, Family::V6)
    );
    match (v4, v6) {
        (Ok(mut a), Ok(b)) => {
            a.extend(b);
            Ok(a)
        }
        (Ok(a), Err(e)) | (Err(e), Ok(a)) if a.is_empty() => Err(e),
        (Ok(a), Err(_)) | (Err(_), Ok(a)) => Ok(a),
        (Err(e), Err(_)) => Err(e),
    }
}

/// `ip:port`, with IPv6 in brackets.
fn peer(ip: IpAddr, port: u16) -> Peer {
    Peer {
        raft_addr: SocketAddr::new(ip, port).to_string(),
    }
}

/// Applies the time bound and records the outcome, for both modes.
async fn bounded(
    mode: &'static str,
    what: &str,
    server: &str,
    timeout: Duration,
    status: &StatusCell,
    work: impl std::future::Future<Output = Result<Vec<Peer>, DiscoveryError>>,
) -> Result<Vec<Peer>, DiscoveryError> {
    let result = match tokio::time::timeout(timeout, work).await {
        Ok(r) => r.map(normalize),
        Err(_) => Err(DiscoveryError::Unavailable {
            mode,
            msg: format!(
                "no complete answer for {what} from {server} within {timeout:?}; check that the \
                 DNS server is running and reachable from this node"
            ),
        }),
    };
    let addrs = result
        .as_ref()
        .ok()
        .map(|peers| peers.iter().map(|p| p.raft_addr.clone()).collect());
    status.record(&result, addrs);
    result
}

fn failed(mode: &'static str, what: &str, server: &str, e: ResolveError) -> DiscoveryError {
    DiscoveryError::Unavailable {
        mode,
        msg: format!("cannot look up {what} via {server}: {}", e.0),
    }
}

/// The `dns` lookup, generic over the network for tests.
#[derive(Debug)]
struct Hosts<R> {
    resolver: R,
    name: String,
    port: u16,
    timeout: Duration,
    status: StatusCell,
}

impl<R: Resolve> Hosts<R> {
    fn new(resolver: R, name: String, port: u16) -> Self {
        let status = StatusCell::new(MODE_DNS, name.clone());
        Self {
            resolver,
            name,
            port,
            timeout: LOOKUP_TIMEOUT,
            status,
        }
    }

    async fn lookup(&self) -> Result<Vec<Peer>, DiscoveryError> {
        let what = format!("A/AAAA records of {:?}", self.name);
        let server = self.resolver.server();
        let work = async {
            let ips = addresses(&self.resolver, &self.name)
                .await
                .map_err(|e| failed(MODE_DNS, &what, server, e))?;
            Ok(ips.into_iter().map(|ip| peer(ip, self.port)).collect())
        };
        bounded(MODE_DNS, &what, server, self.timeout, &self.status, work).await
    }
}

/// The `dns-srv` lookup, generic over the network for tests.
#[derive(Debug)]
struct Srv<R> {
    resolver: R,
    /// `_<service>._tcp.<name>`.
    name: String,
    timeout: Duration,
    status: StatusCell,
}

impl<R: Resolve> Srv<R> {
    fn new(resolver: R, name: String) -> Self {
        let status = StatusCell::new(MODE_SRV, name.clone());
        Self {
            resolver,
            name,
            timeout: LOOKUP_TIMEOUT,
            status,
        }
    }

    async fn lookup(&self) -> Result<Vec<Peer>, DiscoveryError> {
        let what = format!("SRV records of {:?} and their targets", self.name);
        let server = self.resolver.server();
        bounded(
            MODE_SRV,
            &what,
            server,
            self.timeout,
            &self.status,
            self.peers(),
        )
        .await
    }

    async fn peers(&self) -> Result<Vec<Peer>, DiscoveryError> {
        let server = self.resolver.server();
        let records = self.resolver.srv(&self.name).await.map_err(|e| {
            failed(
                MODE_SRV,
                &format!("SRV records of {:?}", self.name),
                server,
                e,
            )
        })?;
        let records: Vec<_> = records
            .into_iter()
            .filter(|r| !r.target.trim_end_matches('.').is_empty())
            .collect();
        // Each target once, all at the same time: several records may share a target (one host,
        // several ports), and one slow answer must not eat the whole time bound alone.
        let targets: Vec<&str> = records
            .iter()
            .map(|r| r.target.as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let answers =
            futures_util::future::join_all(targets.iter().map(|t| addresses(&self.resolver, t)))
                .await;
        let mut peers = Vec::new();
        for (target, answer) in targets.iter().zip(answers) {
            let ips = answer.map_err(|e| {
                let what = format!(
                    "A/AAAA records of SRV target {target:?} (of {:?})",
                    self.name
                );
                failed(MODE_SRV, &what, server, e)
            })?;
            for r in records.iter().filter(|r| r.target == *target) {
                if ips.is_empty() {
                    peers.push(Peer {
                        raft_addr: format!("{}:{}", target.trim_end_matches('.'), r.port),
                    });
                } else {
                    peers.extend(ips.iter().map(|ip| peer(*ip, r.port)));
                }
            }
        }
        Ok(peers)
    }
}

#[cfg(test)]
mod tests;
