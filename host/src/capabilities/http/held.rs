//! What the host holds for an instance's `wasi:http` resources, bounded.
//!
//! wasi:http is linked for every stage (guests import it whether or not they
//! have `grants.allow_http`), and wasmtime-wasi-http copies what a guest
//! gives it into host memory: a request's method, scheme, authority and path
//! (checked for syntax only, never for length), header fields (32 KiB a set,
//! but thousands of sets), and body bytes written but not yet sent. None of
//! it is in the guest's linear memory, so `limits.memory` does not see it.
//!
//! The calls that add such bytes are shadowed here: each charges what it may
//! add to the instance's account, then runs wasmtime-wasi-http's own
//! implementation. Drops are not seen (the guest drops handles without a
//! call we can wrap), so the account only grows; when it passes the cap, the
//! real total is counted again from the resource table, and only if that is
//! still over the cap does the call end as a `limit` breach. A request-line
//! string longer than [`MAX_HTTP_REQUEST_PART_BYTES`] is a breach at once,
//! before it is kept.

use super::HttpCtx;
use crate::limits::{Breach, MAX_HTTP_FIELDS_BYTES, MAX_HTTP_HELD_BYTES, MAX_HTTP_REQUEST_PART_BYTES};
use http::{HeaderMap, HeaderName, HeaderValue};
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime_wasi_http::p2::HeaderResult;
use wasmtime_wasi_http::p2::bindings::http::types as wit;
use wasmtime_wasi_http::p2::types::HostFutureIncomingResponse;
use wasmtime_wasi_http::p2::types::{HostIncomingResponse, HostOutgoingRequest, HostOutgoingResponse};
use wasmtime_wasi_http::{FieldMap, WasiHttpCtxView, WasiHttpView};

/// The `wasi:http/types` instance wasmtime-wasi-http 48 defines (guests'
/// imports of earlier 0.2 versions resolve to it).
const TYPES: &str = "wasi:http/types@0.2.12";

/// Bytes written to an outgoing body's stream at once: the guest may write
/// no more than this between two reads by hyper (wasmtime-wasi-http's
/// default is 1 MiB).
pub(super) const BODY_CHUNK_BYTES: usize = 64 * 1024;
/// What an outgoing body not yet sent may hold: its channel of two chunks
/// (wasmtime-wasi-http keeps one more slot than the chunks it buffers), and
/// its trailers.
const BODY_HELD_BYTES: usize = 2 * BODY_CHUNK_BYTES + MAX_HTTP_FIELDS_BYTES;
/// What a header map holds beyond its entries (its tables start empty).
const MAP_BYTES: usize = size_of::<HeaderMap>();
/// What an entry costs beyond its name's and value's bytes, as
/// wasmtime-wasi-http counts it against the per-set cap.
const ENTRY_BYTES: usize = size_of::<HeaderName>() + size_of::<HeaderValue>();

/// Access to an instance's HTTP bytes held, with wasmtime-wasi-http's view.
pub(crate) trait HttpView: WasiHttpView {
    fn http_held(&mut self) -> HeldView<'_>;
}

/// wasmtime-wasi-http's view of an instance, its account of bytes held, and
/// where a breach is recorded for the trap to name.
pub(crate) struct HeldView<'a> {
    http: WasiHttpCtxView<'a>,
    held: &'a mut usize,
    breach: &'a mut Option<Breach>,
}

impl HttpCtx {
    /// This context's [`HeldView`], over the store's `table` and the
    /// limiter's `breach`.
    pub(crate) fn held_view<'a>(
        &'a mut self,
        table: &'a mut ResourceTable,
        breach: &'a mut Option<Breach>,
    ) -> HeldView<'a> {
        let http = WasiHttpCtxView { ctx: &mut self.ctx, hooks: &mut self.hooks, table };
        HeldView { http, held: &mut self.held, breach }
    }
}

impl HeldView<'_> {
    /// Charges a request's method, scheme, authority or path (`part`) about
    /// to be kept.
    fn part(&mut self, part: &'static str, text: Option<&str>) -> wasmtime::Result<()> {
        let Some(text) = text else { return Ok(()) };
        if text.len() > MAX_HTTP_REQUEST_PART_BYTES {
            return Err(self.breach(Breach::HttpRequestPart {
                part,
                len: text.len(),
                limit: MAX_HTTP_REQUEST_PART_BYTES,
            }));
        }
        self.charge(text.len())
    }

    /// Charges `bytes` about to be kept; over the cap, counts what is really
    /// held (handles dropped since are not), and fails the call if that is
    /// over too.
    fn charge(&mut self, bytes: usize) -> wasmtime::Result<()> {
        let after = self.held.saturating_add(bytes);
        if after <= MAX_HTTP_HELD_BYTES {
            *self.held = after;
            return Ok(());
        }
        let after = held_bytes(self.http.table).saturating_add(bytes);
        *self.held = after;
        if after > MAX_HTTP_HELD_BYTES {
            return Err(self.breach(Breach::HttpHeld { limit: MAX_HTTP_HELD_BYTES, held: after }));
        }
        Ok(())
    }

    fn breach(&mut self, breach: Breach) -> wasmtime::Error {
        let error = wasmtime::Error::msg(breach.to_string());
        *self.breach = Some(breach);
        error
    }

    /// A header-error result as the guest gets it (or a trap).
    fn header_result<T>(&mut self, result: HeaderResult<T>) -> wasmtime::Result<Result<T, wit::HeaderError>> {
        match result {
            Ok(value) => Ok(Ok(value)),
            Err(e) => Ok(Err(wit::Host::convert_header_error(&mut self.http, e)?)),
        }
    }
}

