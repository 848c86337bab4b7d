//! DynamoDB Local for the API tests and the benchmarks (included by both with
//! `#[path]`): started on a free port from the jar `make tools` installs, stopped
//! when the process that started it exits, however it exits.
//!
//! The one file outside `src/store` that speaks DynamoDB's SDK: [`Raw`] writes what
//! fencelock never would (a malformed item, a deleted record) and sends the bare
//! requests the benchmark measures fencelock against.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use fencelock::clock::Clock;
use fencelock::store::{AccessKey, DynamoSettings, DynamoStore};

/// Starts an in-memory DynamoDB Local, logging to `target/{log_name}`, and returns
/// its endpoint once it listens.
pub fn start(log_name: &str) -> String {
    start_with_pid(log_name).0
}

/// As [`start`], with the process id of DynamoDB Local, to pause it with SIGSTOP.
///
/// The port is free when it is chosen but not reserved, so something else may bind
/// it before Java does; DynamoDB Local then exits. It counts as started only once
/// its own process holds the listening socket, and is started again on another port
/// when it exits first (a connect alone could reach another process's listener).
#[allow(dead_code)] // Not every includer pauses DynamoDB Local.
pub fn start_with_pid(log_name: &str) -> (String, u32) {
    let root = env!("CARGO_MANIFEST_DIR");
    for _attempt in 0..5 {
        let port = free_port();
        let log = File::create(format!("{root}/target/{log_name}")).expect("a log file");
        let pid_file = format!("{root}/target/{log_name}.pid");
        let _ = std::fs::remove_file(&pid_file);
        // The shell stops DynamoDB Local when its stdin closes: when this process exits.
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{root}/scripts/dynamodb-local.sh {port} & pid=$!; echo $pid > {pid_file}; \
                 cat >/dev/null; kill $pid"
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("DynamoDB Local starts (are Java and `make tools` installed?)");
        // Keep the stdin pipe open for the life of the process.
        std::mem::forget(child);
        if let Some(pid) = wait_until_listening(&pid_file, port, log_name) {
            return (format!("http://127.0.0.1:{port}"), pid);
        }
    }
    panic!("DynamoDB Local exited before listening, five times; see target/{log_name}");
}

/// A port free now that no other DynamoDB Local of this process has been given.
fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        if GIVEN.lock().expect("ports").insert(port) {
            return port;
        }
    }
}

/// Waits until the process in `pid_file` listens on `port` (its pid), or exits
/// (`None`).
fn wait_until_listening(pid_file: &str, port: u16, log_name: &str) -> Option<u32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "DynamoDB Local did not listen on port {port}; see target/{log_name}"
        );
        let pid = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok());
        if let Some(pid) = pid {
            match listener_of(pid, port) {
                Listener::Ours => return Some(pid),
                Listener::Exited => return None,
                Listener::NotYet => {}
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Who holds a listening socket on a port, as far as one process is concerned.
#[derive(Debug, PartialEq)]
pub enum Listener {
    Ours,
    NotYet,
    Exited,
}

/// Whether process `pid` holds a socket listening on TCP `port`, read from /proc.
/// Where there is no /proc, a successful connect has to do.
pub fn listener_of(pid: u32, port: u16) -> Listener {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
    let tables = ["/proc/net/tcp", "/proc/net/tcp6"].map(std::fs::read_to_string);
    if tables.iter().all(Result::is_err) {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        return match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(_) => Listener::Ours,
            Err(_) => Listener::NotYet,
        };
    }
    // The state follows the command name in parentheses; Z is a zombie.
    match stat {
        Ok(stat)
            if !stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')) => {}
        _ => return Listener::Exited,
    }
    let inodes: Vec<String> = tables
        .iter()
        .flatten()
        .flat_map(|table| table.lines().skip(1))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit_once(':')?.1;
            let inode = fields.get(9)?;
            let listening = fields.get(3) == Some(&"0A");
            (listening && u16::from_str_radix(local_port, 16).ok() == Some(port))
                .then(|| format!("socket:[{inode}]"))
        })
        .collect();
    let holds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .any(|target| {
            inodes
                .iter()
                .any(|inode| target.as_os_str() == inode.as_str())
        });
    if holds {
        Listener::Ours
    } else {
        Listener::NotYet
    }
}

