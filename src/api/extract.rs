//! Extractors that turn a request into domain values, answering anything malformed
//! with our JSON error instead of axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use utoipa::IntoParams;
use utoipa::openapi::Required;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};

use super::guard::Caller;
use super::{ApiError, AppState};
use crate::domain::{Fence, LockName, Token};

/// `{name}` of a lock route.
pub struct LockPath(pub LockName);

/// `{name}/{fence}` of a lock route.
pub struct FencePath(pub LockName, pub Fence);

/// `{name}/{term}` of an election route: the term is the leader's fence.
pub struct TermPath(pub LockName, pub Fence);

/// `{resource}` of a Gorilla-compatible route.
pub struct ResourcePath(pub LockName);

/// `{resource}/{token}` of a Gorilla-compatible route.
pub struct TokenPath(pub LockName, pub Token);

/// The `Lock-Nonce` header, for the OpenAPI document: handlers read it from the headers.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct NonceHeader {
    /// The holder's nonce, as proof that the request comes from the holder (or the
    /// `nonce` query parameter); required when the server runs with
    /// `FENCELOCK_REQUIRE_NONCE=true`.
    #[param(rename = "Lock-Nonce", pattern = r"^[!-~]{1,64}$")]
    lock_nonce: Option<String>,
}

/// Query parameters, with unknown or malformed ones answered by a 400.
pub struct Params<T>(pub T);

/// A request body that must be UTF-8 text within the body limit.
pub struct TextBody(pub String);

/// A request body that is either empty or one JSON document of type `T`.
pub struct OptionalJson<T>(pub Option<T>);

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::InvalidRequest(message.into())
}

fn parse_fence(raw: &str) -> Result<Fence, ApiError> {
    crate::domain::parse_fence(raw).map_err(|e| invalid(e.0))
}

/// The lock a request names, once the caller is known to be allowed its namespace.
fn lock_name(parts: &Parts, raw: &str) -> Result<LockName, ApiError> {
    let name = LockName::parse(raw).map_err(|e| invalid(e.0))?;
    super::request_log::note_lock(&name);
    caller(parts)?.check(&name)?;
    Ok(name)
}

/// The caller the gate admitted.
fn caller(parts: &Parts) -> Result<&Caller, ApiError> {
    parts.extensions.get::<Caller>().ok_or_else(|| {
        ApiError::Internal("the request reached a lock route without passing the gate".into())
    })
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        caller(parts).cloned()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for LockPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| invalid(e.body_text()))?;
        Ok(Self(lock_name(parts, &raw)?))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ResourcePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let LockPath(name) = LockPath::from_request_parts(parts, state).await?;
        Ok(Self(name))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for FencePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path((raw_name, raw_fence)) =
            Path::<(String, String)>::from_request_parts(parts, state)
                .await
                .map_err(|e| invalid(e.body_text()))?;
        let name = lock_name(parts, &raw_name)?;
        Ok(Self(name, parse_fence(&raw_fence)?))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for TermPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path((raw_name, raw_term)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|e| invalid(e.body_text()))?;
        let name = lock_name(parts, &raw_name)?;
        let term = crate::domain::parse_fence(&raw_term).map_err(|_| {
            invalid(format!(
                "term {raw_term:?} is not a term; expected the whole number campaign returned"
            ))
        })?;
        Ok(Self(name, term))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for TokenPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path((raw_name, raw_token)) =
            Path::<(String, String)>::from_request_parts(parts, state)
                .await
                .map_err(|e| invalid(e.body_text()))?;
        let name = lock_name(parts, &raw_name)?;
        Ok(Self(
            name,
            Token::parse(&raw_token).map_err(|e| invalid(e.0))?,
        ))
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(params) = Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|e| invalid(format!("bad query string: {}", e.body_text())))?;
        Ok(Self(params))
    }
}

async fn body_bytes(request: Request, state: &AppState) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::BodyTooLarge {
                    limit: state.max_body,
                }
            } else {
                invalid(format!(
                    "could not read the request body: {}",
                    rejection.body_text()
                ))
            }
        })
}

impl FromRequest<AppState> for TextBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = body_bytes(request, state).await?;
        let text = String::from_utf8(bytes.to_vec()).map_err(|e| {
            invalid(format!(
                "the body must be UTF-8 text; byte {} is not",
                e.utf8_error().valid_up_to()
            ))
        })?;
        Ok(Self(text))
    }
}

impl<T: DeserializeOwned> FromRequest<AppState> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = body_bytes(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(None));
        }
        // Any content type is read as JSON, so `curl -d '{…}'` works as written.
        serde_json::from_slice(&bytes)
            .map(|value| Self(Some(value)))
            .map_err(|e| invalid(format!("the body is not the JSON expected: {e}")))
    }
}

// How the path extractors appear in the OpenAPI document.

fn path_parameter(name: &str, description: &str, schema: ObjectBuilder) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(description))
        .schema(Some(schema.build()))
        .build()
}

fn name_parameter(name: &str) -> Parameter {
    let schema = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[A-Za-z0-9._:-]{1,255}$"));
    path_parameter(name, "Lock name: 1–255 bytes of [A-Za-z0-9._:-]", schema)
}

impl IntoParams for LockPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![name_parameter("name")]
    }
}

impl IntoParams for ResourcePath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![name_parameter("resource")]
    }
}

impl IntoParams for FencePath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let fence = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(0));
        vec![
            name_parameter("name"),
            path_parameter("fence", "The fence returned by acquire", fence),
        ]
    }
}

impl IntoParams for TermPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let term = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(0));
        vec![
            election_parameter(),
            path_parameter("term", "The term campaign returned", term),
        ]
    }
}

/// The `{name}` of an election route.
pub struct ElectionPath(pub LockName);

impl<S: Send + Sync> FromRequestParts<S> for ElectionPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let LockPath(name) = LockPath::from_request_parts(parts, state).await?;
        Ok(Self(name))
    }
}

impl IntoParams for ElectionPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![election_parameter()]
    }
}

fn election_parameter() -> Parameter {
    let schema = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[A-Za-z0-9._:-]{1,255}$"));
    path_parameter(
        "name",
        "Election name: 1–255 bytes of [A-Za-z0-9._:-], namespaced as lock names are",
        schema,
    )
}

impl IntoParams for TokenPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let token = ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(64));
        vec![
            name_parameter("resource"),
            path_parameter("token", "The token returned by acquire", token),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_are_whole_numbers() {
        assert_eq!(parse_fence("42").unwrap(), 42);
        assert_eq!(
            parse_fence("1763894400000001").unwrap(),
            1_763_894_400_000_001
        );
        for raw in [
            "",
            "-1",
            "+1",
            "007",
            " 1",
            "1.5",
            "abc",
            "99999999999999999999999",
        ] {
            let err = parse_fence(raw).unwrap_err().to_string();
            assert!(err.contains("expected the whole number"), "{raw:?}: {err}");
        }
    }
}