/// What a header set of these entries may add, at most the per-set cap.
fn entries_bytes<'a>(entries: impl Iterator<Item = (&'a str, &'a [u8])>) -> usize {
    let bytes = entries.map(|(name, value)| name.len() + value.len() + ENTRY_BYTES).fold(0usize, usize::saturating_add);
    bytes.min(MAX_HTTP_FIELDS_BYTES) + MAP_BYTES
}

/// Bytes of a header map, as wasmtime-wasi-http counts them, plus the map.
fn map_bytes(map: &HeaderMap) -> usize {
    let names: usize = map.keys().map(|k| k.as_str().len() + size_of::<HeaderName>()).sum();
    let values: usize = map.values().map(|v| v.len() + size_of::<HeaderValue>()).sum();
    MAP_BYTES + names + values
}

/// What the host holds for the `wasi:http` resources in `table`. Each
/// handle counts in full, even where wasmtime-wasi-http shares a map
/// between copies: a mutable copy is copied on its first change.
pub(super) fn held_bytes(table: &mut ResourceTable) -> usize {
    let other = |s: &str| s.len();
    let mut total = 0usize;
    for entry in table.iter_mut() {
        let entry: &(dyn std::any::Any + Send) = entry;
        let bytes = if let Some(fields) = entry.downcast_ref::<FieldMap>() {
            map_bytes(fields)
        } else if let Some(r) = entry.downcast_ref::<HostOutgoingRequest>() {
            let method = match &r.method {
                wit::Method::Other(m) => other(m),
                _ => 0,
            };
            let scheme = match &r.scheme {
                Some(wit::Scheme::Other(s)) => other(s),
                _ => 0,
            };
            let line = r.authority.as_deref().map_or(0, other) + r.path_with_query.as_deref().map_or(0, other);
            let body = if r.body.is_some() { BODY_HELD_BYTES } else { 0 };
            method + scheme + line + map_bytes(&r.headers) + body
        } else if let Some(r) = entry.downcast_ref::<HostOutgoingResponse>() {
            map_bytes(&r.headers) + if r.body.is_some() { BODY_HELD_BYTES } else { 0 }
        } else if let Some(r) = entry.downcast_ref::<HostIncomingResponse>() {
            map_bytes(&r.headers)
        } else {
            0
        };
        total = total.saturating_add(bytes);
    }
    total
}

type Store<'a, T> = StoreContextMut<'a, T>;

