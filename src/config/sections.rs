//! Every setting, once: its flag (rqlite's name), environment variable, default and help,
//! grouped in the section its owner receives. The TOML file feeds these same definitions
//! (`file.rs`), so there is no second list to keep in step. Booleans take Go's forms:
//! `-flag`, `-flag=true`, `-flag=false`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::duration;

pub(crate) fn go_duration(s: &str) -> Result<Duration, String> {
    duration::parse(s)
        .ok_or_else(|| format!("'{s}' is not a valid duration (e.g. 500ms, 2s, 1m30s)"))
}

/// The HTTP API listener (and the limits both listeners share).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "HTTP API")]
pub struct Http {
    /// HTTP API bind address.
    #[arg(
        id = "http-addr",
        long = "http-addr",
        default_value = "localhost:4001",
        env = "SQLRAFT_HTTP_ADDR"
    )]
    pub addr: String,

    /// Advertised HTTP address (default: -http-addr).
    #[arg(
        id = "http-adv-addr",
        long = "http-adv-addr",
        env = "SQLRAFT_HTTP_ADV_ADDR"
    )]
    pub adv_addr: Option<String>,

    /// Allowed CORS origin (`Access-Control-Allow-Origin`).
    #[arg(
        id = "http-allow-origin",
        long = "http-allow-origin",
        env = "SQLRAFT_HTTP_ALLOW_ORIGIN"
    )]
    pub allow_origin: Option<String>,

    /// Largest accepted request body, in bytes (larger bodies get 413; /db/load and /boot
    /// stream to disk and are not limited).
    #[arg(id = "http-max-body", long = "http-max-body", default_value_t = 256 << 20, env = "SQLRAFT_HTTP_MAX_BODY")]
    pub max_body: usize,

    /// Statements one request may carry (more gets 413).
    #[arg(
        id = "http-max-statements",
        long = "http-max-statements",
        default_value_t = 100_000,
        env = "SQLRAFT_HTTP_MAX_STATEMENTS"
    )]
    pub max_statements: usize,

    /// Most simultaneous connections on each listener.
    #[arg(
        id = "http-max-connections",
        long = "http-max-connections",
        default_value_t = 1024,
        env = "SQLRAFT_HTTP_MAX_CONNECTIONS"
    )]
    pub max_connections: usize,

    /// Time a client has to send a whole request (head and body); slower clients are cut off.
    #[arg(id = "http-read-timeout", long = "http-read-timeout", default_value = "30s", value_parser = go_duration,
          env = "SQLRAFT_HTTP_READ_TIMEOUT")]
    pub read_timeout: Duration,
}

/// TLS on the API and between nodes.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "TLS")]
pub struct Tls {
    /// PEM certificate for HTTPS on the API (with -http-key).
    #[arg(id = "http-cert", long = "http-cert", env = "SQLRAFT_HTTP_CERT")]
    pub http_cert: Option<PathBuf>,

    /// PEM private key for HTTPS on the API.
    #[arg(id = "http-key", long = "http-key", env = "SQLRAFT_HTTP_KEY")]
    pub http_key: Option<PathBuf>,

