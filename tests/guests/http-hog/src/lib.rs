//! A hostile stage for the HTTP limits tests, written straight against
//! `wasi:http`: it sends requests and never reads their responses, holding
//! them (and their connections) for as long as the instance lives.
//!
//! A message `http:<url>` (a test-stage command, passed on unchanged) makes
//! it send `GET <url>` again and again, keeping every response unread, until
//! the host refuses a request (or 1000 are held). It outputs the message,
//! then `held <n>; refused: <error>`, `<n>` being all the responses it holds.
//!
//! Without sending anything, it can also hoard what the host keeps for
//! requests and header fields, across messages (the instance keeps it all):
//! - `hoard-fields:<n>` makes `<n>` sets of fields, each with one header of
//!   30,000 bytes;
//! - `hoard-authority:<n>:<len>` makes `<n>` requests, each with an
//!   authority of `<len>` bytes.
//!
//! Each outputs the message, then `holding <f> fields, <r> requests`.
//! Anything else is passed on unchanged.

wit_bindgen::generate!({ world: "sluice:pipeline/plugin", path: "../../../wit", generate_all });

use exports::sluice::pipeline::stage::{Guest, Message, Outcome, StageError};
use std::cell::RefCell;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{ErrorCode, Fields, IncomingResponse, Method, OutgoingRequest, Scheme};

/// The most it tries to hold, so that a host without limits ends the test.
const MOST: usize = 1000;

thread_local! {
    /// Responses received and never read.
    static HELD: RefCell<Vec<IncomingResponse>> = const { RefCell::new(Vec::new()) };
    /// Fields and requests made and never used.
    static FIELDS: RefCell<Vec<Fields>> = const { RefCell::new(Vec::new()) };
    static REQUESTS: RefCell<Vec<OutgoingRequest>> = const { RefCell::new(Vec::new()) };
}

struct Hog;

impl Guest for Hog {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn process(message: Message) -> Outcome {
        hog(message)
    }

    fn process_batch(messages: Vec<Message>) -> Vec<Outcome> {
        messages.into_iter().map(Self::process).collect()
    }
}

/// Holds responses from the message's URL until refused, or hoards fields
/// or requests; see the crate docs.
fn hog(message: Message) -> Outcome {
    let text = String::from_utf8_lossy(&message.value).into_owned();
    let mut args = text.split(':');
    let (command, n, len) = (args.next(), args.next().and_then(|n| n.parse::<usize>().ok()), args.next());
    match (command, n) {
        (Some("hoard-fields"), Some(n)) => {
            let value = vec![b'v'; 30_000];
            for _ in 0..n {
                let fields = Fields::new();
                fields.append("x-hoard", &value).map_err(|e| StageError::Invalid(format!("{e:?}")))?;
                FIELDS.with(|f| f.borrow_mut().push(fields));
            }
            return Ok(vec![message, holding()]);
        }
        (Some("hoard-authority"), Some(n)) => {
            let authority = "a".repeat(len.and_then(|l| l.parse().ok()).unwrap_or(0));
            for _ in 0..n {
                let request = OutgoingRequest::new(Fields::new());
                request.set_authority(Some(&authority)).map_err(|()| StageError::Invalid("bad authority".into()))?;
                REQUESTS.with(|r| r.borrow_mut().push(request));
            }
            return Ok(vec![message, holding()]);
        }
        _ => {}
    }
    let Some(url) = message.value.strip_prefix(b"http:".as_slice()).and_then(|u| std::str::from_utf8(u).ok()) else {
        return Ok(vec![message]);
    };
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(StageError::Invalid(format!("not an http:// URL: {url}")));
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let refused = loop {
        if HELD.with(|held| held.borrow().len()) >= MOST {
            break "nothing".to_string();
        }
        match get(authority, if path.is_empty() { "/" } else { path }) {
            Ok(response) => HELD.with(|held| held.borrow_mut().push(response)),
            Err(error) => break error,
        }
    };
    let held = HELD.with(|held| held.borrow().len());
    let report = Message {
        value: format!("held {held}; refused: {refused}").into_bytes(),
        key: None,
        headers: Vec::new(),
        timestamp: None,
    };
    Ok(vec![message, report])
}

/// `holding <f> fields, <r> requests`: what this instance hoards.
fn holding() -> Message {
    let (fields, requests) = (FIELDS.with(|f| f.borrow().len()), REQUESTS.with(|r| r.borrow().len()));
    Message {
        value: format!("holding {fields} fields, {requests} requests").into_bytes(),
        key: None,
        headers: Vec::new(),
        timestamp: None,
    }
}

/// Sends `GET path` to `authority` and waits for the response's head.
fn get(authority: &str, path: &str) -> Result<IncomingResponse, String> {
    let request = OutgoingRequest::new(Fields::new());
    request.set_method(&Method::Get).map_err(|()| "bad method")?;
    request.set_scheme(Some(&Scheme::Http)).map_err(|()| "bad scheme")?;
    request.set_authority(Some(authority)).map_err(|()| "bad authority")?;
    request.set_path_with_query(Some(path)).map_err(|()| "bad path")?;
    let pending = outgoing_handler::handle(request, None).map_err(describe)?;
    pending.subscribe().block();
    match pending.get() {
        Some(Ok(Ok(response))) => Ok(response),
        Some(Ok(Err(e))) => Err(describe(e)),
        _ => Err("no response".to_string()),
    }
}

/// The host's reason, if it gave one.
fn describe(e: ErrorCode) -> String {
    match e {
        ErrorCode::InternalError(Some(reason)) => reason,
        other => format!("{other:?}"),
    }
}

export!(Hog);
