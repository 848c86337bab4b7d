//! Running the HTTP server: [`serve`] builds everything from the configuration;
//! [`run`] serves a router on a listener until a shutdown signal.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use std::num::NonZeroU32;

use axum_server::tls_rustls::RustlsConfig;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::api::{AppState, Limits, Security, router};
use crate::auth::Auth;
use crate::clock::SystemClock;
use crate::config::{ReclaimBy, ServeConfig};
use crate::reclaim::spawn_sweeper;
use crate::store::{DynamoSettings, DynamoStore};
use crate::transport::{self, Timeouts};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot reach DynamoDB: {0}")]
    Dynamo(String),
    #[error(transparent)]
    Table(#[from] crate::store::TableError),
    #[error("cannot serve on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Serves `state` on `listener` until `shutdown` completes, then stops accepting
/// connections and lets requests in flight finish for at most `grace`.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    serve_on(listener.into_std()?, None, state, shutdown, grace).await
}

/// As [`run`], speaking HTTPS with `tls` on `listener`.
pub async fn run_tls(
    listener: std::net::TcpListener,
    tls: RustlsConfig,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    serve_on(listener, Some(tls), state, shutdown, grace).await
}

/// [`run`] and [`run_tls`].
async fn serve_on(
    listener: std::net::TcpListener,
    tls: Option<RustlsConfig>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let handle = shutdown_handle(&state, shutdown, grace);
    let timeouts = timeouts(&state);
    let app = router(state).into_make_service();
    listener.set_nonblocking(true)?;
    // HTTP/1 only: a connection that may turn out to be HTTP/2 costs several times the
    // memory of one that cannot, and an idle keep-alive connection should cost little.
    match tls {
        None => {
            let server = axum_server::from_tcp(listener)?.handle(handle);
            transport::configure(server.http1_only(), timeouts)
                .serve(app)
                .await
        }
        Some(tls) => {
            let server = axum_server::from_tcp_rustls(listener, tls)?.handle(handle);
            transport::configure(server.http1_only(), timeouts)
                .serve(app)
                .await
        }
    }
}

fn timeouts(state: &AppState) -> Timeouts {
    Timeouts {
        header: state.limits.header_timeout,
        idle: state.limits.idle_timeout,
    }
}

