//! A hostile stage for the HTTP limits tests, written straight against
//! `wasi:http`: it sends requests and never reads their responses, holding
//! them (and their connections) for as long as the instance lives.
//!
//! A message `http:<url>` (a test-stage command, passed on unchanged) makes
//! it send `GET <url>` again and again, keeping every response unread, until
//! the host refuses a request (or 1000 are held). It outputs the message,
//! then `held <n>; refused: <error>`, `<n>` being all the responses it holds.
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

/// Holds responses from the message's URL until refused; see the crate docs.
fn hog(message: Message) -> Outcome {
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
