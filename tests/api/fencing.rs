//! The fencing recipes of docs/fencing.md, against the real stores: a PostgreSQL this
//! test starts (Debian's `postgresql`, `initdb` and `postgres` on 127.0.0.1, run as
//! the `postgres` user when the tests run as root, which PostgreSQL requires) and
//! DynamoDB Local. The SQL and the shell job (run by `fencelock run`, with `psql`)
//! are read from the page itself, so the page cannot drift from what is tested. Without PostgreSQL's binaries these tests fail, saying so; `make
//! test` skips them there, and says that too.

use std::sync::OnceLock;
use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use crate::helpers::{TestApp, dynamodb_local};

#[path = "../support/postgres.rs"]
mod postgres;

use postgres::{Postgres, recipe_sql as page_sql};

/// One PostgreSQL for the whole test binary, stopped when it exits.
fn server() -> &'static Postgres {
    static SERVER: OnceLock<Postgres> = OnceLock::new();
    SERVER.get_or_init(|| {
        let under = concat!(env!("CARGO_MANIFEST_DIR"), "/target");
        let preferred =
            std::path::Path::new(under).join(format!("postgres-test-{}", std::process::id()));
        Postgres::start(&preferred)
            .unwrap_or_else(|why| panic!("{why}; `make test` skips these tests without PostgreSQL"))
    })
}

