//! A real DNS server on 127.0.0.1 for tests.
//!
//! Owns: an in-process authoritative server (hickory-server, the root zone held in memory)
//! listening on UDP and TCP at one OS-assigned port, whose records a test can change while it
//! runs. Does not: forward, recurse, or serve anything but the records it is given; every
//! other name is NXDOMAIN. Records have TTL 0, so a resolver never caches them.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use sqlraft_discovery::testing::{DnsServer, TestRecord};
//! let dns = DnsServer::start([
//!     TestRecord::addr("rqlite.cluster", [127, 0, 0, 1]),
//!     TestRecord::srv("_rqlite-raft._tcp.rqlite.local", "node1.rqlite.local", 4002),
//! ])
//! .await?;
//! // {"name":"rqlite.cluster","nameserver":"127.0.0.1:<port>"}
//! let nameserver = dns.addr().to_string();
//! dns.add_record(TestRecord::addr("rqlite.cluster", [127, 0, 0, 4])).await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_server::proto::rr::rdata::{SOA, SRV};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordSet, RrKey};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

/// One record served by [`DnsServer`]. Names may be given with or without the trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestRecord {
    /// An A record (IPv4 `ip`) or AAAA record (IPv6 `ip`) of `name`.
    Addr { name: String, ip: IpAddr },
    /// An SRV record of `name` (e.g. `_rqlite-raft._tcp.rqlite.local`): the service listens at
    /// `target:port`. Priority and weight are 0.
    Srv {
        name: String,
        target: String,
        port: u16,
    },
}

impl TestRecord {
    /// `TestRecord::addr("rqlite.cluster", [127, 0, 0, 1])`.
    pub fn addr(name: impl Into<String>, ip: impl Into<IpAddr>) -> Self {
        Self::Addr {
            name: name.into(),
            ip: ip.into(),
        }
    }

    /// `TestRecord::srv("_rqlite-raft._tcp.rqlite.local", "node1.rqlite.local", 4002)`.
    pub fn srv(name: impl Into<String>, target: impl Into<String>, port: u16) -> Self {
        Self::Srv {
            name: name.into(),
            target: target.into(),
            port,
        }
    }
}

/// A running DNS server; it stops when dropped.
pub struct DnsServer {
    addr: SocketAddr,
    zone: Arc<InMemoryZoneHandler>,
    records: Mutex<Vec<TestRecord>>,
    serial: AtomicU32,
    server: Server<Catalog>,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// How many times to look for a port free for both UDP and TCP before giving up.
const BIND_ATTEMPTS: usize = 20;

impl DnsServer {
    /// Starts serving `records` on 127.0.0.1 at an OS-assigned port (UDP and TCP). Must be
    /// called within a tokio runtime. Fails on a record name that is not a DNS name.
    pub async fn start(records: impl IntoIterator<Item = TestRecord>) -> io::Result<DnsServer> {
        let records: Vec<TestRecord> = records.into_iter().collect();
        let serial = 1;
        let zone = InMemoryZoneHandler::new(
            Name::root(),
            zone_sets(&records, serial)?,
            ZoneType::Primary,
            AxfrPolicy::Deny,
        )
        .map_err(io::Error::other)?;
        let zone = Arc::new(zone);
        let mut catalog = Catalog::new();
        catalog.upsert(
            LowerName::new(&Name::root()),
            vec![zone.clone() as Arc<dyn ZoneHandler>],
        );

        let (udp, tcp) = bind_pair().await?;
        let addr = udp.local_addr()?;
        let mut server = Server::new(catalog);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 16);
        Ok(DnsServer {
            addr,
            zone,
            records: Mutex::new(records),
            serial: AtomicU32::new(serial),
            server,
        })
    }

    /// Where the server listens: the `nameserver` to put in a `dns`/`dns-srv` config.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces every record; the next query sees exactly `records`.
    pub async fn set_records(
        &self,
        records: impl IntoIterator<Item = TestRecord>,
    ) -> io::Result<()> {
        let records: Vec<TestRecord> = records.into_iter().collect();
        self.publish(records).await
    }

    /// Adds one record (say, a fourth node's address) to those served.
    pub async fn add_record(&self, record: TestRecord) -> io::Result<()> {
        let mut records = self.records();
        records.push(record);
        self.publish(records).await
    }

    /// The records served now.
    pub fn records(&self) -> Vec<TestRecord> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Swaps the whole record map under the zone's write lock, so no query sees a half-updated
    /// zone.
    async fn publish(&self, records: Vec<TestRecord>) -> io::Result<()> {
        let serial = self.serial.fetch_add(1, Ordering::SeqCst) + 1;
        let sets = zone_sets(&records, serial)?;
        *self.zone.records_mut().await = sets.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        *self.records.lock().unwrap_or_else(|p| p.into_inner()) = records;
        Ok(())
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        // Dropping the server also aborts its tasks; cancelling first lets them end cleanly.
        self.server.shutdown_token().cancel();
    }
}

/// A UDP socket and a TCP listener on the same 127.0.0.1 port. The OS picks the UDP port; the
/// same TCP port is usually free, and when it is not another UDP port is tried.
async fn bind_pair() -> io::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..BIND_ATTEMPTS {
        let udp = UdpSocket::bind("127.0.0.1:0").await?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no port free for both UDP and TCP")))
}

/// The root zone: its SOA plus `records`, grouped into record sets.
fn zone_sets(records: &[TestRecord], serial: u32) -> io::Result<BTreeMap<RrKey, RecordSet>> {
    // Negative answers carry this SOA; minimum 0 keeps "no such name" from being cached.
    let soa = SOA::new(
        name("ns.test")?,
        name("hostmaster.test")?,
        serial,
        60,
        60,
        60,
        0,
    );
    let mut all = vec![Record::from_rdata(Name::root(), 0, RData::SOA(soa))];
    for r in records {
        all.push(match r {
            TestRecord::Addr { name: n, ip } => Record::from_rdata(name(n)?, 0, RData::from(*ip)),
            TestRecord::Srv {
                name: n,
                target,
                port,
            } => Record::from_rdata(
                name(n)?,
                0,
                RData::SRV(SRV::new(0, 0, *port, name(target)?)),
            ),
        });
    }
    let mut sets: BTreeMap<RrKey, RecordSet> = BTreeMap::new();
    for record in all {
        let key = RrKey::new(LowerName::new(&record.name), record.record_type());
        sets.entry(key)
            .or_insert_with(|| RecordSet::new(record.name.clone(), record.record_type(), serial))
            .insert(record, serial);
    }
    Ok(sets)
}

/// An absolute name: the zone is the root, so every name is looked up fully qualified.
fn name(s: &str) -> io::Result<Name> {
    let absolute = if s.ends_with('.') {
        s.to_string()
    } else {
        format!("{s}.")
    };
    Name::from_ascii(&absolute).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{s:?} is not a DNS name: {e}"),
        )
    })
}
