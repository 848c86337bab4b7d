//! The operators' break-glass routes under `/admin`: force-release a lock or a
//! semaphore's slot, disable and enable a lock name, ask a holder to release. Each
//! needs the admin right on the name's namespace ([`Caller::check_admin`]), writes
//! one audit line at `warn` (who, the lock, its fence, the action, the reason) and
//! counts in `fencelock_admin_actions_total`.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{CommonErrors, ErrorBody};
use super::extract::{FencePath, LockPath, OptionalJson};
use super::guard::Caller;
use super::semaphores::SemaphoreView;
use super::terms::now;
use super::view::LockView;
use super::{ApiError, AppState};
use crate::domain::{Fence, LockName};
use crate::store::Marked;

/// The longest reason kept, in bytes.
const MAX_REASON_LEN: usize = 255;

/// The break-glass actions on a lock, as routes and answers spell them.
const LOCK_ACTIONS: [&str; 4] = ["force-release", "disable", "enable", "ask-release"];

/// The body of every break-glass action: optional, as is each field.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminBody {
    /// Why, for the audit line (and, for `disable`, shown with the lock): printable
    /// text of at most 255 bytes.
    #[schema(example = "job stuck since 03:10, INC-4411")]
    reason: Option<String>,
}

/// What a break-glass action on a lock did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminDone {
    /// `force-release`, `disable`, `enable` or `ask-release`.
    pub action: String,
    /// Whether the action changed anything; `false` when there was nothing to do
    /// (the lock was released already, is disabled already, is not disabled, or
    /// has no live lease to ask about).
    pub changed: bool,
    /// The lock after the action. After a force-release, `fence` is the last
    /// holder's, and the next acquire's fence is above it.
    pub lock: LockView,
}

/// What a force-release of a semaphore's slot did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlotDone {
    /// `force-release`.
    pub action: String,
    /// The slot's fence.
    pub fence: Fence,
    /// Whether the slot was held (or had lapsed unreleased) and is now released.
    pub changed: bool,
    /// The semaphore after the action.
    pub semaphore: SemaphoreView,
}

/// The break-glass actions the caller may take on a lock.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminRights {
    pub name: String,
    /// Each action's route is `POST /admin/locks/{name}/{action}`.
    pub actions: Vec<String>,
}

#[utoipa::path(get, path = "/admin/locks/{name}", tag = "admin",
    params(LockPath),
    responses(
        (status = 200, description = "The caller may take the break-glass actions on this lock", body = AdminRights),
        CommonErrors,
    ))]
/// `GET /admin/locks/{name}`: 200 with the actions when the caller has the admin
/// right on the name's namespace, 403 otherwise; changes nothing. The web page asks
/// it to decide whether to show the actions.
pub async fn rights(
    State(app): State<AppState>,
    caller: Caller,
    LockPath(name): LockPath,
) -> Result<Json<AdminRights>, ApiError> {
    admin(&app, &caller, &name)?;
    Ok(Json(AdminRights {
        name: name.to_string(),
        actions: LOCK_ACTIONS.map(str::to_owned).to_vec(),
    }))
}

#[utoipa::path(post, path = "/admin/locks/{name}/force-release", tag = "admin",
    params(LockPath),
    request_body(content = Option<AdminBody>, content_type = "application/json"),
    responses(
        (status = 200, description = "The lease is over: the holder's next heartbeat is refused, the body \
            is kept, and the next acquire's fence is above the holder's", body = AdminDone),
        CommonErrors,
        (status = 404, description = "`not_found`: the lock has no record", body = ErrorBody),
    ))]
/// `POST /admin/locks/{name}/force-release`: ends the holder's lease at once.
pub async fn force_release(
    State(app): State<AppState>,
    caller: Caller,
    LockPath(name): LockPath,
    OptionalJson(body): OptionalJson<AdminBody>,
) -> Result<Json<AdminDone>, ApiError> {
    let (who, reason) = (admin(&app, &caller, &name)?, reason(body)?);
    let marked = app.store.force_release(&name).await?;
    if let Marked::Changed(_) = marked {
        app.lock_released(&name);
    }
    done(&app, "force-release", &who, reason.as_deref(), name, marked)
}

#[utoipa::path(post, path = "/admin/locks/{name}/disable", tag = "admin",
    params(LockPath),
    request_body(content = Option<AdminBody>, content_type = "application/json"),
    responses(
        (status = 200, description = "No acquire succeeds until the name is enabled; a holder keeps \
            its lease until it ends or is force-released", body = AdminDone),
        CommonErrors,
    ))]
/// `POST /admin/locks/{name}/disable`: a name without a record gets one.
pub async fn disable(
    State(app): State<AppState>,
    caller: Caller,
    LockPath(name): LockPath,
    OptionalJson(body): OptionalJson<AdminBody>,
) -> Result<Json<AdminDone>, ApiError> {
    let (who, reason) = (admin(&app, &caller, &name)?, reason(body)?);
    let marked = app.store.disable(&name, &who, reason.as_deref()).await?;
    done(&app, "disable", &who, reason.as_deref(), name, marked)
}

#[utoipa::path(post, path = "/admin/locks/{name}/enable", tag = "admin",
    params(LockPath),
    request_body(content = Option<AdminBody>, content_type = "application/json"),
    responses(
        (status = 200, description = "The name may be acquired again", body = AdminDone),
        CommonErrors,
        (status = 404, description = "`not_found`: the lock has no record", body = ErrorBody),
    ))]