/// A handle that, once `shutdown` completes, answers waiters 503 and stops the
/// server, letting requests in flight finish for at most `grace`.
fn shutdown_handle(
    state: &AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> axum_server::Handle<std::net::SocketAddr> {
    let handle = axum_server::Handle::new();
    let stopping = handle.clone();
    let waiters = state.waiters.clone();
    let semaphore_waiters = state.semaphore_waiters.clone();
    let group_waiters = state.group_waiters.clone();
    let watches = state.watches.clone();
    let elections = state.elections.clone();
    let listings = state.listings.clone();
    let semaphore_watches = state.semaphore_watches.clone();
    tokio::spawn(async move {
        shutdown.await;
        waiters.close();
        watches.close();
        listings.close();
        semaphore_watches.close();
        elections.close();
        semaphore_waiters.close();
        group_waiters.close();
        stopping.graceful_shutdown(Some(grace));
    });
    handle
}

/// The URL a user can open for a server listening on `addr`: `localhost` for an
/// address of every interface.
fn serving_url(scheme: &str, addr: std::net::SocketAddr) -> String {
    let host = match addr.ip() {
        ip if ip.is_unspecified() => "localhost".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("{scheme}://{host}:{}/", addr.port())
}

/// The server's limits, as `config` sets them.
fn limits(config: &ServeConfig) -> Limits {
    Limits {
        request_timeout: config.request_timeout,
        max_concurrent: config.max_concurrent_requests,
        max_waiters_per_lock: config.max_waiters_per_lock as usize,
        header_timeout: config.header_timeout,
        idle_timeout: config.idle_timeout,
        watch: crate::watch::WatchSettings {
            interval: config.watch_interval,
            list_interval: config.watch_list_interval,
            ..crate::watch::WatchSettings::default()
        },
        ..Limits::default()
    }
}

/// The certificate and key to speak HTTPS with, when `config` names them.
async fn tls(config: &ServeConfig) -> Result<Option<RustlsConfig>, StartError> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    RustlsConfig::from_pem_file(cert, key)
        .await
        .map(Some)
        .map_err(|err| {
            StartError::Config(format!(
                "cannot use the certificate {} with the key {}: {err}",
                cert.display(),
                key.display()
            ))
        })
}

/// Starts the server described by `config` and serves until SIGINT or SIGTERM.
pub async fn serve(config: ServeConfig) -> Result<(), StartError> {
    let ttl = config.ttl_bounds().map_err(|e| StartError::Config(e.0))?;
    // The configuration is checked before DynamoDB is asked anything.
    if config.reclaim_by == ReclaimBy::Ttl && config.reclaim_after.0.is_none() {
        return Err(StartError::Config(
            "FENCELOCK_RECLAIM_BY=ttl needs a reclaim delay, and FENCELOCK_RECLAIM_AFTER is off: give one (7d), or set FENCELOCK_RECLAIM_BY=scan".into(),
        ));
    }
    if config.request_timeout <= config.max_wait {
        return Err(StartError::Config(format!(
            "FENCELOCK_REQUEST_TIMEOUT ({}) must be longer than FENCELOCK_MAX_WAIT ({})",
            crate::domain::format_duration(config.request_timeout),
            crate::domain::format_duration(config.max_wait)
        )));
    }
    let settings = DynamoSettings {
        endpoint: config.dynamodb_endpoint.clone(),
        region: config.region.clone(),
        timeout: config.dynamodb_timeout,
        clock_check: config.clock_check,
        ..DynamoSettings::default()
    };
    let store = DynamoStore::connect(
        &settings,
        &config.table,
        Arc::new(SystemClock),
        config.clock_skew,
    )
    .await
    .map_err(StartError::Dynamo)?
    .with_lock_delay(config.lock_delay);
    if config.create_table {
        store.ensure_table().await?;
    }
    let kind = store.check_table().await?;
    if kind == crate::store::TableKind::StronglyConsistentGlobal {
        tracing::warn!(table = %config.table, "the table is a global table with multi-Region strong consistency: it has no transactions, so lock groups are answered 501 unsupported");
    }
    let store = store.on_table(kind);
    let store = match (config.reclaim_by, config.reclaim_after.0) {
        (ReclaimBy::Scan, _) | (ReclaimBy::Ttl, None) => store,
        (ReclaimBy::Ttl, Some(_)) if kind == crate::store::TableKind::StronglyConsistentGlobal => {
            return Err(StartError::Config(
                "FENCELOCK_RECLAIM_BY=ttl cannot be used on a global table with multi-Region strong consistency, which does not support TTL (AWS, How DynamoDB global tables work): set FENCELOCK_RECLAIM_BY=scan".into(),
            ));
        }
        (ReclaimBy::Ttl, Some(after)) => {
            store.check_ttl(config.create_table).await?;
            // No lease a write grants can still be live (nor within the takeover
            // margins) when its record may go.
            store.with_purge_after(after + config.max_ttl + config.clock_skew + config.lock_delay)
        }
    };
    let security = security(&config)?;
    let state = AppState::new(store, ttl, config.max_wait, config.max_body_bytes())
        .with_limits(limits(&config))
        .with_security(security)
        .with_request_log(config.request_log);
    // The state's store: its deletes reach the watches at once.
    let sweeper = config
        .reclaim_after
        .0
        .filter(|_| config.reclaim_by == ReclaimBy::Scan)
        .map(|after| spawn_sweeper(state.store.clone(), after));
    let tls = tls(&config).await?;
    let addr = config.listen_addr();
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        url = %serving_url(scheme, addr),
        listen = %addr,
        table = %config.table,
        endpoint = config.dynamodb_endpoint.as_deref().unwrap_or("AWS"),
        reclaim_after = config
            .reclaim_after
            .0
            .map_or_else(|| "off".to_owned(), crate::domain::human_duration),
        reclaim_by = %config.reclaim_by,
        lock_delay = crate::domain::human_duration(config.lock_delay),
        clock_skew = crate::domain::human_duration(config.clock_skew),
        request_log = %config.request_log,
        "fencelock is serving"
    );
    if config.auth_file.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "an open server (no FENCELOCK_AUTH_FILE) on an address other machines can reach: anyone who reaches it may take and release any lock"
        );
    }
    let served = match tls {
        Some(tls) => {
            let listener = listener
                .into_std()
                .map_err(|source| StartError::Listen { addr, source })?;
            run_tls(
                listener,
                tls,
                state,
                shutdown_signal(),
                config.shutdown_grace,
            )
            .await
        }
        None => run(listener, state, shutdown_signal(), config.shutdown_grace).await,
    };
    if let Some(sweeper) = sweeper {
        sweeper.abort();
    }
    served.map_err(|source| StartError::Listen { addr, source })?;
    tracing::info!("fencelock stopped");
    Ok(())
}

/// Who may call, from the configuration: the token file is read now (a file that
/// does not read stops the start), and again on every SIGHUP.
fn security(config: &ServeConfig) -> Result<Security, StartError> {
    let auth = match &config.auth_file {
        Some(path) => {
            let auth = Arc::new(Auth::load(path).map_err(|e| StartError::Config(e.to_string()))?);
            tracing::info!(file = %path.display(), tokens = auth.len(), "lock routes need a bearer token");
            if auth.is_empty() {
                tracing::warn!(file = %path.display(), "the token file lists no token: every lock request is refused");
            }
            spawn_reload_on_hangup(auth.clone());
            Some(auth)
        }
        None => {
            tracing::warn!(
                "no FENCELOCK_AUTH_FILE: the server runs open; without FENCELOCK_LISTEN it listens on this machine only ({})",
                crate::config::OPEN_LISTEN
            );
            None
        }
    };
    Ok(Security {
        auth,
        metrics_token: config
            .metrics_token
            .clone()
            .filter(|token| !token.is_empty()),
        require_nonce: config.require_nonce,
        allow_admin_without_auth: config.allow_admin_without_auth,
        token_rate: NonZeroU32::new(config.token_rate),
        max_waiters_per_token: config.max_waiters_per_token as usize,
    })
}

/// Reads the token file again on each SIGHUP; requests keep being served throughout,
/// each under the tokens in force when it arrived.
fn spawn_reload_on_hangup(auth: Arc<Auth>) {
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(err) => {
            tracing::error!(%err, "cannot listen for SIGHUP: the token file will not be read again");
            return;
        }
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match auth.reload() {
                Ok(tokens) => {
                    tracing::info!(file = %auth.path().display(), tokens, "token file read again")
                }
                Err(err) => {
                    tracing::error!(%err, "token file not read again; the tokens in force stay")
                }
            }
        }
    });
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: no new requests, finishing those in flight");
}