/// How to reach DynamoDB Local at `endpoint`, with the fixed credentials it accepts.
/// The clock check is off: tests move a server's clock to let leases run out, which
/// the check would rightly call a clock gone wrong (tests of the check turn it on).
pub fn settings(endpoint: &str) -> DynamoSettings {
    DynamoSettings {
        endpoint: Some(endpoint.to_owned()),
        region: Some("us-east-1".into()),
        access_key: Some(AccessKey {
            id: "test".into(),
            secret: "test".into(),
        }),
        clock_check: false,
        ..DynamoSettings::default()
    }
}

/// A store on `table` of DynamoDB Local at `endpoint`, with a skew margin of `skew`.
pub async fn store(
    endpoint: &str,
    table: &str,
    clock: Arc<dyn Clock>,
    skew: Duration,
) -> DynamoStore {
    DynamoStore::connect(&settings(endpoint), table, clock, skew)
        .await
        .expect("DynamoDB Local's settings are complete")
}

/// As [`store`], comparing the store's clock with DynamoDB Local's `Date` headers.
pub async fn checked_store(
    endpoint: &str,
    table: &str,
    clock: Arc<dyn Clock>,
    skew: Duration,
) -> DynamoStore {
    let settings = DynamoSettings {
        clock_check: true,
        ..settings(endpoint)
    };
    DynamoStore::connect(&settings, table, clock, skew)
        .await
        .expect("DynamoDB Local's settings are complete")
}

