//! `wasi:http/outgoing-handler`: outbound HTTP for stages, denied unless the
//! stage's grants allow the request's authority (`grants.allow_http`).
//!
//! A denied request is an error value (`http-request-denied`) to the guest,
//! never a trap. Requests are async on the host: a stage waiting on the
//! network holds up only its own message.

use http::uri::Scheme;
use std::future::Future;
use std::sync::Arc;
use wasmtime_wasi_http::{Error, WasiBody, WasiHttpCtx, WasiHttpHooks, p2};

/// Per-instance state of the HTTP capability.
pub(crate) struct HttpCtx {
    pub(crate) ctx: WasiHttpCtx,
    pub(crate) hooks: AllowList,
}

impl HttpCtx {
    pub(crate) fn new(allow: Arc<[String]>) -> Self {
        HttpCtx { ctx: WasiHttpCtx::new(), hooks: AllowList { allow } }
    }
}

/// The authorities (`host:port`, or `host` for the scheme's default port) a
/// stage may send requests to.
pub(crate) struct AllowList {
    allow: Arc<[String]>,
}

impl AllowList {
    fn allows(&self, scheme: Option<&Scheme>, authority: &str) -> bool {
        let default_port = if scheme == Some(&Scheme::HTTPS) { "443" } else { "80" };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => (host, port),
            _ => (authority, default_port),
        };
        self.allow.iter().any(|entry| match entry.rsplit_once(':') {
            Some((h, p)) => h.eq_ignore_ascii_case(host) && p == port,
            None => entry.eq_ignore_ascii_case(host) && port == default_port,
        })
    }
}

type Response = (http::Response<WasiBody>, Box<dyn Future<Output = Result<(), Error>> + Send>);

impl WasiHttpHooks for AllowList {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Result<Response, Error>> + Send> {
        let authority = request.uri().authority().map(|a| a.as_str().to_string()).unwrap_or_default();
        if !self.allows(request.uri().scheme(), &authority) {
            tracing::debug!(authority, "outbound HTTP denied: not in grants.allow_http");
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        let _ = fut;
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((response.map(BodyExt::boxed_unsync), Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }
}

/// Links `wasi:http` (types and the outgoing handler).
pub(crate) fn add_to_linker(linker: &mut wasmtime::component::Linker<crate::stage::StoreData>) -> wasmtime::Result<()> {
    p2::add_only_http_to_linker_async(linker)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        AllowList { allow: entries.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn authorities_match_host_and_port() {
        let allow = list(&["127.0.0.1:8080", "api.example.com"]);
        assert!(allow.allows(Some(&Scheme::HTTP), "127.0.0.1:8080"));
        assert!(!allow.allows(Some(&Scheme::HTTP), "127.0.0.1:8081"));
        assert!(!allow.allows(Some(&Scheme::HTTP), "127.0.0.1"));
        assert!(allow.allows(Some(&Scheme::HTTPS), "API.example.com"), "default port, any case");
        assert!(allow.allows(Some(&Scheme::HTTPS), "api.example.com:443"));
        assert!(!allow.allows(Some(&Scheme::HTTPS), "api.example.com:8443"));
        assert!(!allow.allows(Some(&Scheme::HTTP), "example.com"));
    }

    #[test]
    fn nothing_is_allowed_by_default() {
        assert!(!list(&[]).allows(Some(&Scheme::HTTP), "127.0.0.1:80"));
    }
}
