//! The Raft log payload and the values it carries.
//!
//! Owns: what a replicated change looks like on the wire and on disk (statement-based
//! replication: SQL text plus typed bind values, already rewritten for non-determinism).
//! Does not: execute anything; `store` does that.
//!
//! The enum is versioned by variant: new variants are only ever appended, so an old log
//! replays on a newer binary.

use serde::{Deserialize, Serialize};

/// A bind value, typed as rqlite types them (`i`, `d`, `b`, `s`, `y`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Param {
    Null,
    Int(i64),
    Real(f64),
    Bool(bool),
    Text(String),
    Blob(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// One SQL statement and its parameters.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Statement {
    pub sql: String,
    /// Positional values, bound to `?`, `?NNN` in order.
    pub positional: Vec<Param>,
    /// Named values, keys without their `:`/`@`/`$` prefix.
    pub named: Vec<(String, Param)>,
    /// Run as a query even on the write path (a `RETURNING` clause was found).
    pub force_query: bool,
}

impl Statement {
    pub fn new(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            ..Self::default()
        }
    }

    /// Bytes of SQL, parameter names and parameter values (8 for a number, null or bool).
    pub fn payload_bytes(&self) -> usize {
        let value = |p: &Param| match p {
            Param::Text(t) => t.len(),
            Param::Blob(b) => b.len(),
            _ => 8,
        };
        self.sql.len()
            + self.positional.iter().map(value).sum::<usize>()
            + self
                .named
                .iter()
                .map(|(n, p)| n.len() + value(p))
                .sum::<usize>()
    }

    /// How many parameters it carries.
    pub fn params(&self) -> usize {
        self.positional.len() + self.named.len()
    }
}

/// A batch of statements that is applied as one unit (one log entry).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Request {
    pub statements: Vec<Statement>,
    /// Run inside BEGIN/COMMIT; the first error stops and rolls back.
    pub transaction: bool,
    /// Per-statement execution limit, in milliseconds (0 = none). Reads measure it on the
    /// clock; writes, which every node applies, as `STEPS_PER_MS` VM steps per millisecond.
    pub db_timeout_ms: u64,
}

/// The payload of a Raft log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Writes (`/db/execute`).
    Execute(Request),
    /// A read that must go through the log (`level=strong`).
    Query(Request),
    /// The unified endpoint (`/db/request`): reads and writes mixed.
    ExecuteQuery(Request),
    /// Replace the whole database with this SQLite file image.
    Load(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Nothing; used to move the commit index (and by `/boot` before a snapshot).
    Noop,
    /// Independent requests that arrived together, applied one after the other; each gets
    /// its own response (one log entry and one fsync for all of them).
    Batch(Vec<Command>),
    /// `cmd` with an execution budget fixed by the node that received it, so that every node
    /// stops a runaway request at exactly the same point (see [`Budget`]).
    Bounded { budget: Budget, cmd: Box<Command> },
    /// One part of a command too large for one entry (`store::parts`); the command is applied
    /// when its last part is.
    Part(Part),
    /// The proposer of a large command gave up: drop its parts.
    PartAbort { id: u64 },
    /// An interactive transaction's commit: every statement is run again and its answer
    /// compared with the one the client got; all equal commits, any difference is a conflict
    /// (see `docs/design/transactions.md`).
    TxCommit(TxCommit),
    /// The leader's change-data-capture delivery progress (see `docs/design/cdc.md`).
    CdcProgress(CdcProgress),
}

/// A one-line summary for Raft's logs: the kind of command, never its statements.
impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Execute(r) => write!(f, "execute({} statements)", r.statements.len()),
            Command::Query(r) => write!(f, "query({} statements)", r.statements.len()),
            Command::ExecuteQuery(r) => write!(f, "request({} statements)", r.statements.len()),
            Command::Load(b) => write!(f, "load({} bytes)", b.len()),
            Command::Noop => f.write_str("noop"),
            Command::Batch(cmds) => write!(f, "batch({} commands)", cmds.len()),
            Command::Bounded { cmd, .. } => write!(f, "bounded({cmd})"),
            Command::Part(_) => f.write_str("part"),
            Command::PartAbort { id } => write!(f, "part-abort({id})"),
            Command::TxCommit(t) => write!(f, "tx-commit({})", t.id),
            Command::CdcProgress(p) => write!(f, "cdc-progress({})", p.delivered),
        }
    }
}

