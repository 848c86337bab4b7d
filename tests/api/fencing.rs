//! The fencing recipes of docs/fencing.md, against the real stores: a PostgreSQL this
//! test starts (Debian's `postgresql`, `initdb` and `postgres` on 127.0.0.1, run as
//! the `postgres` user when the tests run as root, which PostgreSQL requires) and
//! DynamoDB Local. The SQL is read from the page itself, so the page cannot drift from
//! what is tested. Without PostgreSQL's binaries these tests fail, saying so; `make
//! test` skips them there, and says that too.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

use crate::helpers::{TestApp, dynamodb_local};

/// The page's SQL blocks, in order.
fn page_sql() -> Vec<String> {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/fencing.md"))
        .expect("docs/fencing.md");
    page.split("```sql\n")
        .skip(1)
        .map(|block| block.split("```").next().unwrap_or_default().to_owned())
        .collect()
}

/// PostgreSQL's server binaries: the newest under /usr/lib/postgresql.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect(
        "PostgreSQL is not installed (Debian: apt-get install postgresql); \
         `make test` skips these tests without it",
    )
}

struct Postgres {
    port: u16,
    _server: Child,
}

/// A command run as the `postgres` user when this process is root.
fn as_owner(program: &Path) -> Command {
    if nix::unistd::geteuid().is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// A data directory the server's user owns: under target/ when that user can reach
/// it, else in the system's temporary directory (a checkout in a home directory of
/// mode 0700 is out of its reach).
fn data_dir() -> PathBuf {
    let root = nix::unistd::geteuid().is_root();
    let under_target = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target"))
        .join(format!("postgres-test-{}", std::process::id()));
    let candidates = [
        under_target,
        std::env::temp_dir().join(format!("fencelock-postgres-{}", std::process::id())),
    ];
    for dir in candidates {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a data directory");
        if !root {
            return dir;
        }
        let owner = nix::unistd::User::from_name("postgres")
            .ok()
            .flatten()
            .expect("the postgres user that Debian's package creates");
        nix::unistd::chown(&dir, Some(owner.uid), Some(owner.gid)).expect("chown");
        let reachable = Command::new("runuser")
            .args(["-u", "postgres", "--", "test", "-w"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if reachable {
            return dir;
        }
        eprintln!(
            "{} is out of the postgres user's reach; trying elsewhere",
            dir.display()
        );
    }
    panic!("no data directory the postgres user can write");
}

/// One PostgreSQL for the whole test binary, stopped when it exits.
fn postgres() -> u16 {
    static SERVER: OnceLock<Postgres> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let bin = bin_dir();
            let dir = data_dir();
            let data = dir.join("data");
            let made = as_owner(&bin.join("initdb"))
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
                .arg(&data)
                .stdout(Stdio::null())
                .status()
                .expect("initdb runs");
            assert!(made.success(), "initdb failed");
            let port = {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                listener.local_addr().unwrap().port()
            };
            let log = std::fs::File::create(dir.join("postgres.log")).unwrap();
            // As DynamoDB Local is run: the server stops when this process's end
            // closes the shell's stdin.
            let server = as_owner(Path::new("/bin/sh"))
                .arg("-c")
                .arg(format!(
                    "{} -D {} -h 127.0.0.1 -p {port} -k {} -F & pid=$!; cat >/dev/null; kill $pid",
                    bin.join("postgres").display(),
                    data.display(),
                    dir.display()
                ))
                .stdin(Stdio::piped())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("postgres starts");
            let started = Instant::now();
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "PostgreSQL did not listen; see {}",
                    dir.join("postgres.log").display()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            Postgres {
                port,
                _server: server,
            }
        })
        .port
}

/// A connection to a database of its own, with the page's fence table and function.
async fn database() -> Client {
    let port = postgres();
    let connect = |db: &str| {
        format!("host=127.0.0.1 port={port} user=postgres dbname={db} connect_timeout=10")
    };
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
    let port = postgres();
    let (mut stale, connection) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=postgres dbname={db_name}"),
        NoTls,
    )
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
