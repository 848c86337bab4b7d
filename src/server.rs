//! Running the HTTP server: [`serve`] builds everything from the configuration;
//! [`run`] serves a router on a listener until a shutdown signal.

use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::api::{AppState, Limits, router};
use crate::clock::SystemClock;
use crate::config::ServeConfig;
use crate::reclaim::spawn_sweeper;
use crate::store::{DynamoSettings, DynamoStore, connect, ensure_table};

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
    let waiters = state.waiters.clone();
    let (stopping, stopped) = tokio::sync::oneshot::channel();
    let shutdown = async move {
        shutdown.await;
        // Waiting requests are answered now rather than held until their wait ends.
        waiters.close();
        let _ = stopping.send(());
    };
    let serving = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .into_future();
    let grace_over = async move {
        if stopped.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        served = serving => served,
        () = grace_over => {
            tracing::warn!(grace = ?grace, "requests still in flight after the shutdown grace; stopping anyway");
            Ok(())
        }
    }
}

/// Starts the server described by `config` and serves until SIGINT or SIGTERM.
pub async fn serve(config: ServeConfig) -> Result<(), StartError> {
    let ttl = config.ttl_bounds().map_err(|e| StartError::Config(e.0))?;
    let client = connect(&DynamoSettings {
        endpoint: config.dynamodb_endpoint.clone(),
        region: config.region.clone(),
        timeout: config.dynamodb_timeout,
    })
    .await
    .map_err(StartError::Dynamo)?;
    if config.create_table {
        ensure_table(&client, &config.table).await?;
    }
    let store = DynamoStore::new(
        client,
        &config.table,
        Arc::new(SystemClock),
        config.clock_skew,
    )
    .with_lock_delay(config.lock_delay);
    let sweeper = config
        .reclaim_after
        .0
        .map(|after| spawn_sweeper(store.clone(), after));
    if config.request_timeout <= config.max_wait {
        return Err(StartError::Config(format!(
            "FENCELOCK_REQUEST_TIMEOUT ({}) must be longer than FENCELOCK_MAX_WAIT ({})",
            crate::domain::format_duration(config.request_timeout),
            crate::domain::format_duration(config.max_wait)
        )));
    }
    let limits = Limits {
        request_timeout: config.request_timeout,
        max_concurrent: config.max_concurrent_requests,
    };
    let state =
        AppState::new(store, ttl, config.max_wait, config.max_body_bytes()).with_limits(limits);
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
    tracing::info!(
        listen = %config.listen,
        table = %config.table,
        endpoint = config.dynamodb_endpoint.as_deref().unwrap_or("AWS"),
        reclaim_after = ?config.reclaim_after.0,
        lock_delay = ?config.lock_delay,
        "fencelock is serving"
    );
    let served = run(listener, state, shutdown_signal(), config.shutdown_grace).await;
    if let Some(sweeper) = sweeper {
        sweeper.abort();
    }
    served.map_err(|source| StartError::Listen {
        addr: config.listen,
        source,
    })?;
    tracing::info!("fencelock stopped");
    Ok(())
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
