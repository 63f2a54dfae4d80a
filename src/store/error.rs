//! The store layer's error type.

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite itself failed outside a statement (open, serialize, restore, ...).
    #[error("{0}")]
    Sqlite(String),
    /// A database image (load, boot, snapshot) is not a usable SQLite database.
    #[error("invalid SQLite database: {0}")]
    InvalidImage(String),
    /// The database thread is gone (the node is shutting down).
    #[error("database is closed")]
    Closed,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e.to_string())
    }
}
