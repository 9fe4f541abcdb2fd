//! Row copying from an embedded SQLite file into PostgreSQL, for the
//! stores that move with `bonopay migrate`. Each store owns its tables and
//! writes its own import (the ledger, the DGI outbox, API keys, webhooks,
//! receipt deliveries); this is the one loop they share.

/// Parameters of one PostgreSQL statement, made of one SQLite row.
pub type Params = Vec<Box<dyn postgres::types::ToSql + Sync>>;

/// Why rows could not be copied. Nothing of the transaction is kept: the
/// caller's transaction is rolled back when it is dropped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The SQLite source could not be read, or a value did not convert.
    #[error("reading the SQLite source: {0}")]
    Source(#[from] rusqlite::Error),
    /// PostgreSQL refused a statement.
    #[error("writing to PostgreSQL: {0}")]
    Target(#[from] postgres::Error),
    /// The target store could not be opened (or its tables created).
    #[error("opening the target store: {0}")]
    Store(String),
    /// A source row is not what its store writes, or an id stands for
    /// something else in the target.
    #[error("{0}")]
    Refused(String),
}

/// Whether the SQLite database holds table `name` (a store that was never
/// used has not created its tables).
///
/// # Errors
/// [`ImportError::Source`].
pub fn has_table(conn: &rusqlite::Connection, name: &str) -> Result<bool, ImportError> {
    Ok(conn.query_row(
        "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get(0),
    )?)
}

/// Runs `insert` (prepared once, in `tx`) with the parameters `params`
/// makes of every row `select` reads from `conn` (`None` skips the row);
/// the number of rows the inserts wrote. SQLite's conversions check the
/// values (an integer too large for the target's `INTEGER` is an error,
/// not a wrap).
///
/// # Errors
/// [`ImportError`]; the transaction should then be dropped.
pub fn copy_rows(
    conn: &rusqlite::Connection,
    tx: &mut postgres::Transaction<'_>,
    select: &str,
    insert: &str,
    mut params: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<Option<Params>>,
) -> Result<u64, ImportError> {
    let insert = tx.prepare(insert)?;
    let mut select = conn.prepare(select)?;
    let mut rows = select.query([])?;
    let mut n = 0;
    while let Some(r) = rows.next()? {
        let Some(values) = params(r)? else {
            continue;
        };
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = values.iter().map(|v| &**v).collect();
        n += tx.execute(&insert, &refs)?;
    }
    Ok(n)
}
