//! [`Client`]: the fencelock HTTP API as typed calls, used by the `fencelock` command
//! line and the tests. One `reqwest` client, a timeout on every request, and every
//! answer that is not a success turned into a [`ClientError`] that says what it means
//! for the holder (held, lost, unavailable, …) rather than which status it had.

use std::time::Duration;

use reqwest::header::RETRY_AFTER;
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use crate::api::{
    AdminDone, ElectionView, ErrorBody, GroupReleasedLock, Leader, LockPage, LockView, Released,
    SlotDone,
};
use crate::api::{ErrorCode, FENCE_HEADER, NONCE_HEADER};
use crate::api::{GroupReleased, GroupView};
use crate::domain::{Fence, LockName, format_duration};

/// The root of the lock-group routes.
const GROUPS: &str = "lock-groups";

/// The root of the break-glass routes.
const ADMIN: &str = "admin";

/// An operator's break-glass action on a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAction {
    /// End the holder's lease at once.
    ForceRelease,
    /// Refuse every acquire until enabled.
    Disable,
    Enable,
    /// Ask the holder to release, on its next heartbeat's answer.
    AskRelease,
}

impl AdminAction {
    /// The action as its route spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ForceRelease => "force-release",
            Self::Disable => "disable",
            Self::Enable => "enable",
            Self::AskRelease => "ask-release",
        }
    }
}

/// Where the command line looks for a server when not told otherwise.
pub const DEFAULT_URL: &str = "http://127.0.0.1:12345";

/// How long a request may take, beyond any waiting it asks the server to do.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to one fencelock server (or a load balancer in front of several).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    timeout: Duration,
    token: Option<String>,
}

/// How a [`Client`] connects, beyond the server's URL.
#[derive(Debug, Clone, Default)]
pub struct ClientConfig {
    /// The bearer token sent with every request, for a server that lists tokens.
    pub token: Option<String>,
    /// Certificates (PEM) to trust for HTTPS besides the system's roots, e.g. the CA
    /// that signed the server's certificate.
    pub ca_pem: Option<Vec<u8>>,
}

/// What an acquire asks for. Only `nonce` is required; the server fills in the rest.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Acquire {
    /// A value unique to this holder: acquiring again with it renews the same holding.
    pub nonce: String,
    /// The lease length; the server's default when `None`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "some_duration"
    )]
    pub ttl: Option<Duration>,
    /// How long the server should wait for the lock (it cuts this to its own maximum).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "some_duration"
    )]
    pub wait: Option<Duration>,
    /// Who holds the lock, shown by status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Any JSON, shown by status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// With a limit, the acquire is of a slot of the semaphore of that name, which
    /// allows that many holders at once; without, of the lock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

impl Acquire {
    /// What the acquire takes: a lock, or a semaphore slot when it has a limit.
    pub fn kind(&self) -> Kind {
        match self.limit {
            Some(_) => Kind::Semaphore,
            None => Kind::Lock,
        }
    }
}

/// What a name is acquired as: a lock (`/locks`), a slot of a semaphore
/// (`/semaphores`), or the leadership of an election (`/elections`). A semaphore
/// slot is answered as a lock without a body; a leadership as an [`ElectionView`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Kind {
    #[default]
    Lock,
    Semaphore,
    Election,
}

impl Kind {
    fn root(self) -> &'static str {
        match self {
            Self::Lock => "locks",
            Self::Semaphore => "semaphores",
            Self::Election => "elections",
        }
    }

    /// `lock`, `semaphore` or `election`, for messages.
    pub fn noun(self) -> &'static str {
        match self {
            Self::Lock => crate::domain::Kind::Lock,
            Self::Semaphore => crate::domain::Kind::Semaphore,
            Self::Election => crate::domain::Kind::Election,
        }
        .as_str()
    }
}

/// One acquisition of a lock, as heartbeat, update and release name it: by its fence,
/// and by its nonce as proof where the server asks for one.
#[derive(Debug, Clone, Copy)]
pub struct Holding<'a> {
    /// A lock, or a slot of a semaphore.
    pub kind: Kind,
    pub name: &'a LockName,
    pub fence: Fence,
    /// The nonce the lock was acquired with, sent as `Lock-Nonce`.
    pub nonce: Option<&'a str>,
}

