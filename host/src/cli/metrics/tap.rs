//! `GET /tap/{stage}?rate=N`: a live sample of the messages leaving a stage,
//! one JSON object per line, streamed until the client goes away (what
//! `sluice tap` reads). The listener is dropped, and the stage stops
//! sampling, when the next line cannot be written.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};
use sluice::{DEFAULT_TAP_RATE, MAX_TAP_RATE, TapError, TappedMessage, Taps};
use std::convert::Infallible;
use std::sync::{Arc, OnceLock};

/// The route, with the pipeline's taps once it is built as its state.
pub(super) fn routes<S>(taps: Arc<OnceLock<Taps>>) -> Router<S> {
    Router::new().route("/tap/{stage}", get(tap)).with_state(taps)
}

async fn tap(
    State(taps): State<Arc<OnceLock<Taps>>>,
    Path(stage): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(taps) = taps.get() else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "the pipeline is still being built: tap it once /ready says 200");
    };
    let rate = match rate_of(query.as_deref()) {
        Ok(rate) => rate,
        Err(e) => return text(StatusCode::BAD_REQUEST, &e),
    };
    let listener = match taps.listen(&stage, rate) {
        Ok(listener) => listener,
        Err(e) => {
            let status = match e {
                TapError::UnknownStage { .. } => StatusCode::NOT_FOUND,
                TapError::Rate(_) => StatusCode::BAD_REQUEST,
                TapError::Ended(_) => StatusCode::GONE,
            };
            return text(status, &e.to_string());
        }
    };
    let lines = futures_util::stream::unfold(listener, |mut listener| async move {
        let message = listener.next().await?;
        Some((Ok::<_, Infallible>(Bytes::from(json_line(&message))), listener))
    });
    ([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(lines)).into_response()
}

fn text(status: StatusCode, message: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{message}\n")).into_response()
}

/// `rate=N` (the only parameter), or the default.
fn rate_of(query: Option<&str>) -> Result<u32, String> {
    let mut rate = DEFAULT_TAP_RATE;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("rate", n)) => {
                rate = n
                    .parse()
                    .map_err(|_| format!("rate={n}: give a whole number of messages a second, 1 to {MAX_TAP_RATE}"))?
            }
            _ => return Err(format!("unknown parameter `{pair}`: the only one is rate=N (1 to {MAX_TAP_RATE})")),
        }
    }
    Ok(rate)
}

/// One tapped message as a line of JSON: bytes as text when they are
/// UTF-8, else in base64 under `*_base64`.
fn json_line(m: &TappedMessage) -> Vec<u8> {
    let mut object = Map::new();
    object.insert("stage".into(), json!(&*m.stage));
    object.insert("position".into(), json!(m.position));
    match &m.key {
        Some(key) => bytes(&mut object, "key", key),
        None => {
            object.insert("key".into(), Value::Null);
        }
    }
    bytes(&mut object, "value", &m.value);
    if m.cut {
        object.insert("cut".into(), json!(true));
    }
    let headers = m
        .headers
        .iter()
        .map(|h| {
            let mut header = Map::new();
            header.insert("name".into(), json!(h.name));
            bytes(&mut header, "value", &h.value);
            Value::Object(header)
        })
        .collect();
    object.insert("headers".into(), Value::Array(headers));
    object.insert("timestamp".into(), json!(m.timestamp));
    let mut line = serde_json::to_vec(&object).expect("a JSON map always serialises");
    line.push(b'\n');
    line
}

fn bytes(object: &mut Map<String, Value>, name: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => object.insert(name.into(), json!(text)),
        Err(_) => object.insert(format!("{name}_base64"), json!(BASE64.encode(bytes))),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_has_text_as_text_and_other_bytes_in_base64() {
        let m = TappedMessage {
            stage: "s".into(),
            position: 7,
            key: Some(vec![0xff, 0x00]),
            value: b"{\"a\":1}".to_vec(),
            cut: true,
            headers: vec![sluice::Header { name: "h".into(), value: b"v".to_vec() }],
            timestamp: Some(1_700_000_000_000),
        };
        let line: Value = serde_json::from_slice(&json_line(&m)).unwrap();
        assert_eq!(
            line,
            json!({"stage":"s","position":7,"key_base64":"/wA=","value":"{\"a\":1}","cut":true,
                   "headers":[{"name":"h","value":"v"}],"timestamp":1_700_000_000_000_i64})
        );
        let bare = TappedMessage { key: None, value: vec![0xc3], cut: false, headers: vec![], timestamp: None, ..m };
        let line: Value = serde_json::from_slice(&json_line(&bare)).unwrap();
        assert_eq!(
            line,
            json!({"stage":"s","position":7,"key":null,"value_base64":"ww==","headers":[],"timestamp":null})
        );
    }

    #[test]
    fn the_rate_is_the_only_parameter() {
        assert_eq!(rate_of(None), Ok(DEFAULT_TAP_RATE));
        assert_eq!(rate_of(Some("rate=10")), Ok(10));
        assert!(rate_of(Some("rate=ten")).unwrap_err().contains("whole number"));
        assert!(rate_of(Some("count=3")).unwrap_err().starts_with("unknown parameter `count=3`"));
    }
}