    /// PEM CA bundle to verify API clients' certificates (with -http-verify-client).
    #[arg(
        id = "http-ca-cert",
        long = "http-ca-cert",
        env = "SQLRAFT_HTTP_CA_CERT"
    )]
    pub http_ca_cert: Option<PathBuf>,

    /// Require API clients to present a certificate signed by -http-ca-cert.
    #[arg(id = "http-verify-client", long = "http-verify-client", env = "SQLRAFT_HTTP_VERIFY_CLIENT", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub http_verify_client: bool,

    /// PEM certificate for node-to-node TLS (with -node-key).
    #[arg(id = "node-cert", long = "node-cert", env = "SQLRAFT_NODE_CERT")]
    pub node_cert: Option<PathBuf>,

    /// PEM private key for node-to-node TLS.
    #[arg(id = "node-key", long = "node-key", env = "SQLRAFT_NODE_KEY")]
    pub node_key: Option<PathBuf>,

    /// PEM CA bundle that signs the other nodes' certificates.
    #[arg(
        id = "node-ca-cert",
        long = "node-ca-cert",
        env = "SQLRAFT_NODE_CA_CERT"
    )]
    pub node_ca_cert: Option<PathBuf>,

    /// Do not verify other nodes' certificates (testing only).
    #[arg(id = "node-no-verify", long = "node-no-verify", env = "SQLRAFT_NODE_NO_VERIFY", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub node_no_verify: bool,

    /// Require other nodes to present a certificate signed by -node-ca-cert (mutual TLS).
    #[arg(id = "node-verify-client", long = "node-verify-client", env = "SQLRAFT_NODE_VERIFY_CLIENT", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub node_verify_client: bool,

    /// Expect this name in other nodes' certificates instead of their address.
    #[arg(
        id = "node-verify-server-name",
        long = "node-verify-server-name",
        env = "SQLRAFT_NODE_VERIFY_SERVER_NAME"
    )]
    pub node_verify_server_name: Option<String>,

    /// Common Name API client certificates must carry (needs -http-verify-client).
    #[arg(
        id = "http-verify-common-name",
        long = "http-verify-common-name",
        env = "SQLRAFT_HTTP_VERIFY_COMMON_NAME"
    )]
    pub http_verify_common_name: Option<String>,

    /// Common Name other nodes' client certificates must carry (needs -node-verify-client).
    #[arg(
        id = "node-verify-common-name",
        long = "node-verify-common-name",
        env = "SQLRAFT_NODE_VERIFY_COMMON_NAME"
    )]
    pub node_verify_common_name: Option<String>,
}

/// Raft: the internode listener, timers, snapshots, membership behaviour.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Raft")]
pub struct Raft {
    /// Raft (internode) bind address.
    #[arg(
        id = "raft-addr",
        long = "raft-addr",
        default_value = "localhost:4002",
        env = "SQLRAFT_RAFT_ADDR"
    )]
    pub addr: String,

    /// Advertised Raft address (default: -raft-addr).
    #[arg(
        id = "raft-adv-addr",
        long = "raft-adv-addr",
        env = "SQLRAFT_RAFT_ADV_ADDR"
    )]
    pub adv_addr: Option<String>,

    /// Raft election timeout.
    #[arg(id = "raft-election-timeout", long = "raft-election-timeout", default_value = "1s", value_parser = go_duration,
          env = "SQLRAFT_RAFT_ELECTION_TIMEOUT")]
    pub election_timeout: Duration,

    /// Raft heartbeat timeout.
    #[arg(id = "raft-heartbeat-timeout", long = "raft-heartbeat-timeout", alias = "raft-timeout", default_value = "1s",
          value_parser = go_duration, env = "SQLRAFT_RAFT_HEARTBEAT_TIMEOUT")]
    pub heartbeat_timeout: Duration,

    /// How long a write may wait to be committed and applied.
    #[arg(id = "raft-apply-timeout", long = "raft-apply-timeout", default_value = "10s", value_parser = go_duration,
          env = "SQLRAFT_RAFT_APPLY_TIMEOUT")]
    pub apply_timeout: Duration,

    /// Applied entries that trigger a snapshot.
    #[arg(
        id = "raft-snap",
        long = "raft-snap",
        default_value_t = 8192,
        env = "SQLRAFT_RAFT_SNAP"
    )]
    pub snap: u64,

    /// How often the snapshot threshold is checked.
    #[arg(id = "raft-snap-int", long = "raft-snap-int", default_value = "30s", value_parser = go_duration,
          env = "SQLRAFT_RAFT_SNAP_INT")]
    pub snap_int: Duration,

    /// Log level of the Raft library (DEBUG, INFO, WARN, ERROR).
    #[arg(
        id = "raft-log-level",
        long = "raft-log-level",
        default_value = "WARN",
        env = "SQLRAFT_RAFT_LOG_LEVEL"
    )]
    pub log_level: String,

    /// Join as a read-only node that does not vote.
    #[arg(id = "raft-non-voter", long = "raft-non-voter", env = "SQLRAFT_RAFT_NON_VOTER", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub non_voter: bool,

    /// Hand leadership to another voter on graceful shutdown.
    #[arg(id = "raft-shutdown-stepdown", long = "raft-shutdown-stepdown", env = "SQLRAFT_RAFT_SHUTDOWN_STEPDOWN", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub shutdown_stepdown: bool,

    /// Stop Raft on this node once it learns it was removed from the cluster.
    #[arg(id = "raft-remove-shutdown", long = "raft-remove-shutdown", env = "SQLRAFT_RAFT_REMOVE_SHUTDOWN", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub remove_shutdown: bool,

    /// Ask the leader to remove this node on graceful shutdown.
    #[arg(id = "raft-cluster-remove-shutdown", long = "raft-cluster-remove-shutdown", env = "SQLRAFT_RAFT_CLUSTER_REMOVE_SHUTDOWN", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub cluster_remove_shutdown: bool,

    /// Remove a voter the leader has not reached for this long (0 = never).
    #[arg(id = "raft-reap-node-timeout", long = "raft-reap-node-timeout", default_value = "0s", value_parser = go_duration,
          env = "SQLRAFT_RAFT_REAP_NODE_TIMEOUT")]
    pub reap_node_timeout: Duration,

    /// Remove a non-voter the leader has not reached for this long (0 = never).
    #[arg(id = "raft-reap-read-only-node-timeout", long = "raft-reap-read-only-node-timeout", default_value = "0s",
          value_parser = go_duration, env = "SQLRAFT_RAFT_REAP_READ_ONLY_NODE_TIMEOUT")]
    pub reap_read_only_node_timeout: Duration,

    /// How long a leader keeps acting as one without hearing from a quorum (0s: the
    /// election timeout). Capped at the election timeout, past which another leader may exist.
    #[arg(id = "raft-leader-lease-timeout", long = "raft-leader-lease-timeout", default_value = "0s",
          value_parser = go_duration, env = "SQLRAFT_RAFT_LEADER_LEASE_TIMEOUT")]
    pub leader_lease_timeout: Duration,

    /// SQLite WAL size in bytes past which it is checkpointed into the database file (0: the
    /// default). rqlite snapshots at this size; here snapshots copy the database file, and
    /// the WAL is only bounded.
    #[arg(
        id = "raft-snap-wal-size",
        long = "raft-snap-wal-size",
        default_value_t = 4 << 20,
        env = "SQLRAFT_RAFT_SNAP_WAL_SIZE"
    )]
    pub snap_wal_size: u64,
}

