//! `wasi:http/outgoing-handler`: outbound HTTP for stages, denied unless the
//! stage's grants allow the request's authority (`grants.allow_http`).
//!
//! A denied request is an error value (`http-request-denied`) to the guest,
//! never a trap. Requests are async on the host: a stage waiting on the
//! network holds up only its own message.
//!
//! What the host holds for a stage's requests is bounded, so that a stage
//! holding many idle requests (sent, their responses never read) can neither
//! grow the host's memory and file descriptors without end nor starve another
//! stage:
//! - `limits.max_http_requests` requests in flight per stage, over all its
//!   instances. A request over it waits (within the message's `timeout`) for
//!   one of the stage's own to finish: other stages have their own count.
//! - `limits.max_http_requests_per_instance` per instance. A request over it
//!   fails at once with an error value naming the limit: waiting could only
//!   end when the same instance let go of one, so it would wait out its timeout.
//!
//! A request is in flight from when it is sent until its response body has
//! been read to the end, or dropped (with the response, or with the
//! instance). Each holds one connection (one file descriptor) and hyper's
//! read buffer (at most about 400 KiB) plus one body frame; the guest reads
//! bodies as streams, so nothing else of a body is buffered by the host.
//! A set of fields (headers) is capped at `limits::MAX_HTTP_FIELDS_BYTES`
//! (32 KiB, wasmtime's default being 128 KiB), and every handle counts
//! toward the instance's resource table (`limits::MAX_RESOURCES`).
//!
//! What the host keeps of an instance's requests not yet sent (method,
//! scheme, authority, path, headers, body bytes written), of its header
//! fields and of the responses it holds is bounded in all by
//! `limits::MAX_HTTP_HELD_BYTES`, each request-line string by
//! `limits::MAX_HTTP_REQUEST_PART_BYTES` ([`held`]): wasi:http is linked for
//! every stage, granted or not, and none of it is in `limits.memory`.

mod held;

pub(crate) use held::{HeldView, HttpView};

use crate::limits::Limits;
use futures_util::StreamExt;
use http::uri::Scheme;
use http_body_util::{BodyExt, StreamBody};
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi_http::{Error, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, p2};

/// Per-instance state of the HTTP capability.
pub(crate) struct HttpCtx {
    ctx: WasiHttpCtx,
    hooks: Hooks,
    /// Bytes the host holds for this instance's wasi:http resources, as
    /// charged so far (see [`held`]).
    held: usize,
}

impl HttpCtx {
    /// The HTTP capability of one instance of the stage that owns `stage`.
    pub(crate) fn new(stage: &StageHttp) -> Self {
        let mut ctx = WasiHttpCtx::new();
        ctx.set_field_size_limit(crate::limits::MAX_HTTP_FIELDS_BYTES);
        let hooks = Hooks { stage: stage.clone(), instance: Arc::new(Semaphore::new(stage.per_instance)) };
        HttpCtx { ctx, hooks, held: 0 }
    }

    /// wasmtime-wasi-http's view of this context, with the store's `table`,
    /// for the store data's [`wasmtime_wasi_http::WasiHttpView`].
    pub(crate) fn view<'a>(&'a mut self, table: &'a mut ResourceTable) -> WasiHttpCtxView<'a> {
        WasiHttpCtxView { ctx: &mut self.ctx, hooks: &mut self.hooks, table }
    }
}

/// What a stage's instances share of outbound HTTP: the authorities it may
/// reach, and its count of requests in flight.
#[derive(Clone)]
pub(crate) struct StageHttp {
    allow: AllowList,
    in_flight: Arc<Semaphore>,
    per_stage: usize,
    per_instance: usize,
}

impl StageHttp {
    pub(crate) fn new(allow: impl IntoIterator<Item = String>, limits: &Limits) -> Self {
        let per_stage = limits.max_http_requests;
        StageHttp {
            allow: AllowList { allow: allow.into_iter().collect() },
            in_flight: Arc::new(Semaphore::new(per_stage)),
            per_stage,
            // An instance never waits for itself: with no more than the
            // stage's cap, its own excess fails instead.
            per_instance: limits.max_http_requests_per_instance.min(per_stage),
        }
    }
}

/// The authorities (`host:port`, or `host` for the scheme's default port) a
/// stage may send requests to.
#[derive(Clone)]
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

/// wasmtime-wasi-http's hooks for one instance: the allow-list and the caps
/// on requests in flight.
pub(crate) struct Hooks {
    stage: StageHttp,
    /// This instance's requests in flight.
    instance: Arc<Semaphore>,
}