/// `POST /admin/locks/{name}/enable`.
pub async fn enable(
    State(app): State<AppState>,
    caller: Caller,
    LockPath(name): LockPath,
    OptionalJson(body): OptionalJson<AdminBody>,
) -> Result<Json<AdminDone>, ApiError> {
    let (who, reason) = (admin(&app, &caller, &name)?, reason(body)?);
    let marked = app.store.enable(&name).await?;
    done(&app, "enable", &who, reason.as_deref(), name, marked)
}

#[utoipa::path(post, path = "/admin/locks/{name}/ask-release", tag = "admin",
    params(LockPath),
    request_body(content = Option<AdminBody>, content_type = "application/json"),
    responses(
        (status = 200, description = "Every answer about the lock carries `releaseRequestedTime` until \
            the next acquire; the holder sees it on its next heartbeat", body = AdminDone),
        CommonErrors,
        (status = 404, description = "`not_found`: the lock has no record", body = ErrorBody),
    ))]
/// `POST /admin/locks/{name}/ask-release`: the polite force-release.
pub async fn ask_release(
    State(app): State<AppState>,
    caller: Caller,
    LockPath(name): LockPath,
    OptionalJson(body): OptionalJson<AdminBody>,
) -> Result<Json<AdminDone>, ApiError> {
    let (who, reason) = (admin(&app, &caller, &name)?, reason(body)?);
    let marked = app.store.ask_release(&name).await?;
    done(&app, "ask-release", &who, reason.as_deref(), name, marked)
}

#[utoipa::path(post, path = "/admin/semaphores/{name}/{fence}/force-release", tag = "admin",
    params(FencePath),
    request_body(content = Option<AdminBody>, content_type = "application/json"),
    responses(
        (status = 200, description = "The slot's lease is over: its holder's next heartbeat is refused, \
            and the next slot's fence is above it", body = SlotDone),
        CommonErrors,
        (status = 404, description = "`not_found`: the semaphore has no record", body = ErrorBody),
    ))]
/// `POST /admin/semaphores/{name}/{fence}/force-release`.
pub async fn force_release_slot(
    State(app): State<AppState>,
    caller: Caller,
    FencePath(name, fence): FencePath,
    OptionalJson(body): OptionalJson<AdminBody>,
) -> Result<Json<SlotDone>, ApiError> {
    let (who, reason) = (admin(&app, &caller, &name)?, reason(body)?);
    let Some((semaphore, changed)) = app.store.force_release_slot(&name, fence).await? else {
        return Err(ApiError::SemaphoreNotFound { name });
    };
    if changed {
        app.semaphore_waiters.released(&name);
    }
    audit(
        &app,
        "force-release",
        &who,
        reason.as_deref(),
        &name,
        fence,
        changed,
    );
    Ok(Json(SlotDone {
        action: "force-release".to_owned(),
        fence,
        changed,
        semaphore: SemaphoreView::at(&app, &semaphore, now(&app)),
    }))
}

/// Who acts, if the caller has the admin right on `name`; a 403 otherwise.
fn admin(app: &AppState, caller: &Caller, name: &LockName) -> Result<String, ApiError> {
    caller.check_admin(name, app.guard.security.allow_admin_without_auth)
}

/// The reason of an action's body, checked: it goes into a log line.
fn reason(body: Option<AdminBody>) -> Result<Option<String>, ApiError> {
    let Some(reason) = body.and_then(|body| body.reason) else {
        return Ok(None);
    };
    if reason.len() > MAX_REASON_LEN {
        return Err(ApiError::InvalidRequest(format!(
            "reason is {} bytes long; at most {MAX_REASON_LEN} bytes are kept",
            reason.len()
        )));
    }
    if reason.chars().any(char::is_control) {
        return Err(ApiError::InvalidRequest(
            "reason contains a control character (a newline, a tab, …); send one line of text"
                .to_owned(),
        ));
    }
    Ok((!reason.trim().is_empty()).then_some(reason))
}

/// The answer to an action on a lock, once audited.
fn done(
    app: &AppState,
    action: &'static str,
    who: &str,
    reason: Option<&str>,
    name: LockName,
    marked: Marked,
) -> Result<Json<AdminDone>, ApiError> {
    let (lock, changed) = match marked {
        Marked::Changed(lock) => (lock, true),
        Marked::Unchanged(lock) => (lock, false),
        Marked::NotFound => {
            audit(app, action, who, reason, &name, 0, false);
            return Err(ApiError::LockNotFound { name });
        }
    };
    audit(app, action, who, reason, &name, lock.fence, changed);
    Ok(Json(AdminDone {
        action: action.to_owned(),
        changed,
        lock: super::locks::status_view(app, lock),
    }))
}

/// The audit line and the count of one action.
fn audit(
    app: &AppState,
    action: &'static str,
    who: &str,
    reason: Option<&str>,
    name: &LockName,
    fence: Fence,
    changed: bool,
) {
    tracing::warn!(
        action,
        by = who,
        lock = %name,
        fence,
        changed,
        reason = reason.unwrap_or(""),
        "break-glass action"
    );
    app.metrics.admin(&action.replace('-', "_"), changed);
}