impl Raft {
    /// Entries kept behind a snapshot: 1.25 x the threshold, as rqlite does.
    pub fn trailing_logs(&self) -> u64 {
        self.snap.saturating_add(self.snap / 4)
    }
}

/// The SQLite database and the limits on what SQL may cost.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Database")]
pub struct Database {
    /// Accepted for rqlite compatibility; SQLite always runs in WAL mode on a scratch file.
    #[arg(id = "on-disk", long = "on-disk", env = "SQLRAFT_ON_DISK", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub on_disk: bool,

    /// Enable SQLite foreign key constraints.
    #[arg(id = "fk", long = "fk", env = "SQLRAFT_FK", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub fk: bool,

    /// Time limit of a read statement that sets no db_timeout of its own (0s = none).
    #[arg(id = "db-timeout", long = "db-timeout", default_value = "30s", value_parser = go_duration, env = "SQLRAFT_DB_TIMEOUT")]
    pub timeout: Duration,

    /// SQLite VM steps one write request may take when applied, the same on every node
    /// (0 = unlimited).
    #[arg(
        id = "db-max-steps",
        long = "db-max-steps",
        default_value_t = 100_000_000,
        env = "SQLRAFT_DB_MAX_STEPS"
    )]
    pub max_steps: u64,

    /// Read-only SQLite connections in use at most (reads beyond wait for one).
    #[arg(
        id = "db-max-ro-conns",
        long = "db-max-ro-conns",
        default_value_t = 16,
        env = "SQLRAFT_DB_MAX_RO_CONNS"
    )]
    pub max_ro_conns: usize,

    /// SQLite extensions to load at start on every connection: files, directories of them,
    /// or zip archives, comma-separated. SQL's `load_extension()` stays refused.
    #[arg(
        id = "extensions-path",
        long = "extensions-path",
        env = "SQLRAFT_EXTENSIONS_PATH",
        value_delimiter = ','
    )]
    pub extensions_path: Vec<PathBuf>,
}

