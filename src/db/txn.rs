//! Interactive transactions on the writer: running a transaction's statements so far inside
//! a wrapper that is always rolled back (on the leader, while the client is still talking),
//! and the commit check that every node runs when the commit entry is applied.
//!
//! Owns: the wrapper (`BEGIN`, `last_insert_rowid` reset, replay, `ROLLBACK` or `COMMIT`),
//! the comparison of each replayed answer with the one the client got, and the answer
//! digest. Does not: keep transactions (`store::tx` does) or decide when anything runs.
//! See `docs/design/transactions.md`.

use super::conn;
use super::engine::Engine;
use super::exec::{self, Limit, Mode};
use super::DbError;
use crate::command::{Outcome, Statement, StmtResult, TxCommit, TxMode, TxStatement, Value};

/// The first statement of a transaction whose answer is not the one its client got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxConflict {
    /// Position of the statement in the transaction (0-based).
    pub statement: usize,
    pub sql: String,
}

impl std::fmt::Display for TxConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "statement {} of the transaction ({}) now gives a different answer than it gave the client: a concurrent committed write changed what it read",
            self.statement + 1,
            self.sql
        )
    }
}

/// What running a transaction's new statements produced.
#[derive(Debug, Clone, PartialEq)]
pub enum TxStep {
    /// Their results, and each one as the transaction records it.
    Ran(Vec<StmtResult>, Vec<TxStatement>),
    /// An earlier answer changed: the transaction can no longer commit.
    Conflict(TxConflict),
    /// A statement ended the transaction itself (e.g. `ON CONFLICT ROLLBACK`).
    Ended(String),
}

fn mode_of(m: TxMode) -> Mode {
    match m {
        TxMode::Query => Mode::Query,
        TxMode::Execute => Mode::Execute,
        TxMode::Request => Mode::Request,
    }
}

/// What one replay found.
struct Replay {
    conflict: Option<TxConflict>,
    /// Results of the statements after the history.
    new: Vec<StmtResult>,
    /// A statement ended the wrapper transaction.
    ended: bool,
}

impl Engine {
    /// Runs `new` (sent as `mode`) after replaying `history` inside a wrapper that is always
    /// rolled back: the database is left exactly as it was. Runs on the writer because it
    /// must see committed data and never interleave with an apply (the database thread runs
    /// one job at a time).
    pub fn tx_step(
        &mut self,
        history: &[TxStatement],
        new: &[Statement],
        mode: TxMode,
        max_steps: u64,
    ) -> Result<TxStep, DbError> {
        let saved = self.rw.conn.last_insert_rowid();
        let r = self.replay(history, new, mode, max_steps);
        if !self.rw.conn.is_autocommit() {
            let _ = self.rw.conn.execute_batch("ROLLBACK");
        }
        // The leader's next ordinary write reports what it would have without this.
        set_last_insert_rowid(&self.rw, saved);
        let r = self.settle(r)?;
        Ok(match r {
            Replay {
                conflict: Some(c), ..
            } => TxStep::Conflict(c),
            Replay { ended: true, .. } => TxStep::Ended(
                "a statement ended the transaction (SQLite rolled it back): it is aborted".into(),
            ),
            Replay { new: results, .. } => {
                let recorded = new
                    .iter()
                    .zip(&results)
                    .map(|(s, r)| TxStatement {
                        stmt: s.clone(),
                        mode,
                        digest: digest(&r.outcome),
                    })
                    .collect();
                TxStep::Ran(results, recorded)
            }
        })
    }

    /// Applies a transaction's commit entry: replays every statement in one SQLite
    /// transaction and commits only if every answer equals the one its client got. The same
    /// on every node: it depends only on the database and the entry.
    pub(crate) fn tx_commit(
        &mut self,
        c: &TxCommit,
        max_steps: u64,
    ) -> Result<Result<(), TxConflict>, DbError> {
        let r = self.replay(&c.statements, &[], TxMode::Execute, max_steps);
        let verdict = match &r {
            Ok(Replay {
                conflict: Some(c), ..
            }) => Err(c.clone()),
            Ok(Replay { ended: true, .. }) => Err(TxConflict {
                statement: c.statements.len().saturating_sub(1),
                sql: "the transaction was ended by one of its statements".into(),
            }),
            _ => Ok(()),
        };
        let committed = match (&r, &verdict) {
            (Ok(_), Ok(())) if !self.rw.conn.is_autocommit() => {
                self.rw.conn.execute_batch("COMMIT").map_err(DbError::from)
            }
            _ => Ok(()),
        };
        if !self.rw.conn.is_autocommit() {
            let _ = self.rw.conn.execute_batch("ROLLBACK");
        }
        let r = self.settle(r)?;
        drop(r);
        committed?;
        self.maybe_checkpoint();
        Ok(verdict)
    }