impl Holding<'_> {
    fn prove(&self, call: RequestBuilder) -> RequestBuilder {
        match self.nonce {
            Some(nonce) => call.header(NONCE_HEADER, nonce),
            None => call,
        }
    }
}

/// Which locks a [`Client::list`] asks for.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ListRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Only names in this namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Only locks whose lease is live.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// The answer to a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    /// Whether the fence was the lock's current one; it is released now either way.
    pub released: bool,
    /// The lock's current fence, when it has a record.
    pub current_fence: Option<Fence>,
}

/// Why a request did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Another holder's lease is live (`lock_held`), or every slot of the semaphore
    /// is held (`semaphore_full`).
    #[error("{message}")]
    Held {
        message: String,
        /// The holder's fence (none for a semaphore).
        fence: Option<Fence>,
        /// When the holder's lease ends (for a semaphore, the first one), as RFC 3339.
        expire_time: Option<String>,
    },
    /// The fence no longer holds the lock: it moved on, the lease ended, or its record
    /// is gone (`fence_mismatch`, `lease_expired`, or `not_found` for a fence).
    #[error("{message}")]
    Lost { code: String, message: String },
    /// The lock has no record (`not_found`).
    #[error("{message}")]
    NotFound { message: String },
    /// The server cannot answer now (503 or 429); the same request may succeed later.
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The server refused the request (400, 413, …) or failed (500).
    #[error("{message}")]
    Refused {
        status: StatusCode,
        code: String,
        message: String,
    },
    /// No answer: the server could not be reached, or did not answer in time.
    #[error("cannot reach the fencelock server at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    /// An answer that is not what the API promises.
    #[error("the fencelock server at {url} answered {status} with {detail}")]
    Unexpected {
        url: String,
        status: StatusCode,
        detail: String,
    },
}

impl ClientError {
    /// Whether the same request may succeed if sent again later.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Unreachable { .. })
    }

    /// A `not_found` about a fence means the holding is gone.
    fn lost_if_gone(self) -> Self {
        match self {
            Self::NotFound { message } => Self::Lost {
                code: ErrorCode::NotFound.as_str().to_owned(),
                message,
            },
            other => other,
        }
    }
}

impl Client {
    /// A client of the server at `base` (for example `http://127.0.0.1:12345`).
    pub fn new(base: &str) -> Result<Self, ClientError> {
        Self::with_config(base, ClientConfig::default())
    }