/// How far CDC delivery got, replicated so that a new leader resumes exactly there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdcProgress {
    /// Every event at or below this index was acknowledged by the endpoint.
    pub delivered: u64,
    /// The range (inclusive) being sent when this was proposed: a new leader sends exactly
    /// this range again, with the same idempotency key, before anything after it.
    pub sending: Option<(u64, u64)>,
}

/// How a statement of an interactive transaction was sent (which endpoint shaped its answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxMode {
    Query,
    Execute,
    Request,
}

/// One statement of an interactive transaction and a digest of the answer the client got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TxStatement {
    pub stmt: Statement,
    pub mode: TxMode,
    pub digest: u64,
}

/// The log entry that commits an interactive transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TxCommit {
    /// The transaction's id, for messages.
    pub id: String,
    /// The applied index it started from.
    pub start: u64,
    pub statements: Vec<TxStatement>,
}

/// What a large command's parts carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartKind {
    /// The bincode encoding of a [`Command`].
    Command,
    /// A SQLite database file to restore (a `Load`), restored from the assembled file.
    Image,
}

/// One part of a large command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    /// The same for every part of one command.
    pub id: u64,
    pub seq: u32,
    pub last: bool,
    pub kind: PartKind,
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// How much work one request may do while it is applied: SQLite virtual-machine steps, which
/// every node counts identically for the same statements on the same database, unlike time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Budget {
    /// Steps the whole request may take (0 = unlimited): `-db-max-steps`.
    pub max_steps: u64,
}

/// SQLite VM steps a write may take per millisecond of its `db_timeout`. Part of the log
/// format: every node converts a logged `db_timeout_ms` with this same number, so a write
/// that runs out of time does so at the same step on every node. Never change it.
pub const STEPS_PER_MS: u64 = 30_000;

/// A value as a client sees it, after rqlite's driver conversions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    /// Bytes from a column whose declared type is not text-like: base64, or an array
    /// with `blob_array`.
    Blob(#[serde(with = "serde_bytes")] Vec<u8>),
    Bool(bool),
}

/// The rows of one query-shaped result.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Rows {
    pub columns: Vec<String>,
    /// Lower-cased declared types, back-filled from the first row for expressions.
    pub types: Vec<String>,
    pub values: Vec<Vec<Value>>,
    /// The table each column comes from (`""` for an expression), as SQLite reports it
    /// (`sqlite3_column_table_name`): what `qualify_columns` prefixes the names with. Always
    /// filled, so the node that renders the answer can qualify results computed elsewhere.
    pub tables: Vec<String>,
}

impl Rows {
    /// Column names as `table.column` where the column comes from a table (rqlite 10's
    /// `qualify_columns`); expressions keep their name.
    pub fn qualified_columns(&self) -> Vec<String> {
        self.columns
            .iter()
            .enumerate()
            .map(|(i, c)| match self.tables.get(i) {
                Some(t) if !t.is_empty() => format!("{t}.{c}"),
                _ => c.clone(),
            })
            .collect()
    }
}

/// What one statement produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// Execute-shaped: `sqlite3_last_insert_rowid` / `sqlite3_changes` after the statement.
    Exec {
        last_insert_id: i64,
        rows_affected: i64,
    },
    /// Query-shaped.
    Rows(Rows),
    /// The statement failed; SQLite's message (or ours, e.g. `query timeout`).
    Error(String),
}

/// One statement's outcome and how long it took, in seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StmtResult {
    pub outcome: Outcome,
    pub time: f64,
}