    /// The common part: BEGIN, replay `history` comparing answers, run `new`. The caller
    /// ends the transaction.
    fn replay(
        &mut self,
        history: &[TxStatement],
        new: &[Statement],
        mode: TxMode,
        max_steps: u64,
    ) -> Result<Replay, DbError> {
        self.rw.conn.execute_batch("BEGIN")?;
        // `last_insert_id` answers must not depend on what the connection did before.
        set_last_insert_rowid(&self.rw, 0);
        self.rw.guard().client_tx(true);
        let stmts = history
            .iter()
            .map(|t| (&t.stmt, mode_of(t.mode)))
            .chain(new.iter().map(|s| (s, mode_of(mode))));
        let mut out = Replay {
            conflict: None,
            new: Vec::with_capacity(new.len()),
            ended: false,
        };
        let mut i = 0;
        exec::run_statements(&self.rw, stmts, &Limit::Steps { max_steps }, |r| {
            let keep = match history.get(i) {
                Some(t) if digest(&r.outcome) != t.digest => {
                    out.conflict = Some(TxConflict {
                        statement: i,
                        sql: t.stmt.sql.clone(),
                    });
                    false
                }
                Some(_) => true,
                None => {
                    out.new.push(r);
                    true
                }
            };
            i += 1;
            keep
        });
        self.rw.guard().client_tx(false);
        out.ended = self.rw.conn.is_autocommit();
        Ok(out)
    }

    /// Puts back connection settings a statement changed, and turns a failure of this node
    /// into an error (as [`Engine::write`] does).
    fn settle<T>(&mut self, r: Result<T, DbError>) -> Result<T, DbError> {
        self.rw.settle_statements();
        if self.rw.guard().take_changed_settings() {
            if let Err(e) = conn::reset_settings(&self.rw.conn, self.config.fk) {
                tracing::error!(error = %e, "cannot reset the writer's settings");
            }
        }
        if let Some(failure) = self.rw.guard().take_node_failure() {
            return Err(DbError::NodeFailure(failure));
        }
        r
    }
}

fn set_last_insert_rowid(c: &conn::SqlConn, v: i64) {
    // SAFETY: the handle is valid for the life of `c` and used on this thread only;
    // sqlite3_set_last_insert_rowid only stores the value in the connection.
    unsafe { rusqlite::ffi::sqlite3_set_last_insert_rowid(c.conn.handle(), v) }
}

/// A digest of an answer, identical on every node and platform: FNV-1a 64 over a fixed
/// encoding of the outcome (never its timing). An execute's `last_insert_id` is left out:
/// it is provisional inside a transaction (every two transactions inserting into one table
/// would otherwise conflict); a client that needs the key asks with `RETURNING`, which is
/// compared.
pub fn digest(o: &Outcome) -> u64 {
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    match o {
        Outcome::Exec { rows_affected, .. } => {
            h.byte(1);
            h.int(*rows_affected);
        }
        Outcome::Rows(r) => {
            h.byte(2);
            for list in [&r.columns, &r.types, &r.tables] {
                h.len(list.len());
                list.iter().for_each(|s| h.bytes(s.as_bytes()));
            }
            h.len(r.values.len());
            for row in &r.values {
                h.len(row.len());
                row.iter().for_each(|v| h.value(v));
            }
        }
        Outcome::Error(m) => {
            h.byte(3);
            h.bytes(m.as_bytes());
        }
    }
    h.0
}

struct Fnv(u64);

