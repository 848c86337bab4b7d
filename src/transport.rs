//! Connections, beneath the routes: how long a connection may take to send a request
//! or sit idle, and hyper's own refusals rewritten as fencelock's JSON errors.
//!
//! hyper answers a request it cannot parse (more than [`MAX_HEADER_FIELDS`] header
//! fields, a head past [`MAX_HEAD_BYTES`], a URI past 65,534 bytes, bytes that are
//! not HTTP/1.1) by itself, with an empty body, before any route or middleware sees
//! it. [`Acceptor`] wraps each connection so that such an answer goes out as the
//! [`ApiError`] a client of fencelock expects instead.
//!
//! Timeouts: a connection with no request in progress is closed after the idle
//! timeout (hyper's header read timeout, which runs from the moment the connection
//! is ready for a request); a request's line and headers must arrive within the
//! header timeout of their first byte, and a new connection's first request within
//! the header timeout of its opening. A request whose headers were read (a waiting
//! acquire, say) is bounded by the request timeout instead.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::http::Request;
use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;
use tower::Service;

use crate::api::{ApiError, MAX_HEAD_BYTES, MAX_HEADER_FIELDS, Unreadable};

/// The two connection timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub header: Duration,
    pub idle: Duration,
}

/// Applies fencelock's limits and timeouts to `server`, whose acceptor is `A`.
pub fn configure<A, Acc>(
    mut server: axum_server::Server<A, Acc>,
    timeouts: Timeouts,
) -> axum_server::Server<A, Acceptor<Acc>>
where
    A: axum_server::Address,
{
    server
        .http_builder()
        .http1()
        .max_headers(MAX_HEADER_FIELDS)
        .max_buf_size(MAX_HEAD_BYTES)
        .header_read_timeout(timeouts.idle);
    server
        .first_request_timeout(timeouts.header)
        .map(|inner| Acceptor {
            inner,
            header_timeout: timeouts.header,
        })
}

/// Wraps each accepted connection (after TLS, when there is TLS) and its service.
#[derive(Debug, Clone)]
pub struct Acceptor<A> {
    inner: A,
    header_timeout: Duration,
}

impl<A, I, S> Accept<I, S> for Acceptor<A>
where
    A: Accept<I, S>,
    A::Future: Send + 'static,
{
    type Stream = Guarded<A::Stream>;
    type Service = Counted<A::Service>;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Self::Stream, Self::Service)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let accepted = self.inner.accept(stream, service);
        let header_timeout = self.header_timeout;
        Box::pin(async move {
            let (stream, service) = accepted.await?;
            let requests = Arc::new(Requests::default());
            Ok((
                Guarded {
                    io: stream,
                    requests: requests.clone(),
                    header_timeout,
                    head: None,
                    answer: None,
                },
                Counted {
                    inner: service,
                    requests,
                },
            ))
        })
    }
}

/// The requests of one connection that reached its service.
#[derive(Debug, Default)]
struct Requests {
    started: AtomicU64,
    in_progress: AtomicUsize,
}

/// A connection's service, counting the requests it is given.
#[derive(Debug, Clone)]
pub struct Counted<S> {
    inner: S,
    requests: Arc<Requests>,
}

impl<S, B> Service<Request<B>> for Counted<S>
where
    S: Service<Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let requests = self.requests.clone();
        requests.started.fetch_add(1, Ordering::Relaxed);
        requests.in_progress.fetch_add(1, Ordering::Relaxed);
        let response = self.inner.call(request);
        Box::pin(async move {
            // Counted down however the request ends, a client that left included.
            let _done = scopeguard::guard(requests, |requests| {
                requests.in_progress.fetch_sub(1, Ordering::Relaxed);
            });
            response.await
        })
    }
}

/// A connection as hyper reads and writes it: its request heads timed, and hyper's
/// own refusals replaced by JSON ones.
#[derive(Debug)]
pub struct Guarded<IO> {
    io: IO,
    requests: Arc<Requests>,
    header_timeout: Duration,
    /// The head being read: how many requests had started when its first bytes came,
    /// and when it must be complete.
    head: Option<(u64, Pin<Box<Sleep>>)>,
    /// A JSON refusal written in place of hyper's, and how much of it went out.
    answer: Option<(Vec<u8>, usize)>,
}

