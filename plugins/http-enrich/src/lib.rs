//! `http-enrich`: for each JSON message, GETs a URL built from the message and
//! stores the response under a field.
//!
//! ```toml
//! [[stages]]
//! name = "users"
//! plugin = "http-enrich.wasm"
//! config = { url = "http://127.0.0.1:8080/users/{user.id}.json", target = "user_profile" }
//! grants = { allow_http = ["127.0.0.1:8080"] }   # without it every request is denied
//! concurrency = 32                               # requests in flight at once
//! ```
//!
//! `{path}` placeholders are filled from the message's fields (dotted paths),
//! percent-encoded. The body is stored under `target` (default `enriched`),
//! as JSON if it parses, else as text.
//!
//! Errors: a missing placeholder field or a denied request is `invalid` (retrying
//! cannot help); a non-2xx status or a failed connection is `transient`, so the
//! host retries it with backoff.

use serde::Deserialize;
use serde_json::Value;
use sluice_sdk::json::FieldPath;
use sluice_sdk::{Message, Stage, StageError, http};

/// The stage's settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    url: String,
    #[serde(default = "default_target")]
    target: String,
}

fn default_target() -> String {
    "enriched".into()
}

/// One piece of the URL template.
#[derive(Debug, PartialEq)]
enum Part {
    Text(String),
    Field(FieldPath),
}

/// Enriches messages with an HTTP response.
#[derive(Debug)]
pub struct HttpEnrich {
    template: Vec<Part>,
    target: FieldPath,
}

fn parse_template(url: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = url;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').ok_or_else(|| format!("unclosed `{{` in url `{url}`"))? + open;
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_string()));
        }
        parts.push(Part::Field(rest[open + 1..close].parse()?));
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_string()));
    }
    if !url.starts_with("http://") && !url.starts_with("https://") {
        return Err(format!("url `{url}` must start with http:// or https://"));
    }
    Ok(parts)
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Stage for HttpEnrich {
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        Ok(HttpEnrich { template: parse_template(&c.url)?, target: c.target.parse()? })
    }

    fn process(&mut self, mut message: Message) -> Result<Vec<Message>, StageError> {
        let mut doc = message.json()?;
        let url = self.url_for(&doc)?;
        let response = http::get(&url).map_err(|e| match e {
            http::Error::Denied | http::Error::InvalidUrl(_) | http::Error::TooLarge => {
                StageError::invalid(format!("GET {url}: {e}"))
            }
            http::Error::Failed(_) => StageError::transient(format!("GET {url}: {e}")),
        })?;
        if !(200..300).contains(&response.status) {
            return Err(StageError::transient(format!("GET {url}: HTTP {}", response.status)));
        }
        let value = serde_json::from_slice(&response.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&response.body).into_owned()));
        self.target.set(&mut doc, value).map_err(StageError::invalid)?;
        message.set_json(&doc)?;
        Ok(vec![message])
    }
}

impl HttpEnrich {
    fn url_for(&self, doc: &Value) -> Result<String, StageError> {
        let mut url = String::new();
        for part in &self.template {
            match part {
                Part::Text(t) => url.push_str(t),
                Part::Field(path) => match path.get(doc) {
                    Some(Value::String(s)) => url.push_str(&encode(s)),
                    Some(v @ (Value::Number(_) | Value::Bool(_))) => url.push_str(&encode(&v.to_string())),
                    Some(other) => {
                        let kind = sluice_sdk::json::kind(other);
                        return Err(StageError::invalid(format!("field `{path}` is a {kind}, not a URL part")));
                    }
                    None => return Err(StageError::invalid(format!("field `{path}` for the url is missing"))),
                },
            }
        }
        Ok(url)
    }
}

sluice_sdk::export_stage!(HttpEnrich);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stage(url: &str) -> HttpEnrich {
        HttpEnrich::new(Config { url: url.into(), target: default_target() }).unwrap()
    }

    #[test]
    fn placeholders_are_filled_and_encoded() {
        let s = stage("http://h:1/users/{user.id}/orders?tag={tag}");
        let url = s.url_for(&json!({"user": {"id": 42}, "tag": "a b/c"})).unwrap();
        assert_eq!(url, "http://h:1/users/42/orders?tag=a%20b%2Fc");
    }

    #[test]
    fn a_missing_field_is_invalid() {
        let err = stage("http://h/{id}").url_for(&json!({})).unwrap_err();
        assert_eq!(err, StageError::invalid("field `id` for the url is missing"));
    }

    #[test]
    fn bad_templates_are_refused() {
        assert!(HttpEnrich::new(Config { url: "http://h/{id".into(), target: "x".into() }).is_err());
        assert!(HttpEnrich::new(Config { url: "ftp://h/".into(), target: "x".into() }).is_err());
    }
}