/// Shadows, in `linker`, the `wasi:http/types` functions that add bytes the
/// host keeps, with ones that charge them first (see the module's docs).
pub(super) fn add_to_linker<T: HttpView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut types = linker.instance(TYPES)?;
    types.func_wrap(
        "[method]outgoing-request.set-method",
        |mut store: Store<'_, T>, (request, method): (Resource<HostOutgoingRequest>, wit::Method)| {
            let mut v = store.data_mut().http_held();
            v.part("method", if let wit::Method::Other(m) = &method { Some(m.as_str()) } else { None })?;
            Ok((wit::HostOutgoingRequest::set_method(&mut v.http, request, method)?,))
        },
    )?;
    types.func_wrap(
        "[method]outgoing-request.set-scheme",
        |mut store: Store<'_, T>, (request, scheme): (Resource<HostOutgoingRequest>, Option<wit::Scheme>)| {
            let mut v = store.data_mut().http_held();
            v.part("scheme", if let Some(wit::Scheme::Other(s)) = &scheme { Some(s.as_str()) } else { None })?;
            Ok((wit::HostOutgoingRequest::set_scheme(&mut v.http, request, scheme)?,))
        },
    )?;
    types.func_wrap(
        "[method]outgoing-request.set-authority",
        |mut store: Store<'_, T>, (request, authority): (Resource<HostOutgoingRequest>, Option<String>)| {
            let mut v = store.data_mut().http_held();
            v.part("authority", authority.as_deref())?;
            Ok((wit::HostOutgoingRequest::set_authority(&mut v.http, request, authority)?,))
        },
    )?;
    types.func_wrap(
        "[method]outgoing-request.set-path-with-query",
        |mut store: Store<'_, T>, (request, path): (Resource<HostOutgoingRequest>, Option<String>)| {
            let mut v = store.data_mut().http_held();
            v.part("path", path.as_deref())?;
            Ok((wit::HostOutgoingRequest::set_path_with_query(&mut v.http, request, path)?,))
        },
    )?;
    types.func_wrap(
        "[method]outgoing-request.body",
        |mut store: Store<'_, T>, (request,): (Resource<HostOutgoingRequest>,)| {
            let mut v = store.data_mut().http_held();
            v.charge(BODY_HELD_BYTES)?;
            Ok((wit::HostOutgoingRequest::body(&mut v.http, request)?,))
        },
    )?;
    types.func_wrap(
        "[method]outgoing-response.body",
        |mut store: Store<'_, T>, (response,): (Resource<HostOutgoingResponse>,)| {
            let mut v = store.data_mut().http_held();
            v.charge(BODY_HELD_BYTES)?;
            Ok((wit::HostOutgoingResponse::body(&mut v.http, response)?,))
        },
    )?;
    types.func_wrap("[static]fields.from-list", |mut store: Store<'_, T>, (entries,): (Vec<(String, Vec<u8>)>,)| {
        let mut v = store.data_mut().http_held();
        v.charge(entries_bytes(entries.iter().map(|(n, b)| (n.as_str(), b.as_slice()))))?;
        let result = wit::HostFields::from_list(&mut v.http, entries);
        Ok((v.header_result(result)?,))
    })?;
    types.func_wrap(
        "[method]fields.set",
        |mut store: Store<'_, T>, (fields, name, values): (Resource<FieldMap>, String, Vec<Vec<u8>>)| {
            let mut v = store.data_mut().http_held();
            v.charge(entries_bytes(values.iter().map(|b| (name.as_str(), b.as_slice()))))?;
            let result = wit::HostFields::set(&mut v.http, fields, name, values);
            Ok((v.header_result(result)?,))
        },
    )?;
    types.func_wrap(
        "[method]fields.append",
        |mut store: Store<'_, T>, (fields, name, value): (Resource<FieldMap>, String, Vec<u8>)| {
            let mut v = store.data_mut().http_held();
            v.charge(entries_bytes(std::iter::once((name.as_str(), value.as_slice()))))?;
            let result = wit::HostFields::append(&mut v.http, fields, name, value);
            Ok((v.header_result(result)?,))
        },
    )?;
    types.func_wrap("[method]fields.clone", |mut store: Store<'_, T>, (fields,): (Resource<FieldMap>,)| {
        let mut v = store.data_mut().http_held();
        let bytes = map_bytes(v.http.table.get(&fields)?);
        v.charge(bytes)?;
        Ok((wit::HostFields::clone(&mut v.http, fields)?,))
    })?;
    // A response's headers come from the server, not the guest, but a guest
    // could hold thousands of responses (read to the end, so no longer in
    // flight).
    types.func_wrap(
        "[method]future-incoming-response.get",
        |mut store: Store<'_, T>, (future,): (Resource<HostFutureIncomingResponse>,)| {
            let mut v = store.data_mut().http_held();
            let got = wit::HostFutureIncomingResponse::get(&mut v.http, future)?;
            if let Some(Ok(Ok(response))) = &got {
                let bytes = map_bytes(&v.http.table.get(response)?.headers);
                v.charge(bytes)?;
            }
            Ok((got,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime_wasi_http::p2::body::HostOutgoingBody;

    #[test]
    fn held_bytes_count_every_handle_of_fields_requests_and_bodies() {
        let mut table = ResourceTable::new();
        assert_eq!(held_bytes(&mut table), 0);
        let mut fields = FieldMap::new_mutable(MAX_HTTP_FIELDS_BYTES);
        let hooks = wasmtime_wasi_http::default_hooks();
        fields.append(hooks, "x-a".into(), vec![b'v'; 100]).unwrap();
        let one = MAP_BYTES + 3 + 100 + ENTRY_BYTES;
        table.push(fields.clone()).unwrap();
        table.push(fields.clone()).unwrap();
        assert_eq!(held_bytes(&mut table), 2 * one, "a copy counts as much as its original");
        let (_, body) = HostOutgoingBody::new(wasmtime_wasi_http::p2::body::StreamContext::Request, None, 1, 16);
        table
            .push(HostOutgoingRequest {
                method: wit::Method::Other("PURGE".into()),
                scheme: Some(wit::Scheme::Http),
                authority: Some("a".repeat(1000)),
                path_with_query: Some("/p".into()),
                headers: fields,
                body: Some(body),
            })
            .unwrap();
        assert_eq!(held_bytes(&mut table), 3 * one + 5 + 1000 + 2 + BODY_HELD_BYTES);
    }

    #[test]
    fn a_set_of_fields_is_charged_at_most_its_cap() {
        let huge = vec![b'v'; 10 << 20];
        assert_eq!(entries_bytes(std::iter::once(("x", huge.as_slice()))), MAX_HTTP_FIELDS_BYTES + MAP_BYTES);
        assert_eq!(entries_bytes(std::iter::once(("x", b"v".as_slice()))), 2 + ENTRY_BYTES + MAP_BYTES);
    }
}