/// A connection to a database of its own, with the page's fence table and function.
async fn database() -> Client {
    let server = server();
    let connect = |db: &str| server.url(db);
    // The server may still be finishing its start-up.
    let (admin, connection) = loop {
        match tokio_postgres::connect(&connect("postgres"), NoTls).await {
            Ok(pair) => break pair,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    tokio::spawn(connection);
    let name = format!("fencing_{}", fastrand::u64(..));
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let (client, connection) = tokio_postgres::connect(&connect(&name), NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client.batch_execute(&page_sql()[0]).await.unwrap();
    client
        .batch_execute("CREATE TABLE backups (day date PRIMARY KEY, tables int NOT NULL)")
        .await
        .unwrap();
    client
}

/// Recipe 1's transaction: advance the fence, then the guarded write.
async fn guarded_write(db: &mut Client, fence: i64, tables: i32) -> Result<(), String> {
    let tx = db.transaction().await.unwrap();
    if let Err(err) = tx
        .execute(
            "SELECT fencelock_advance($1, $2)",
            &[&"nightly-backup", &fence],
        )
        .await
    {
        let code = err.code().map(|c| c.code().to_owned()).unwrap_or_default();
        return Err(code);
    }
    tx.execute(
        "INSERT INTO backups (day, tables) VALUES (current_date, $1) \
         ON CONFLICT (day) DO UPDATE SET tables = EXCLUDED.tables",
        &[&tables],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    Ok(())
}

async fn tables(db: &Client) -> i32 {
    db.query_one("SELECT tables FROM backups", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn postgres_the_fence_table_refuses_a_stale_fence_and_its_writes() {
    let mut db = database().await;
    assert_eq!(guarded_write(&mut db, 41, 10).await, Ok(()));
    // The same holder writing again, and a newer holder.
    assert_eq!(guarded_write(&mut db, 41, 11).await, Ok(()));
    assert_eq!(guarded_write(&mut db, 42, 12).await, Ok(()));
    // The old holder wakes up: refused with FL409, and its write rolled back.
    assert_eq!(guarded_write(&mut db, 41, 99).await, Err("FL409".into()));
    assert_eq!(tables(&db).await, 12);
    let fence: i64 = db
        .query_one("SELECT fence FROM fencelock_fences", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(fence, 42);
}

#[tokio::test]
async fn postgres_a_stale_holder_racing_the_new_one_waits_and_is_refused() {
    let mut newer = database().await;
    guarded_write(&mut newer, 41, 10).await.unwrap();
    let tx = newer.transaction().await.unwrap();
    tx.execute(
        "SELECT fencelock_advance($1, $2)",
        &[&"nightly-backup", &42i64],
    )
    .await
    .unwrap();
    // The stale holder's transaction, on a connection of its own, blocks on the
    // fence row while the newer holder's is open.
    let db_name: String = tx
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    let (mut stale, connection) = tokio_postgres::connect(&server().url(&db_name), NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let racing = tokio::spawn(async move { guarded_write(&mut stale, 41, 99).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!racing.is_finished(), "the stale transaction did not wait");
    tx.execute("UPDATE backups SET tables = 12", &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(racing.await.unwrap(), Err("FL409".into()));
    assert_eq!(tables(&newer).await, 12);
}

#[tokio::test]
async fn postgres_the_fence_column_refuses_a_stale_fence_row_by_row() {
    let db = database().await;
    db.batch_execute(
        "CREATE TABLE reports (id int PRIMARY KEY, body text NOT NULL DEFAULT '');
         INSERT INTO reports (id) VALUES (7);",
    )
    .await
    .unwrap();
    let recipe = &page_sql()[1];
    let (alter, update) = recipe.split_once(";\n").expect("an ALTER and an UPDATE");
    db.batch_execute(alter).await.unwrap();
    let update = update.split("--").next().unwrap().trim();
    let write = |body: &'static str, fence: i64| {
        let db = &db;
        async move { db.execute(update, &[&body, &fence, &7i32]).await.unwrap() }
    };
    assert_eq!(write("new holder", 42).await, 1);
    assert_eq!(write("new holder again", 42).await, 1);
    assert_eq!(
        write("stale holder", 41).await,
        0,
        "a stale fence was written"
    );
    let body: String = db
        .query_one("SELECT body FROM reports WHERE id = 7", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(body, "new holder again");
}

#[tokio::test]
async fn dynamodb_the_fence_condition_refuses_a_stale_fence() {
    let app = TestApp::spawn().await;
    let raw = dynamodb_local::Raw::new(&app.endpoint, &app.table);
    let page =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/fencing.md")).unwrap();
    let condition = "attribute_not_exists(fence) OR fence <= :fence";
    assert!(page.contains(condition), "the page's condition changed");
    // The test table's key is `name`; the recipe's condition is the same.
    assert!(raw.put_fenced("report", "new holder", 42, condition).await);
    assert!(raw.put_fenced("report", "again", 42, condition).await);
    assert!(
        !raw.put_fenced("report", "stale holder", 41, condition)
            .await
    );
    assert_eq!(
        raw.get_string("report", "body").await.as_deref(),
        Some("again")
    );
}

/// The page's shell job, `backup.sh`, as written.
fn shell_job() -> String {
    let page =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/fencing.md")).unwrap();
    let start = page
        .find("```sh\n#!/bin/sh\n# backup.sh")
        .expect("the page's shell job")
        + 6;
    page[start..][..page[start..].find("```").unwrap()].to_owned()
}

#[tokio::test]
async fn postgres_the_shell_job_under_fencelock_run_writes_and_a_stale_one_is_refused() {
    let db = database().await;
    let db_name: String = db
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    let url = format!(
        "postgresql://postgres@127.0.0.1:{}/{db_name}",
        server().port
    );
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("backup.sh");
    std::fs::write(&script, shell_job()).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let app = TestApp::spawn().await;
    let mut run = crate::helpers::fencelock(&app.base);
    run.env("DATABASE_URL", &url).current_dir(dir.path()).args([
        "run",
        "nightly-backup",
        "--ttl",
        "2m",
        "--",
        "./backup.sh",
    ]);
    let done = crate::helpers::finished(run.spawn().unwrap()).await;
    assert_eq!(done.code, Some(0), "{done:?}");
    assert_eq!(tables(&db).await, 120);
    let fence: i64 = db
        .query_one(
            "SELECT fence FROM fencelock_fences WHERE lock_name = 'nightly-backup'",
            &[],
        )
        .await
        .unwrap()
        .get(0);

    // A holder of the fence before it, waking up late: psql stops with 3, nothing lands.
    db.batch_execute("UPDATE backups SET tables = 7")
        .await
        .unwrap();
    let stale = tokio::process::Command::new("/bin/sh")
        .arg(&script)
        .env("DATABASE_URL", &url)
        .env("FENCELOCK_NAME", "nightly-backup")
        .env("FENCELOCK_FENCE", (fence - 1).to_string())
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(stale.status.code(), Some(3), "{stale:?}");
    assert!(
        String::from_utf8_lossy(&stale.stderr).contains("stale fence"),
        "{stale:?}"
    );
    assert_eq!(tables(&db).await, 7, "the stale job's write landed");
}