    /// A client of the server at `base`, connecting as `config` says.
    pub fn with_config(base: &str, config: ClientConfig) -> Result<Self, ClientError> {
        let unusable = |detail: String| ClientError::Refused {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_url".to_owned(),
            message: format!(
                "{base:?} is not a fencelock server URL ({detail}); expected for example {DEFAULT_URL}"
            ),
        };
        let base = Url::parse(base).map_err(|e| unusable(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(unusable("not an http or https URL".to_owned()));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("fencelock/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &config.ca_pem {
            let certificates = reqwest::Certificate::from_pem_bundle(pem)
                .ok()
                .filter(|certificates| !certificates.is_empty())
                .ok_or_else(|| ClientError::Refused {
                    status: StatusCode::BAD_REQUEST,
                    code: "invalid_ca".to_owned(),
                    message: "the CA file holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
                        .to_owned(),
                })?;
            builder = builder.tls_certs_merge(certificates);
        }
        let http = builder.build().map_err(|e| unusable(error_chain(&e)))?;
        Ok(Self {
            http,
            base,
            timeout: DEFAULT_TIMEOUT,
            token: config.token.filter(|token| !token.is_empty()),
        })
    }

    /// The same client with `timeout` on each request (plus any wait it asks for).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The server's URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// `POST /locks/{name}`: takes the lock, waiting up to `request.wait` on the server;
    /// with `request.limit`, `POST /semaphores/{name}`: takes a slot of the semaphore.
    pub async fn acquire(
        &self,
        name: &LockName,
        request: &Acquire,
    ) -> Result<LockView, ClientError> {
        let timeout = self.timeout + request.wait.unwrap_or_default();
        let call = self
            .request_in(request.kind(), Method::POST, &[name.as_str()])
            .json(request)
            .timeout(timeout);
        self.json(call).await
    }

    /// `POST /locks/{name}/{fence}/heartbeat`: extends the lease by `ttl`, or by the
    /// last lease length.
    pub async fn heartbeat(
        &self,
        holding: &Holding<'_>,
        ttl: Option<Duration>,
    ) -> Result<LockView, ClientError> {
        self.renew(holding, ttl)
            .await
            .map_err(ClientError::lost_if_gone)
    }

    /// `POST /{locks,semaphores,elections}/{name}/{fence}/heartbeat`, answered as `T`.
    async fn renew<T: DeserializeOwned>(
        &self,
        holding: &Holding<'_>,
        ttl: Option<Duration>,
    ) -> Result<T, ClientError> {
        let fence = holding.fence.to_string();
        let call = self
            .request_in(
                holding.kind,
                Method::POST,
                &[holding.name.as_str(), &fence, "heartbeat"],
            )
            .query(&ttl_query(ttl));
        self.json(holding.prove(call)).await
    }

    /// `POST /locks/{name}/{fence}`: replaces the lock's body and extends the lease.
    pub async fn update(
        &self,
        holding: &Holding<'_>,
        body: String,
        ttl: Option<Duration>,
    ) -> Result<LockView, ClientError> {
        let fence = holding.fence.to_string();
        let call = self
            .request(Method::POST, &[holding.name.as_str(), &fence])
            .query(&ttl_query(ttl));
        let call = holding
            .prove(call)
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(body);
        self.json(call).await.map_err(ClientError::lost_if_gone)
    }

    /// `DELETE /locks/{name}/{fence}`: idempotent.
    pub async fn release(&self, holding: &Holding<'_>) -> Result<Release, ClientError> {
        let fence = holding.fence.to_string();
        let call = self.request_in(
            holding.kind,
            Method::DELETE,
            &[holding.name.as_str(), &fence],
        );
        let response = self.send(holding.prove(call)).await?;
        let current_fence = response
            .headers()
            .get(FENCE_HEADER)
            .and_then(|value| value.to_str().ok()?.parse().ok());
        let Released { released } = self.decode(response).await?;
        Ok(Release {
            released,
            current_fence,
        })
    }

    /// `GET /locks/{name}`: the lock's state; [`ClientError::NotFound`] without a record.
    pub async fn status(&self, name: &LockName) -> Result<LockView, ClientError> {
        self.json(self.request(Method::GET, &[name.as_str()])).await
    }

    /// `GET /locks/{name}/{fence}`: the lock, while `fence` holds a live lease.
    pub async fn check(&self, name: &LockName, fence: Fence) -> Result<LockView, ClientError> {
        let fence = fence.to_string();
        self.json(self.request(Method::GET, &[name.as_str(), &fence]))
            .await
            .map_err(ClientError::lost_if_gone)
    }

    /// `POST /admin/locks/{name}/{action}`: an operator's break-glass action, for
    /// `reason` (logged, and shown with a disabled lock). Needs a token with the
    /// admin right.
    pub async fn admin(
        &self,
        name: &LockName,
        action: AdminAction,
        reason: Option<&str>,
    ) -> Result<AdminDone, ClientError> {
        let call = self
            .request_at(
                ADMIN,
                Method::POST,
                &["locks", name.as_str(), action.as_str()],
            )
            .json(&serde_json::json!({ "reason": reason }));
        self.json(call).await
    }

    /// `POST /admin/semaphores/{name}/{fence}/force-release`: ends slot `fence`'s
    /// lease at once.
    pub async fn force_release_slot(
        &self,
        name: &LockName,
        fence: Fence,
        reason: Option<&str>,
    ) -> Result<SlotDone, ClientError> {
        let fence = fence.to_string();
        let segments = ["semaphores", name.as_str(), &fence, "force-release"];
        let call = self
            .request_at(ADMIN, Method::POST, &segments)
            .json(&serde_json::json!({ "reason": reason }));
        self.json(call).await
    }

    /// `POST /elections/{name}`: campaign with `request`'s nonce, lease, wait and
    /// owner, proclaiming `value` once leading; the election with this candidate as
    /// its leader.
    pub async fn campaign(
        &self,
        name: &LockName,
        request: &Acquire,
        value: &str,
    ) -> Result<ElectionView, ClientError> {
        let mut body = serde_json::to_value(request).unwrap_or_default();
        body["value"] = value.into();
        let timeout = self.timeout + request.wait.unwrap_or_default();
        let call = self
            .request_in(Kind::Election, Method::POST, &[name.as_str()])
            .json(&body)
            .timeout(timeout);
        self.json(call).await
    }

    /// `POST /elections/{name}/{term}/heartbeat`: the leader renews its lease
    /// ([`ClientError::Lost`] once the term leads no more).
    pub async fn heartbeat_leader(
        &self,
        leadership: &Holding<'_>,
        ttl: Option<Duration>,
    ) -> Result<ElectionView, ClientError> {
        self.renew(leadership, ttl).await
    }

    /// `POST /elections/{name}/{term}`: the leader's new value; extends its lease.
    pub async fn proclaim(
        &self,
        leadership: &Holding<'_>,
        value: &str,
        ttl: Option<Duration>,
    ) -> Result<ElectionView, ClientError> {
        let term = leadership.fence.to_string();
        let call = self
            .request_in(
                Kind::Election,
                Method::POST,
                &[leadership.name.as_str(), &term],
            )
            .query(&ttl_query(ttl))
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(value.to_owned());
        self.json(leadership.prove(call)).await
    }

    /// `GET /elections/{name}`: who leads now, if anyone.
    pub async fn leader(&self, name: &LockName) -> Result<ElectionView, ClientError> {
        self.json(self.request_in(Kind::Election, Method::GET, &[name.as_str()]))
            .await
    }

    /// `GET /locks/{name}/events`: the lock's changes as they happen, from the event
    /// after `last` (an event id seen before) when reconnecting.
    pub async fn events(&self, name: &LockName, last: Option<u64>) -> Result<Events, ClientError> {
        self.events_of(Kind::Lock, name, last).await
    }

    /// The event stream of the lock, semaphore or election `name`
    /// (`/{locks,semaphores,elections}/{name}/events`).
    pub async fn events_of(
        &self,
        kind: Kind,
        name: &LockName,
        last: Option<u64>,
    ) -> Result<Events, ClientError> {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty()
                .extend([kind.root(), name.as_str(), "events"]);
        }
        // No timeout for the whole request: a stream does not end. Its silence is
        // bounded instead ([`Events::next`]).
        let mut request = self.http.get(url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(last) = last {
            request = request.header("last-event-id", last.to_string());
        }
        let response = self.send(request).await?;
        let status = response.status();
        if !status.is_success() {
            // Any error status is one of the API's errors, which decode reports.
            let err = self.decode::<serde_json::Value>(response).await.err();
            return Err(err.unwrap_or_else(|| ClientError::Unexpected {
                url: self.base.to_string(),
                status,
                detail: "an error status".into(),
            }));
        }
        Ok(Events {
            response,
            buffer: String::new(),
            url: self.base.to_string(),
        })
    }

    /// `GET /locks`: one page of locks.
    pub async fn list(&self, request: &ListRequest) -> Result<LockPage, ClientError> {
        self.json(self.request(Method::GET, &[]).query(request))
            .await
    }

    /// `POST /lock-groups`: takes every lock of `names` or none, with `request`'s
    /// nonce, lease, wait, owner and metadata; answers the locks in the order named.
    pub async fn acquire_group(
        &self,
        names: &[&LockName],
        request: &Acquire,
    ) -> Result<Vec<LockView>, ClientError> {
        let mut body = serde_json::to_value(request).unwrap_or_default();
        body["names"] = names.iter().map(|name| name.as_str()).collect();
        let timeout = self.timeout + request.wait.unwrap_or_default();
        let call = self
            .request_at(GROUPS, Method::POST, &[])
            .json(&body)
            .timeout(timeout);
        let GroupView { locks } = self.json(call).await?;
        Ok(locks)
    }

    /// `POST /lock-groups/heartbeat`: extends every lease of the group, or none
    /// ([`ClientError::Lost`] when one lock is no longer held).
    pub async fn heartbeat_group(
        &self,
        holdings: &[Holding<'_>],
        ttl: Option<Duration>,
    ) -> Result<Vec<LockView>, ClientError> {
        let call = self
            .group_call("heartbeat", holdings)
            .query(&ttl_query(ttl));
        let GroupView { locks } = self.json(call).await.map_err(ClientError::lost_if_gone)?;
        Ok(locks)
    }

    /// `POST /lock-groups/release`: releases every lock the group still holds;
    /// answers for each whether it was released.
    pub async fn release_group(
        &self,
        holdings: &[Holding<'_>],
    ) -> Result<Vec<GroupReleasedLock>, ClientError> {
        let GroupReleased { locks } = self.json(self.group_call("release", holdings)).await?;
        Ok(locks)
    }

    /// `POST /lock-groups/{action}` for `holdings`, with the nonce of the first as proof.
    fn group_call(&self, action: &str, holdings: &[Holding<'_>]) -> RequestBuilder {
        let locks: Vec<serde_json::Value> = holdings
            .iter()
            .map(|h| serde_json::json!({"name": h.name.as_str(), "fence": h.fence}))
            .collect();
        let call = self
            .request_at(GROUPS, Method::POST, &[action])
            .json(&serde_json::json!({ "locks": locks }));
        match holdings.first() {
            Some(first) => first.prove(call),
            None => call,
        }
    }

    /// A request to `/locks/` followed by `segments`, each percent-encoded.
    fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        self.request_in(Kind::Lock, method, segments)
    }

    /// A request to `/locks/` or `/semaphores/` followed by `segments`.
    fn request_in(&self, kind: Kind, method: Method, segments: &[&str]) -> RequestBuilder {
        self.request_at(kind.root(), method, segments)
    }

    /// A request to `/{root}/` followed by `segments`, each percent-encoded.
    fn request_at(&self, root: &str, method: Method, segments: &[&str]) -> RequestBuilder {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push(root).extend(segments);
        }
        let request = self.http.request(method, url).timeout(self.timeout);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn json<T: DeserializeOwned>(&self, call: RequestBuilder) -> Result<T, ClientError> {
        let response = self.send(call).await?;
        self.decode(response).await
    }

    async fn send(&self, call: RequestBuilder) -> Result<Response, ClientError> {
        call.send().await.map_err(|e| self.unreachable(&e))
    }

    /// A success's JSON, or the error the answer stands for.
    async fn decode<T: DeserializeOwned>(&self, response: Response) -> Result<T, ClientError> {
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok()?.parse().ok())
            .map(Duration::from_secs);
        let text = response.text().await.map_err(|e| self.unreachable(&e))?;
        let unexpected = |detail: String| ClientError::Unexpected {
            url: self.base.to_string(),
            status,
            detail,
        };
        if status.is_success() {
            return serde_json::from_str(&text)
                .map_err(|e| unexpected(format!("a body that is not the expected JSON ({e})")));
        }
        let Ok(error) = serde_json::from_str::<ErrorBody>(&text) else {
            let excerpt: String = text.chars().take(200).collect();
            return Err(unexpected(format!(
                "a body that is not an error: {excerpt:?}"
            )));
        };
        let ErrorBody {
            error: message,
            code,
            fence,
            expire_time,
            ..
        } = error;
        use ErrorCode as C;
        // A code this version does not know is read by its status.
        Err(match (status, ErrorCode::parse(&code)) {
            (StatusCode::CONFLICT, Some(C::LockHeld | C::SemaphoreFull | C::ElectionLed)) => {
                ClientError::Held {
                    message,
                    fence,
                    expire_time,
                }
            }
            (StatusCode::CONFLICT, Some(C::FenceMismatch | C::LeaseExpired | C::NotLeader)) => {
                ClientError::Lost { code, message }
            }
            (StatusCode::NOT_FOUND, Some(C::NotFound)) => ClientError::NotFound { message },
            (StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS, _) => {
                ClientError::Unavailable {
                    message,
                    retry_after,
                }
            }
            _ => ClientError::Refused {
                status,
                code,
                message,
            },
        })
    }

    fn unreachable(&self, err: &reqwest::Error) -> ClientError {
        let detail = if err.is_timeout() {
            "no answer in time".to_owned()
        } else {
            error_chain(err)
        };
        ClientError::Unreachable {
            url: self.base.to_string(),
            detail,
        }
    }
}

fn ttl_query(ttl: Option<Duration>) -> Vec<(&'static str, String)> {
    ttl.map(|ttl| ("ttl", format_duration(ttl)))
        .into_iter()
        .collect()
}

fn some_duration<S: serde::Serializer>(
    duration: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => serializer.serialize_str(&format_duration(*duration)),
        None => serializer.serialize_none(),
    }
}

/// An error and its causes on one line: reqwest's own message alone hides the cause.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(err) = cause {
        let next = err.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = err.source();
    }
    text
}