impl<IO: AsyncWrite + Unpin> Guarded<IO> {
    /// Writes what is left of a replacement answer.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, sent)) = &mut self.answer {
            if *sent == bytes.len() {
                self.answer = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &bytes[*sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *sent += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        let started = this.requests.started.load(Ordering::Relaxed);
        let idle = this.requests.in_progress.load(Ordering::Relaxed) == 0;
        // A head that reached the service is no longer being read.
        if !idle || this.head.as_ref().is_some_and(|(at, _)| *at != started) {
            this.head = None;
        }
        match polled {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && idle && this.head.is_none() {
                    let deadline = Box::pin(tokio::time::sleep(this.header_timeout));
                    this.head = Some((started, deadline));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let late = this
                    .head
                    .as_mut()
                    .is_some_and(|(_, deadline)| deadline.as_mut().poll(cx).is_ready());
                if late {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the request's headers did not arrive within the header timeout",
                    )));
                }
                Poll::Pending
            }
            failed => failed,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_answer(cx))?;
        match hyper_refusal(buf) {
            // What precedes the refusal (the end of an earlier answer) goes first.
            Some((0, refusal, date)) => {
                this.answer = Some((json_answer(&refusal, date), 0));
                // hyper's bytes count as written: ours go out in their place.
                let _ = this.poll_answer(cx)?;
                Poll::Ready(Ok(buf.len()))
            }
            Some((at, _, _)) => Pin::new(&mut this.io).poll_write(cx, &buf[..at]),
            None => Pin::new(&mut this.io).poll_write(cx, buf),
        }
    }

    // One buffer at a time, so that a refusal is always seen whole (hyper then
    // writes each answer as one buffer; they are small).
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_answer(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_answer(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// Where in `buf` an answer of hyper's own to a request it could not parse begins,
/// what it refuses, and its `date` line: a status line of 400, 414 or 431 followed
/// by `content-length: 0` (every answer of fencelock's has a JSON body), `date` and
/// `connection` lines only, ending `buf`.
fn hyper_refusal(buf: &[u8]) -> Option<(usize, Unreadable, &[u8])> {
    const STATUS_LINE: &[u8] = b"HTTP/1.1 ";
    if !buf.ends_with(b"\r\n\r\n") {
        return None;
    }
    let at = buf
        .windows(STATUS_LINE.len())
        .rposition(|window| window == STATUS_LINE)?;
    let head = std::str::from_utf8(&buf[at..buf.len() - 4]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()?
        .get(STATUS_LINE.len()..STATUS_LINE.len() + 3)?;
    let refusal = match status {
        "400" => Unreadable::Malformed,
        "414" => Unreadable::UriTooLong,
        "431" => Unreadable::HeadersTooLarge,
        _ => return None,
    };
    let (mut empty, mut date) = (false, &b""[..]);
    for line in lines {
        let lower = line.to_ascii_lowercase();
        if lower == "content-length: 0" {
            empty = true;
        } else if lower.starts_with("date: ") {
            date = line.as_bytes();
        } else if !lower.starts_with("connection: ") {
            return None;
        }
    }
    empty.then_some((at, refusal, date))
}

/// The whole answer fencelock gives for `refusal`, closing the connection as hyper
/// does after one.
fn json_answer(refusal: &Unreadable, date: &[u8]) -> Vec<u8> {
    let (status, json) = ApiError::Unreadable(*refusal).plain();
    let mut answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        json.len()
    )
    .into_bytes();
    if !date.is_empty() {
        answer.extend_from_slice(date);
        answer.extend_from_slice(b"\r\n");
    }
    answer.extend_from_slice(b"\r\n");
    answer.extend_from_slice(json.as_bytes());
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "date: Tue, 01 Dec 2026 20:00:00 GMT";

    #[test]
    fn hyper_refusals_are_found_whole_and_after_an_earlier_answer() {
        let refusal = format!(
            "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n{DATE}\r\n\r\n"
        );
        let found = hyper_refusal(refusal.as_bytes()).unwrap();
        assert_eq!((found.0, found.1), (0, Unreadable::HeadersTooLarge));
        assert_eq!(found.2, DATE.as_bytes());
        let earlier = format!("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{{}}{refusal}");
        let found = hyper_refusal(earlier.as_bytes()).unwrap();
        assert_eq!(found.0, earlier.len() - refusal.len());
    }

    #[test]
    fn answers_of_fencelock_are_left_alone() {
        for answer in [
            // A JSON error has a body.
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
            // An empty answer of another status.
            "HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n",
            // Headers hyper's refusals never carry.
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nx-request-id: 1\r\n\r\n",
        ] {
            assert!(hyper_refusal(answer.as_bytes()).is_none(), "{answer}");
        }
    }

    #[test]
    fn the_json_answer_says_what_was_refused() {
        let answer = json_answer(&Unreadable::UriTooLong, DATE.as_bytes());
        let answer = String::from_utf8(answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["code"], "uri_too_long");
    }
}
