//! The downstream store the lock mixes write to while they believe they hold a lock:
//! a PostgreSQL server of the run's own, written by docs/fencing.md's first recipe
//! (`fencelock_advance` in the transaction of the guarded write, which refuses a fence
//! below one already written for the name). At the end the checker reads back what
//! PostgreSQL holds, not what the clients were told.
//!
//! Each write inserts one row into `torture_writes`. Its `id` (a sequence) is taken
//! inside the transaction after `fencelock_advance` has locked the name's fence row,
//! so for one name the order of the ids is the order in which the guarded writes
//! committed; an unconditional write (the broken recipe) takes its id when it
//! inserts.
//!
//! Without PostgreSQL's binaries the run says so and keeps the same rule in a map of
//! its own (the summary names the store it used).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

#[path = "../../tests/support/postgres.rs"]
mod postgres;

use crate::workload::Op;

/// How a holder writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// The recipe: the fence advanced in the write's own transaction.
    Guarded,
    /// The racy recipe `--break check-then-write` gives paused holders: they asked
    /// fencelock whether their fence held before pausing, and write without a
    /// condition.
    Unconditional,
}

/// What the store said of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    /// Refused as stale: a higher fence was written for the name.
    Refused,
    /// The store failed otherwise (it is not faulted: a failure is reported).
    Failed,
}

impl Verdict {
    pub fn outcome(self) -> &'static str {
        match self {
            Verdict::Accepted => "accepted",
            Verdict::Refused => "rejected",
            Verdict::Failed => "failed",
        }
    }
}

pub enum Downstream {
    Postgres {
        pool: Pool,
        server: postgres::Postgres,
    },
    Memory(Mutex<Memory>),
}

/// A row of `torture_writes`.
struct Row {
    id: u64,
    name: String,
    fence: u64,
    client: usize,
    kind: String,
}

/// The map's rows, and the highest fence the recipe wrote per name.
#[derive(Default)]
pub struct Memory {
    rows: Vec<Row>,
    highest: HashMap<String, u64>,
}

const SCHEMA: &str = "CREATE TABLE torture_writes (
    id        bigserial PRIMARY KEY,
    lock_name text NOT NULL,
    fence     bigint NOT NULL,
    client    int NOT NULL,
    kind      text NOT NULL
)";

impl Downstream {
    /// PostgreSQL with its data under `dir`, or the map, saying why, when it cannot
    /// be started here. `required` (the check-then-write control) refuses the map.
    pub async fn start(dir: &Path, required: bool) -> Result<Downstream, String> {
        match postgres::bin_dir() {
            Err(why) if !required => {
                println!("torture: ** no PostgreSQL downstream: {why}; the run writes to a map **");
                return Ok(Downstream::Memory(Mutex::default()));
            }
            Err(why) => return Err(why),
            Ok(_) => {}
        }
        // Installed but failing to start is a failure, not a reason to fall back.
        let server = tokio::task::block_in_place(|| postgres::Postgres::start(dir))?;
        let config: tokio_postgres::Config =
            server.url("postgres").parse().map_err(|e| format!("{e}"))?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .build()
            .map_err(|e| e.to_string())?;
        // The server may still be finishing its start-up after it listens.
        let mut tries = 0;
        let db = loop {
            match pool.get().await {
                Ok(db) => break db,
                Err(_) if tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => return Err(format!("cannot connect to PostgreSQL: {e}")),
            }
        };
        let recipe = postgres::recipe_sql();
        db.batch_execute(&recipe[0])
            .await
            .map_err(|e| format!("the fencing page's SQL: {e}"))?;
        db.batch_execute(SCHEMA).await.map_err(|e| e.to_string())?;
        Ok(Downstream::Postgres { pool, server })
    }

    /// What the summary names: the store and where it runs.
    pub fn describe(&self) -> String {
        match self {
            Downstream::Postgres { server, .. } => format!(
                "PostgreSQL on 127.0.0.1:{} ({})",
                server.port,
                server.dir.display()
            ),
            Downstream::Memory(_) => "a map in the torture process (no PostgreSQL here)".into(),
        }
    }