/// The longest an event stream may stay silent: the server sends a comment every 15 s.
pub const STREAM_SILENCE: Duration = Duration::from_secs(45);

/// An open event stream of one lock ([`Client::events`]).
pub struct Events {
    response: Response,
    buffer: String,
    url: String,
}

/// One event of a stream: its kind (`state`, `acquired`, `renewed`, `updated`,
/// `released`, `reserved`, `expired`, `deleted`, `gap`), its id (the lock's version
/// after it; none for a gap) and its data (the lock's view, or what the gap says).
#[derive(Debug, Clone, Serialize)]
pub struct WatchEvent {
    pub event: String,
    pub id: Option<u64>,
    pub data: serde_json::Value,
}

impl WatchEvent {
    /// The lock's view after the event, when the event carries one.
    pub fn lock(&self) -> Option<LockView> {
        serde_json::from_value(self.data.clone()).ok()
    }
}

impl Events {
    /// The next event; `None` when the server ended the stream (it is stopping:
    /// reconnect with the last id seen).
    pub async fn next(&mut self) -> Result<Option<WatchEvent>, ClientError> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse_event(&block) {
                    return Ok(Some(event));
                }
            }
            let chunk = tokio::time::timeout(STREAM_SILENCE, self.response.chunk())
                .await
                .map_err(|_| ClientError::Unreachable {
                    url: self.url.clone(),
                    detail: format!(
                        "the event stream was silent for {}",
                        format_duration(STREAM_SILENCE)
                    ),
                })?
                .map_err(|err| ClientError::Unreachable {
                    url: self.url.clone(),
                    detail: error_chain(&err),
                })?;
            match chunk {
                Some(bytes) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                None => return Ok(None),
            }
        }
    }
}