/// Forming and joining a cluster.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Cluster")]
pub struct Cluster {
    /// Raft addresses (host:port) of nodes to join, comma-separated.
    #[arg(
        id = "join",
        long = "join",
        env = "SQLRAFT_JOIN",
        value_delimiter = ','
    )]
    pub join: Vec<String>,

    /// Join rounds before giving up.
    #[arg(
        id = "join-attempts",
        long = "join-attempts",
        default_value_t = 5,
        env = "SQLRAFT_JOIN_ATTEMPTS"
    )]
    pub join_attempts: u32,

    /// Pause between join rounds.
    #[arg(id = "join-interval", long = "join-interval", default_value = "3s", value_parser = go_duration,
          env = "SQLRAFT_JOIN_INTERVAL")]
    pub join_interval: Duration,

    /// User (from the -auth file) whose credentials joins and notifies carry.
    #[arg(id = "join-as", long = "join-as", env = "SQLRAFT_JOIN_AS")]
    pub join_as: Option<String>,

    /// Form a cluster of exactly this many voters with the -join list (notify protocol).
    #[arg(
        id = "bootstrap-expect",
        long = "bootstrap-expect",
        default_value_t = 0,
        env = "SQLRAFT_BOOTSTRAP_EXPECT"
    )]
    pub bootstrap_expect: usize,

    /// Give up forming a cluster with -bootstrap-expect after this long.
    #[arg(id = "bootstrap-expect-timeout", long = "bootstrap-expect-timeout", default_value = "120s", value_parser = go_duration,
          env = "SQLRAFT_BOOTSTRAP_EXPECT_TIMEOUT")]
    pub bootstrap_expect_timeout: Duration,

    /// Timeout for connecting to another node.
    #[arg(id = "cluster-connect-timeout", long = "cluster-connect-timeout", default_value = "30s", value_parser = go_duration,
          env = "SQLRAFT_CLUSTER_CONNECT_TIMEOUT")]
    pub connect_timeout: Duration,
}

/// Discovery as given (validated into [`super::Discovery`]).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Discovery")]
pub struct DiscoveryFlags {
    /// Discovery: dns, dns-srv, etcd-kv or consul-kv.
    #[arg(id = "disco-mode", long = "disco-mode", env = "SQLRAFT_DISCO_MODE")]
    pub mode: Option<String>,

    /// Discovery key: names the cluster in etcd/Consul.
    #[arg(
        id = "disco-key",
        long = "disco-key",
        default_value = "rqlite",
        env = "SQLRAFT_DISCO_KEY"
    )]
    pub key: String,

    /// Discovery settings: inline JSON or the path of a JSON file.
    #[arg(
        id = "disco-config",
        long = "disco-config",
        env = "SQLRAFT_DISCO_CONFIG"
    )]
    pub config: Option<String>,
}

/// Queued writes (`/db/execute?queue`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Write queue")]
pub struct Queue {
    /// How many requests may wait in the queue.
    #[arg(
        id = "write-queue-capacity",
        long = "write-queue-capacity",
        default_value_t = 1024,
        env = "SQLRAFT_WRITE_QUEUE_CAPACITY"
    )]
    pub capacity: usize,

    /// Requests combined into one batch.
    #[arg(
        id = "write-queue-batch-size",
        long = "write-queue-batch-size",
        default_value_t = 128,
        env = "SQLRAFT_WRITE_QUEUE_BATCH_SIZE"
    )]
    pub batch_size: usize,

    /// How long a batch waits to fill up.
    #[arg(id = "write-queue-timeout", long = "write-queue-timeout", default_value = "50ms", value_parser = go_duration,
          env = "SQLRAFT_WRITE_QUEUE_TIMEOUT")]
    pub timeout: Duration,

    /// Run each batch in one transaction.
    #[arg(id = "write-queue-tx", long = "write-queue-tx", env = "SQLRAFT_WRITE_QUEUE_TX", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub tx: bool,
}

/// Automatic backups and the restore at first start (rqlite's JSON files; `file` storage).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Automatic backup and restore")]
pub struct Auto {
    /// JSON file configuring automatic backups (taken by the leader).
    #[arg(id = "auto-backup", long = "auto-backup", env = "SQLRAFT_AUTO_BACKUP")]
    pub backup: Option<PathBuf>,

    /// JSON file naming a backup to restore when this node starts with no state.
    #[arg(
        id = "auto-restore",
        long = "auto-restore",
        env = "SQLRAFT_AUTO_RESTORE"
    )]
    pub restore: Option<PathBuf>,
}