impl Fnv {
    fn byte(&mut self, b: u8) {
        self.0 ^= u64::from(b);
        self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
    }
    fn raw(&mut self, bytes: &[u8]) {
        bytes.iter().for_each(|b| self.byte(*b));
    }
    fn len(&mut self, n: usize) {
        self.raw(&(n as u64).to_le_bytes());
    }
    fn int(&mut self, v: i64) {
        self.raw(&v.to_le_bytes());
    }
    /// Length first, so that ("ab","c") and ("a","bc") differ.
    fn bytes(&mut self, b: &[u8]) {
        self.len(b.len());
        self.raw(b);
    }
    fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.byte(0),
            Value::Int(i) => {
                self.byte(1);
                self.int(*i);
            }
            Value::Real(f) => {
                self.byte(2);
                self.raw(&f.to_bits().to_le_bytes());
            }
            Value::Text(s) => {
                self.byte(3);
                self.bytes(s.as_bytes());
            }
            Value::Blob(b) => {
                self.byte(4);
                self.bytes(b);
            }
            Value::Bool(b) => {
                self.byte(5);
                self.byte(u8::from(*b));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::DbConfig;

    fn engine() -> Engine {
        let mut e = Engine::open(&DbConfig::default()).expect("open");
        let setup = crate::command::Request {
            statements: vec![
                Statement::new("CREATE TABLE a (id INTEGER PRIMARY KEY, bal INTEGER)"),
                Statement::new("INSERT INTO a VALUES (1, 100), (2, 0)"),
            ],
            ..Default::default()
        };
        e.execute(&setup);
        e
    }

    fn step(e: &mut Engine, h: &mut Vec<TxStatement>, sql: &str, mode: TxMode) -> Vec<StmtResult> {
        match e.tx_step(h, &[Statement::new(sql)], mode, 0).expect("step") {
            TxStep::Ran(r, rec) => {
                h.extend(rec);
                r
            }
            other => panic!("{other:?}"),
        }
    }

    fn count(e: &Engine, sql: &str) -> Vec<StmtResult> {
        e.query(&crate::command::Request {
            statements: vec![Statement::new(sql)],
            ..Default::default()
        })
    }

    #[test]
    fn steps_see_own_writes_and_leave_the_database_unchanged() {
        let mut e = engine();
        let mut h = Vec::new();
        step(
            &mut e,
            &mut h,
            "UPDATE a SET bal = bal - 10 WHERE id = 1",
            TxMode::Execute,
        );
        let r = step(
            &mut e,
            &mut h,
            "SELECT bal FROM a WHERE id = 1",
            TxMode::Query,
        );
        assert!(
            matches!(&r[0].outcome, Outcome::Rows(rows) if rows.values == vec![vec![Value::Int(90)]])
        );
        let outside = count(&e, "SELECT bal FROM a WHERE id = 1");
        assert!(
            matches!(&outside[0].outcome, Outcome::Rows(rows) if rows.values == vec![vec![Value::Int(100)]])
        );
        let c = TxCommit {
            id: "t".into(),
            start: 0,
            statements: h,
        };
        assert_eq!(e.tx_commit(&c, 0).expect("commit"), Ok(()));
        let after = count(&e, "SELECT bal FROM a WHERE id = 1");
        assert!(
            matches!(&after[0].outcome, Outcome::Rows(rows) if rows.values == vec![vec![Value::Int(90)]])
        );
    }

    #[test]
    fn a_changed_read_is_a_conflict_and_nothing_is_applied() {
        let mut e = engine();
        let mut h = Vec::new();
        step(
            &mut e,
            &mut h,
            "SELECT bal FROM a WHERE id = 1",
            TxMode::Query,
        );
        step(
            &mut e,
            &mut h,
            "UPDATE a SET bal = 5 WHERE id = 2",
            TxMode::Execute,
        );
        e.execute(&crate::command::Request {
            statements: vec![Statement::new("UPDATE a SET bal = 1 WHERE id = 1")],
            ..Default::default()
        });
        let c = TxCommit {
            id: "t".into(),
            start: 0,
            statements: h.clone(),
        };
        let v = e.tx_commit(&c, 0).expect("commit");
        assert_eq!(v.map_err(|c| c.statement), Err(0));
        let after = count(&e, "SELECT bal FROM a WHERE id = 2");
        assert!(
            matches!(&after[0].outcome, Outcome::Rows(rows) if rows.values == vec![vec![Value::Int(0)]])
        );
        // The next step is told at once.
        let next = e.tx_step(&h, &[Statement::new("SELECT 1")], TxMode::Query, 0);
        assert!(matches!(next, Ok(TxStep::Conflict(_))));
    }

    #[test]
    fn transaction_control_inside_is_refused() {
        let mut e = engine();
        // Run outside a transaction first: what is allowed there is still refused inside one.
        for sql in ["BEGIN", "COMMIT", "SAVEPOINT x", "RELEASE x"] {
            e.execute(&crate::command::Request {
                statements: vec![Statement::new(sql)],
                ..Default::default()
            });
        }
        let mut h = Vec::new();
        let r = step(&mut e, &mut h, "COMMIT", TxMode::Execute);
        assert!(matches!(&r[0].outcome, Outcome::Error(m) if m.contains("not allowed")));
        let r = step(&mut e, &mut h, "SAVEPOINT x", TxMode::Execute);
        assert!(matches!(&r[0].outcome, Outcome::Error(m) if m.contains("not allowed")));
        // Ordinary statements on the writer may still use transactions.
        let r = e.execute(&crate::command::Request {
            statements: vec![Statement::new("BEGIN"), Statement::new("COMMIT")],
            ..Default::default()
        });
        assert!(
            r.iter().all(|r| !matches!(r.outcome, Outcome::Error(_))),
            "{r:?}"
        );
    }

    #[test]
    fn digests_tell_answers_apart() {
        let a = Outcome::Exec {
            last_insert_id: 1,
            rows_affected: 1,
        };
        let b = Outcome::Exec {
            last_insert_id: 1,
            rows_affected: 0,
        };
        assert_ne!(digest(&a), digest(&b));
        assert_eq!(digest(&a), digest(&a.clone()));
        let other_rowid = Outcome::Exec {
            last_insert_id: 7,
            rows_affected: 1,
        };
        assert_eq!(digest(&a), digest(&other_rowid));
        assert_ne!(
            digest(&Outcome::Error("ab".into())),
            digest(&Outcome::Error("a".into()))
        );
    }
}