/// Requests to `table` that go around fencelock.
pub struct Raw {
    client: Client,
    table: String,
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

impl Raw {
    pub fn new(endpoint: &str, table: &str) -> Self {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "raw"))
            .build();
        Self {
            client: Client::from_conf(config),
            table: table.to_owned(),
        }
    }

    /// Creates this table with a partition key `key` (S), as a user might by mistake.
    #[allow(dead_code)] // The start-up check's tests'.
    pub async fn create_keyed(&self, key: &str) {
        use aws_sdk_dynamodb::types::{
            AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        };
        self.client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(key)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(key)
                    .key_type(KeyType::Hash)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .expect("the table is created");
    }

    /// Writes an item of string attributes, whatever they are.
    pub async fn put_strings(&self, attributes: &[(&str, &str)]) {
        let mut put = self.client.put_item().table_name(&self.table);
        for (name, value) in attributes {
            put = put.item(*name, s(*value));
        }
        put.send().await.expect("a raw item is written");
    }

    /// Puts an item `name` with `body` and `fence` on `condition` (about `fence`, with
    /// `:fence` the one written), as docs/fencing.md's DynamoDB recipe does; answers
    /// whether DynamoDB accepted it.
    #[allow(dead_code)] // The fencing tests'.
    pub async fn put_fenced(&self, name: &str, body: &str, fence: u64, condition: &str) -> bool {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("name", s(name))
            .item("body", s(body))
            .item("fence", n(fence))
            .condition_expression(condition)
            .expression_attribute_values(":fence", n(fence))
            .send()
            .await;
        match put {
            Ok(_) => true,
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                false
            }
            Err(err) => panic!("the put failed: {err:?}"),
        }
    }

    /// The item `name`, read strongly consistently.
    async fn item(&self, name: &str) -> Option<std::collections::HashMap<String, AttributeValue>> {
        self.client
            .get_item()
            .table_name(&self.table)
            .key("name", s(name))
            .consistent_read(true)
            .send()
            .await
            .expect("a raw read")
            .item
    }

    /// The string attribute `attribute` of the item `name`, read strongly consistently.
    #[allow(dead_code)] // The fencing tests'.
    pub async fn get_string(&self, name: &str, attribute: &str) -> Option<String> {
        self.item(name).await?.get(attribute)?.as_s().ok().cloned()
    }

    /// The number attribute `attribute` of the item `name`, read strongly
    /// consistently; `None` without the item or the attribute.
    #[allow(dead_code)] // The cleanup tests'.
    pub async fn get_number(&self, name: &str, attribute: &str) -> Option<i64> {
        self.item(name)
            .await?
            .get(attribute)?
            .as_n()
            .ok()?
            .parse()
            .ok()
    }

    /// Whether the item `name` exists, read strongly consistently.
    #[allow(dead_code)] // The cleanup tests'.
    pub async fn exists(&self, name: &str) -> bool {
        self.item(name).await.is_some()
    }

    /// Deletes the record of `name`.
    pub async fn delete(&self, name: &str) {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("name", s(name))
            .send()
            .await
            .expect("a raw item is deleted");
    }

    #[allow(dead_code)] // The benchmark's floor.
    /// fencelock's acquire, as the store sends it: one conditional UpdateItem. Answers
    /// the fence granted, as the store works it out from the old item.
    pub async fn floor_acquire(&self, name: &str, nonce: &str) -> Option<u64> {
        let now_micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64;
        let now = now_micros / 1000;
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("name", s(name))
            .update_expression(
                "SET #version = if_not_exists(#version, :version_zero) + :version_step, \
                 #fence = if_not_exists(#fence, :floor) + :one, #nonce = :nonce, \
                 #token = :token, #acquired_at = :now, #heartbeat_at = :now, \
                 #expires_at = :expires_at, #ttl_ms = :ttl_ms \
                 REMOVE #released_at, #release_asked_at, #force_released_at, #owner, #metadata, \
                 #purge_at",
            )
            .condition_expression(
                "(attribute_not_exists(#fence) OR #expires_at < :takeover OR #nonce = :nonce) \
                 AND (attribute_not_exists(#reserved_by) OR #reserved_until < :now \
                      OR #reserved_by = :nonce OR (#nonce = :nonce AND #expires_at >= :takeover)) \
                 AND attribute_not_exists(#disabled_at)",
            )
            .expression_attribute_names("#version", "version")
            .expression_attribute_names("#purge_at", "purge_at")
            .expression_attribute_names("#release_asked_at", "release_asked_at")
            .expression_attribute_names("#force_released_at", "force_released_at")
            .expression_attribute_names("#disabled_at", "disabled_at")
            .expression_attribute_values(":version_zero", n(0))
            .expression_attribute_values(":version_step", n(1))
            .expression_attribute_names("#fence", "fence")
            .expression_attribute_names("#nonce", "nonce")
            .expression_attribute_names("#token", "token")
            .expression_attribute_names("#acquired_at", "acquired_at")
            .expression_attribute_names("#heartbeat_at", "heartbeat_at")
            .expression_attribute_names("#expires_at", "expires_at")
            .expression_attribute_names("#ttl_ms", "ttl_ms")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#metadata", "metadata")
            .expression_attribute_names("#released_at", "released_at")
            .expression_attribute_names("#reserved_by", "reserved_by")
            .expression_attribute_names("#reserved_until", "reserved_until")
            .expression_attribute_values(":floor", n(now_micros))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":nonce", s(nonce))
            .expression_attribute_values(":token", s(format!("{:032x}", fastrand::u128(..))))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":expires_at", n(now + 30_000))
            .expression_attribute_values(":ttl_ms", n(30_000))
            .expression_attribute_values(":takeover", n(now - 500))
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_consumed_capacity(aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total)
            .send()
            .await
            .ok()?;
        let old = result
            .attributes()
            .and_then(|item| item.get("fence"))
            .and_then(|fence| fence.as_n().ok()?.parse::<u64>().ok());
        Some(old.unwrap_or(now_micros as u64) + 1)
    }

    #[allow(dead_code)] // The benchmark's floor.
    /// fencelock's release, as the store sends it.
    pub async fn floor_release(&self, name: &str, fence: u64) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let _ = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("name", s(name))
            .update_expression(
                "SET #version = if_not_exists(#version, :version_zero) + :version_step, \
                 #expires_at = :zero, #released_at = :now REMOVE #purge_at",
            )
            .condition_expression("#fence = :holder AND #expires_at <> :zero")
            .expression_attribute_names("#version", "version")
            .expression_attribute_names("#purge_at", "purge_at")
            .expression_attribute_values(":version_zero", n(0))
            .expression_attribute_values(":version_step", n(1))
            .expression_attribute_names("#fence", "fence")
            .expression_attribute_names("#expires_at", "expires_at")
            .expression_attribute_names("#released_at", "released_at")
            .expression_attribute_values(":holder", n(fence))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":now", n(now))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_consumed_capacity(aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total)
            .send()
            .await;
    }
}