type Response = (http::Response<WasiBody>, Box<dyn Future<Output = Result<(), Error>> + Send>);

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Result<Response, Error>> + Send> {
        let authority = request.uri().authority().map(|a| a.as_str().to_string()).unwrap_or_default();
        if !self.stage.allow.allows(request.uri().scheme(), &authority) {
            tracing::debug!(authority, "outbound HTTP denied: not in grants.allow_http");
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        let Ok(mine) = self.instance.clone().try_acquire_owned() else {
            let reason = format!(
                "{} outbound HTTP requests are already in flight in this instance, the most allowed \
                 (limits.max_http_requests_per_instance); read or drop a response first",
                self.stage.per_instance
            );
            tracing::debug!(authority, "outbound HTTP refused: {reason}");
            return Box::new(async { Err(Error::InternalError(Some(reason))) });
        };
        let (stage, per_stage) = (self.stage.in_flight.clone(), self.stage.per_stage);
        let _ = fut;
        Box::new(async move {
            let theirs = match stage.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    tracing::debug!(
                        authority,
                        "outbound HTTP waits: {per_stage} requests of this stage in flight (limits.max_http_requests)"
                    );
                    stage.acquire_owned().await.expect("the stage's semaphore is never closed")
                }
            };
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            let permits = InFlight { _instance: mine, _stage: theirs };
            let response = response.map(|body| permits.hold(body.boxed_unsync()));
            Ok((response, Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }

    /// Smaller than wasmtime-wasi-http's 1 MiB, so that a body the guest
    /// has written but not sent holds little (see [`held`]).
    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        held::BODY_CHUNK_BYTES
    }
}

/// A request's places in its instance's and its stage's counts, given back
/// when dropped.
struct InFlight {
    _instance: OwnedSemaphorePermit,
    _stage: OwnedSemaphorePermit,
}

impl InFlight {
    /// `body`, holding these places until it has been read to the end (or
    /// failed), or is dropped.
    fn hold(self, mut body: WasiBody) -> WasiBody {
        let mut held = Some(self);
        let frames = futures_util::stream::poll_fn(move |cx| {
            let frame = std::task::ready!(std::pin::pin!(body.frame()).poll(cx));
            if !matches!(frame, Some(Ok(_))) {
                drop(held.take());
            }
            std::task::Poll::Ready(frame)
        });
        StreamBody::new(frames.fuse()).boxed_unsync()
    }
}

/// Links `wasi:http` (types and the outgoing handler) for a store whose data
/// gives wasmtime-wasi-http's view, [`HttpCtx::view`] of its [`HttpCtx`].
pub(crate) fn add_to_linker<T: HttpView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    p2::add_only_http_to_linker_async(linker)?;
    held::add_to_linker(linker)
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

    /// A body of `chunks`, holding a place in `instance` and `stage`.
    fn held_body(chunks: &[&'static str], instance: &Arc<Semaphore>, stage: &Arc<Semaphore>) -> WasiBody {
        let frames = chunks.iter().map(|c| Ok(http_body::Frame::data(bytes::Bytes::from_static(c.as_bytes()))));
        let body = StreamBody::new(futures_util::stream::iter(frames.collect::<Vec<_>>())).boxed_unsync();
        let places = InFlight {
            _instance: instance.clone().try_acquire_owned().unwrap(),
            _stage: stage.clone().try_acquire_owned().unwrap(),
        };
        places.hold(body)
    }

    #[tokio::test]
    async fn a_request_holds_its_places_until_its_body_is_read_to_the_end() {
        let (instance, stage) = (Arc::new(Semaphore::new(2)), Arc::new(Semaphore::new(2)));
        let mut body = held_body(&["a", "b"], &instance, &stage);
        assert_eq!((instance.available_permits(), stage.available_permits()), (1, 1));
        assert!(body.frame().await.unwrap().is_ok());
        assert!(body.frame().await.unwrap().is_ok());
        assert_eq!(stage.available_permits(), 1, "not yet at the end");
        assert!(body.frame().await.is_none());
        assert_eq!((instance.available_permits(), stage.available_permits()), (2, 2), "given back at the end");
        assert!(body.frame().await.is_none(), "the end stays the end");
    }

    #[tokio::test]
    async fn a_response_dropped_unread_gives_its_places_back() {
        let (instance, stage) = (Arc::new(Semaphore::new(1)), Arc::new(Semaphore::new(1)));
        let body = held_body(&["unread"], &instance, &stage);
        assert_eq!((instance.available_permits(), stage.available_permits()), (0, 0));
        drop(body);
        assert_eq!((instance.available_permits(), stage.available_permits()), (1, 1));
    }
}