    /// Writes a row for `client` with `fence`.
    pub async fn write(
        &self,
        name: &str,
        fence: u64,
        client: usize,
        kind: &str,
        how: Write,
    ) -> Verdict {
        match self {
            Downstream::Postgres { pool, .. } => {
                match write_postgres(pool, name, fence, client, kind, how).await {
                    Ok(true) => Verdict::Accepted,
                    Ok(false) => Verdict::Refused,
                    Err(why) => {
                        eprintln!("torture: a downstream write failed: {why}");
                        Verdict::Failed
                    }
                }
            }
            Downstream::Memory(state) => {
                let mut state = state.lock().unwrap();
                let seen = state.highest.entry(name.to_owned()).or_insert(0);
                if how == Write::Guarded && fence < *seen {
                    return Verdict::Refused;
                }
                *seen = (*seen).max(fence);
                let id = state.rows.len() as u64 + 1;
                state.rows.push(Row {
                    id,
                    name: name.to_owned(),
                    fence,
                    client,
                    kind: kind.to_owned(),
                });
                Verdict::Accepted
            }
        }
    }

    /// The highest fence the recipe has written for `name` (0 for none).
    pub async fn highest(&self, name: &str) -> u64 {
        match self {
            Downstream::Postgres { pool, .. } => {
                let Ok(db) = pool.get().await else { return 0 };
                db.query_opt(
                    "SELECT fence FROM fencelock_fences WHERE lock_name = $1",
                    &[&name],
                )
                .await
                .ok()
                .flatten()
                .map_or(0, |row| row.get::<_, i64>(0) as u64)
            }
            Downstream::Memory(state) => state
                .lock()
                .unwrap()
                .highest
                .get(name)
                .copied()
                .unwrap_or(0),
        }
    }

    /// Every row the store holds, in the order it took them, as operations of kind
    /// `stored` (the outcome is the kind of write that made the row; `seq` its place).
    pub async fn stored(&self) -> Result<Vec<Op>, String> {
        let rows: Vec<Row> = match self {
            Downstream::Postgres { pool, .. } => {
                let db = pool.get().await.map_err(|e| e.to_string())?;
                db.query(
                    "SELECT id, lock_name, fence, client, kind FROM torture_writes ORDER BY id",
                    &[],
                )
                .await
                .map_err(|e| e.to_string())?
                .iter()
                .map(|row| Row {
                    id: row.get::<_, i64>(0) as u64,
                    name: row.get(1),
                    fence: row.get::<_, i64>(2) as u64,
                    client: row.get::<_, i32>(3) as usize,
                    kind: row.get(4),
                })
                .collect()
            }
            Downstream::Memory(state) => std::mem::take(&mut state.lock().unwrap().rows),
        };
        Ok(rows
            .into_iter()
            .map(|row| Op {
                client: row.client,
                kind: "stored".into(),
                name: row.name,
                fence: Some(row.fence),
                start: 0,
                end: 0,
                outcome: row.kind,
                ttl_ms: 0,
                body: None,
                seq: Some(row.id),
                limit: None,
            })
            .collect())
    }
}

/// One write: `Ok(false)` when `fencelock_advance` refused the fence (SQLSTATE FL409).
async fn write_postgres(
    pool: &Pool,
    name: &str,
    fence: u64,
    client: usize,
    kind: &str,
    how: Write,
) -> Result<bool, String> {
    let mut db = pool.get().await.map_err(|e| e.to_string())?;
    let tx = db.transaction().await.map_err(|e| e.to_string())?;
    let fence = fence as i64;
    if how == Write::Guarded
        && let Err(err) = tx
            .execute("SELECT fencelock_advance($1, $2)", &[&name, &fence])
            .await
    {
        return match err.code().map(|code| code.code()) {
            Some("FL409") => Ok(false),
            _ => Err(err.to_string()),
        };
    }
    tx.execute(
        "INSERT INTO torture_writes (lock_name, fence, client, kind) VALUES ($1, $2, $3, $4)",
        &[&name, &fence, &(client as i32), &kind],
    )
    .await
    .map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(true)
}
