//! Outbound HTTP from a stage, through `wasi:http`.
//!
//! The host only lets a request through if the stage's grants list its
//! authority (`grants = { allow_http = ["api.example.com"] }`); otherwise
//! [`Error::Denied`]. While the request is in flight, only this message waits:
//! other messages and stages keep going.
//!
//! ```no_run
//! let response = sluice_sdk::http::get("http://127.0.0.1:8080/users/7")?;
//! if response.status == 200 {
//!     let user: serde_json::Value = serde_json::from_slice(&response.body).unwrap_or_default();
//! }
//! # Ok::<(), sluice_sdk::http::Error>(())
//! ```

use std::fmt;

/// The largest response body [`get`] reads.
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// A response: status and the whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The body, read to the end.
    pub body: Vec<u8>,
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The host refused: the stage has no grant for this authority.
    Denied,
    /// The URL is not `http://` or `https://` followed by an authority.
    InvalidUrl(String),
    /// The response body is over [`MAX_BODY_BYTES`].
    TooLarge,
    /// The request failed (connection refused, timeout, protocol error...).
    Failed(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Denied => f.write_str("request denied: the stage has no grant for this host (grants.allow_http)"),
            Error::InvalidUrl(url) => write!(f, "not an http(s) URL: {url}"),
            Error::TooLarge => write!(f, "response body over {MAX_BODY_BYTES} bytes"),
            Error::Failed(why) => write!(f, "request failed: {why}"),
        }
    }
}

impl std::error::Error for Error {}

/// Sends `GET url` and reads the whole response.
pub fn get(url: &str) -> Result<Response, Error> {
    let (https, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else {
        return Err(Error::InvalidUrl(url.to_string()));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(Error::InvalidUrl(url.to_string()));
    }
    imp::get(https, authority, path)
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::{Error, MAX_BODY_BYTES, Response};
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{ErrorCode, Fields, IncomingBody, Method, OutgoingRequest, Scheme};
    use wasip2::io::streams::StreamError;

    fn failed(e: ErrorCode) -> Error {
        match e {
            ErrorCode::HttpRequestDenied => Error::Denied,
            other => Error::Failed(format!("{other:?}")),
        }
    }

    pub(super) fn get(https: bool, authority: &str, path: &str) -> Result<Response, Error> {
        let request = OutgoingRequest::new(Fields::new());
        let bad = |_| Error::InvalidUrl(format!("{authority}{path}"));
        request.set_method(&Method::Get).map_err(bad)?;
        request.set_scheme(Some(if https { &Scheme::Https } else { &Scheme::Http })).map_err(bad)?;
        request.set_authority(Some(authority)).map_err(bad)?;
        request.set_path_with_query(Some(path)).map_err(bad)?;
        let pending = outgoing_handler::handle(request, None).map_err(failed)?;
        pending.subscribe().block();
        let response = match pending.get() {
            Some(Ok(result)) => result.map_err(failed)?,
            _ => return Err(Error::Failed("the host returned no response".into())),
        };
        let status = response.status();
        let body = response.consume().map_err(|()| Error::Failed("response body unavailable".into()))?;
        let stream = body.stream().map_err(|()| Error::Failed("response body unavailable".into()))?;
        let mut bytes = Vec::new();
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    if bytes.len() + chunk.len() > MAX_BODY_BYTES {
                        return Err(Error::TooLarge);
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(Error::Failed(format!("reading the body: {}", e.to_debug_string())));
                }
            }
        }
        drop(stream);
        let _trailers = IncomingBody::finish(body);
        Ok(Response { status, body: bytes })
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::{Error, Response};

    pub(super) fn get(_https: bool, _authority: &str, _path: &str) -> Result<Response, Error> {
        Err(Error::Failed("outbound HTTP is only available inside a component".into()))
    }
}