/// One event of a `text/event-stream` block; `None` for a comment or a block
/// without an event name.
fn parse_event(block: &str) -> Option<WatchEvent> {
    let (mut event, mut id, mut data) = (None, None, String::new());
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event = Some(value.to_owned()),
            "id" => id = value.parse().ok(),
            "data" => {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value);
            }
            _ => {}
        }
    }
    Some(WatchEvent {
        event: event?,
        id,
        data: serde_json::from_str(&data).unwrap_or(serde_json::Value::String(data)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_names_are_one_path_segment_under_locks() {
        let client = Client::new("http://127.0.0.1:1/prefix/").unwrap();
        let request = client.request(Method::GET, &["a:b", "7"]).build().unwrap();
        assert_eq!(request.url().path(), "/prefix/locks/a:b/7");
    }

    #[test]
    fn an_acquire_sends_durations_as_the_server_reads_them() {
        let acquire = Acquire {
            nonce: "n1".into(),
            ttl: Some(Duration::from_millis(1500)),
            wait: Some(Duration::from_secs(5)),
            ..Acquire::default()
        };
        assert_eq!(
            serde_json::to_value(&acquire).unwrap(),
            serde_json::json!({"nonce": "n1", "ttl": "1500ms", "wait": "5s"})
        );
    }

    #[test]
    fn only_http_urls_are_servers() {
        for bad in ["127.0.0.1:12345", "ftp://host/", "mailto:x@y", ""] {
            let err = Client::new(bad).unwrap_err();
            assert!(err.to_string().contains("expected for example"), "{err}");
        }
    }
}
