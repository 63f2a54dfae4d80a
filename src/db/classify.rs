//! Which SQL the cluster refuses outright.
//!
//! Owns: the disallowed-PRAGMA check (rqlite rejects the whole request with
//! `disallowed pragma` when any statement changes the journal, checkpointing or sync
//! settings that the store itself relies on).
//! Does not: decide read-only versus write; that is SQLite's own `sqlite3_stmt_readonly`,
//! asked in `db.rs`, never a string prefix.

use super::lexer::{tokenize, Kind, Token};

/// True when any statement in `sql` is one of the pragmas the store must own:
/// `journal_mode=`, `wal_autocheckpoint=`, `wal_checkpoint` (any form) and `synchronous=`,
/// optionally schema-qualified, in any case, with the setter written `=` or `(...)`.
/// Reading these pragmas is fine, and so is `query_only=` (rqlite v8.43.3 accepts it).
pub fn is_disallowed_pragma(sql: &str) -> bool {
    // Every request's statements pass here: most never name a pragma at all.
    if !sql
        .as_bytes()
        .windows(6)
        .any(|w| w.eq_ignore_ascii_case(b"pragma"))
    {
        return false;
    }
    let tokens = tokenize(sql);
    tokens
        .split(|t| t.is_punct(b';'))
        .any(|stmt| statement_is_disallowed(sql, stmt))
}

fn statement_is_disallowed(sql: &str, stmt: &[Token]) -> bool {
    let Some((first, rest)) = stmt.split_first() else {
        return false;
    };
    if !first.is_word(sql, "pragma") {
        return false;
    }
    // `PRAGMA name ...` or `PRAGMA schema.name ...`.
    let (name, after) = match rest {
        [schema, dot, name, after @ ..] if dot.is_punct(b'.') && is_name(schema) => (name, after),
        [name, after @ ..] => (name, after),
        [] => return false,
    };
    let Some(name) = name.name(sql) else {
        return false;
    };
    let setter = after
        .first()
        .is_some_and(|t| t.is_punct(b'=') || t.is_punct(b'('));
    match name.to_ascii_lowercase().as_str() {
        "wal_checkpoint" => true,
        "journal_mode" | "wal_autocheckpoint" | "synchronous" => setter,
        _ => false,
    }
}

fn is_name(t: &Token) -> bool {
    matches!(t.kind, Kind::Word | Kind::QuotedIdent | Kind::Str)
}

#[cfg(test)]
mod tests {
    use super::is_disallowed_pragma;

    /// Checks each statement's verdict, naming the one that is wrong.
    fn check(disallowed: bool, cases: &[&str]) {
        for sql in cases {
            assert_eq!(is_disallowed_pragma(sql), disallowed, "{sql:?}");
        }
    }

    #[test]
    fn golden_disallowed_pragmas_are_rejected() {
        // C78, C79, C94, C147.
        check(
            true,
            &[
                "PRAGMA journal_mode=DELETE",
                "pragma Synchronous = OFF",
                "PRAGMA wal_checkpoint(TRUNCATE)",
                "PRAGMA wal_checkpoint",
                "PRAGMA wal_autocheckpoint=0",
            ],
        );
    }

    #[test]
    fn schema_qualified_quoted_and_function_forms_are_rejected() {
        check(
            true,
            &[
                "PRAGMA main.journal_mode = WAL",
                "PRAGMA \"main\".\"synchronous\"=0",
                "PRAGMA main.wal_checkpoint(PASSIVE)",
                "PRAGMA journal_mode('delete')",
                "PRAGMA synchronous(0)",
                "PRAGMA main.wal_autocheckpoint=0",
            ],
        );
    }

    #[test]
    fn leading_comments_and_later_statements_are_checked() {
        check(
            true,
            &[
                "  -- hi\n /* there */ PRAGMA journal_mode=OFF",
                "SELECT 1; PRAGMA synchronous=OFF",
                "INSERT INTO t VALUES('x');\n\tpragma JOURNAL_MODE\n=\nmemory;",
            ],
        );
    }

    #[test]
    fn reads_and_other_pragmas_are_allowed() {
        check(
            false,
            &[
                "PRAGMA journal_mode",
                "PRAGMA main.synchronous",
                "PRAGMA wal_autocheckpoint",
                "PRAGMA query_only=1",
                "PRAGMA query_only = 0",
                "PRAGMA foreign_keys=ON",
                "PRAGMA table_info(foo)",
                "SELECT 'PRAGMA journal_mode=DELETE'",
                "INSERT INTO t VALUES('; PRAGMA synchronous=OFF')",
                "-- PRAGMA journal_mode=DELETE\nSELECT 1",
                "",
                "PRAGMA",
            ],
        );
    }
}
