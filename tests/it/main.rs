//! The integration test binary: real nodes on loopback, one module per behaviour.

mod harness; // nodes, clusters and processes on port 0; the HTTP client; polling waits

mod api; // one node's HTTP API: bad input, restarts
mod auth; // -auth: Basic auth and permissions, through followers, for joins
mod backups; // -auto-backup and -auto-restore: rqlite's file storage, leader-only, restore at start
mod binary; // the real sqlraftd: flags, the startup line, durability across kill -9
mod cdc; // change data capture to a real webhook receiver: exact events, kill -9, outages
mod consistency; // read levels and freshness on a healthy cluster
mod console; // the web console, served and driven in headless Chromium
mod crashes; // SIGKILLed leaders: no acknowledged write lost, money conserved
mod discovery; // clusters that form through DNS A/SRV, etcd and Consul
mod extensions; // -extensions-path: a C extension loaded on every node; SQL cannot load one
mod failures; // every failure is a status code, in bounded time
mod follower_reads; // min_index (read-your-writes) and linearizable reads on any node
mod formation; // bootstrap, -join, -bootstrap-expect, whole-cluster restarts
mod forwarding; // follower to leader: forwarding, redirects, no leader
mod golden; // rqlite's recorded single-node transcripts, replayed
mod interactive; // /db/tx: interactive transactions, conflicts, expiry, leader changes
mod leadership; // partitioned leaders step down, pre-vote, hand-over
mod limits; // no query of death: runaway statements, SQL that names files
mod membership; // removal, non-voters, address changes, reaping
mod metrics; // /metrics checked by promtool and scraped by Prometheus; /debug/vars key by key
mod operations; // operating a node: serving while it joins, refusing a split
mod recovery; // peers.json: a cluster recovered after losing its quorum
mod rqlite10; // what rqlite 9 and 10 added to the API: qualify_columns, /db/sql
mod serial; // a serializability checker (direct serialization graph), tested on planted anomalies
mod shell; // the interactive shell on a pty
mod snapshots; // snapshot catch-up, compaction, large databases
mod status; // /status field by field, as rqlite's tools read it
mod store; // the store level: Stores over the real internode transport, no HTTP
mod tls;
mod transactions;
mod tx_bank; // a bank over /db/tx with the leader killed: conserved, nothing lost, serializable // TLS on the API and between nodes, reloads, slow clients // no request leaves the database inside a transaction
