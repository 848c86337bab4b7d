//! The web page: `GET /` lists the locks, and `GET /ui/locks/{name}`,
//! `/ui/semaphores/{name}` and `/ui/elections/{name}` show one lock, semaphore or
//! election, live.
//! Every file of the page is compiled into the binary (from `ui/`), so serving it
//! needs no network and no build step. The page reads the public JSON API only, with
//! the viewer's bearer token; these routes themselves are open, as they hold no data.

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::ApiError;
use super::error::ErrorBody;
use crate::domain::LockName;

/// The page's own files: name under `/ui/`, content type, contents.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", JAVASCRIPT, include_str!("../../ui/app.js")),
    ("api.js", JAVASCRIPT, include_str!("../../ui/api.js")),
    ("dom.js", JAVASCRIPT, include_str!("../../ui/dom.js")),
    ("list.js", JAVASCRIPT, include_str!("../../ui/list.js")),
    ("lock.js", JAVASCRIPT, include_str!("../../ui/lock.js")),
    ("page.js", JAVASCRIPT, include_str!("../../ui/page.js")),
    (
        "semaphore.js",
        JAVASCRIPT,
        include_str!("../../ui/semaphore.js"),
    ),
    (
        "election.js",
        JAVASCRIPT,
        include_str!("../../ui/election.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../../ui/app.css"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_str!("../../ui/icon.svg"),
    ),
];

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";
const INDEX: &str = include_str!("../../ui/index.html");

/// Scripts, styles, images and requests from this server only, and no inline script
/// or style: a value that slipped into the page as markup could not run.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// What the gate answers on any route, the page's included.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Only described: the gate answers these.
enum SizeErrors {
    /// `uri_too_long`.
    #[response(status = 414)]
    UriTooLong(ErrorBody),
    /// `headers_too_large`.
    #[response(status = 431)]
    HeadersTooLarge(ErrorBody),
}

#[utoipa::path(get, path = "/", tag = "ui",
    responses(
        (status = 200, description = "The web page: every lock, live", content_type = "text/html"),
        SizeErrors,
    ))]
/// `GET /`: the page that lists the locks. It is HTML whatever the request accepts;
/// scripts read `GET /locks`.
pub async fn index() -> Response {
    page(HTML, INDEX)
}

#[utoipa::path(get, path = "/ui/locks/{name}", tag = "ui",
    params(("name" = String, Path, description = "The lock's name: 1–255 bytes of [A-Za-z0-9._:-]",
        pattern = r"^[A-Za-z0-9._:-]{1,255}$")),
    responses(
        (status = 200, description = "The web page of one lock, live", content_type = "text/html"),
        (status = 400, description = "`invalid_request`: not a lock name", body = ErrorBody),
        SizeErrors,
    ))]
/// `GET /ui/locks/{name}`: the page of one lock, at a URL to share.
pub async fn lock_page(Path(name): Path<String>) -> Result<Response, ApiError> {
    LockName::parse(&name).map_err(|e| ApiError::InvalidRequest(e.0))?;
    Ok(page(HTML, INDEX))
}

#[utoipa::path(get, path = "/ui/semaphores/{name}", tag = "ui",
    params(("name" = String, Path, description = "The semaphore's name: 1–255 bytes of [A-Za-z0-9._:-]",
        pattern = r"^[A-Za-z0-9._:-]{1,255}$")),
    responses(
        (status = 200, description = "The web page of one semaphore, live", content_type = "text/html"),
        (status = 400, description = "`invalid_request`: not a semaphore name", body = ErrorBody),
        SizeErrors,
    ))]
/// `GET /ui/semaphores/{name}`: the page of one semaphore, at a URL to share.
pub async fn semaphore_page(Path(name): Path<String>) -> Result<Response, ApiError> {
    LockName::parse(&name).map_err(|e| ApiError::InvalidRequest(e.0))?;
    Ok(page(HTML, INDEX))
}

#[utoipa::path(get, path = "/ui/elections/{name}", tag = "ui",
    params(("name" = String, Path, description = "The election's name: 1–255 bytes of [A-Za-z0-9._:-]",
        pattern = r"^[A-Za-z0-9._:-]{1,255}$")),
    responses(
        (status = 200, description = "The web page of one election, live", content_type = "text/html"),
        (status = 400, description = "`invalid_request`: not an election name", body = ErrorBody),
        SizeErrors,
    ))]
/// `GET /ui/elections/{name}`: the page of one election, at a URL to share.
pub async fn election_page(Path(name): Path<String>) -> Result<Response, ApiError> {
    LockName::parse(&name).map_err(|e| ApiError::InvalidRequest(e.0))?;
    Ok(page(HTML, INDEX))
}

#[utoipa::path(get, path = "/ui/{asset}", tag = "ui",
    params(("asset" = String, Path, description = "A file of the web page, such as `app.js`")),
    responses(
        (status = 200, description = "The file", content(
            ("text/javascript; charset=utf-8"), ("text/css; charset=utf-8"), ("image/svg+xml")
        )),
        (status = 404, description = "`not_found`: the page has no such file", body = ErrorBody),
        SizeErrors,
    ))]
/// `GET /ui/{asset}`: a script, style sheet or image of the page.
pub async fn asset(Path(asset): Path<String>) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .find(|(name, _, _)| *name == asset)
        .map(|(_, content_type, body)| page(content_type, body))
        .ok_or_else(|| ApiError::RouteNotFound {
            method: "GET".into(),
            path: format!("/ui/{asset}"),
        })
}

/// `body` with the headers every file of the page carries.
fn page(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        // A new fencelock version's page is fetched again, not taken from a cache.
        (header::CACHE_CONTROL, "no-cache"),
    ];
    let mut response = body.into_response();
    for (name, value) in headers {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let scripts: Vec<&str> = INDEX.split("<script").skip(1).collect();
        assert!(!scripts.is_empty(), "the page has its script");
        for script in scripts {
            let tag = &script[..script.find('>').unwrap()];
            assert!(
                tag.contains("src=\"/ui/"),
                "an inline script: <script{tag}>"
            );
        }
        assert!(!INDEX.contains("style=\""), "an inline style");
    }

    #[test]
    fn every_module_the_scripts_import_is_served() {
        for (_, _, body) in ASSETS {
            for import in body.split("from \"./").skip(1) {
                let file = &import[..import.find('"').unwrap()];
                assert!(
                    ASSETS.iter().any(|(name, _, _)| *name == file),
                    "{file} is imported but not served"
                );
            }
        }
    }
}
