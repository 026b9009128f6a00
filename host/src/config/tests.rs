//! The builder API and the errors of settings that serde reads for us.

use super::{Order, PipelineConfig, StageConfig};
use std::path::Path;
use std::time::Duration;

fn parse_error(text: &str) -> String {
    PipelineConfig::parse(text, Some(Path::new("p.toml"))).unwrap_err().to_string()
}

#[test]
fn durations_read_as_before_and_a_bad_one_is_named_with_an_example() {
    let text = "version = 1\nshutdown_timeout = \"1m 30s\"\n[state]\ncheckpoint_interval = \"250ms\"\n";
    let config = PipelineConfig::parse(text, None).unwrap_err();
    // No stages is the only problem: the durations were read.
    assert_eq!(config.0.len(), 1, "{config}");
    let text = "version = 1\n[[stages]]\nname = \"a\"\nplugin = \"a.wasm\"\nretries = { backoff = \"soon\" }\n";
    assert_eq!(
        parse_error(text),
        "p.toml:5:23: `backoff` must be a duration such as \"100ms\", \"2s\" or \"1m 30s\", not `\"soon\"`"
    );
}

#[test]
fn a_stage_configured_in_place_is_pushed_with_its_settings() {
    let mut config = PipelineConfig::new();
    config
        .push_stage(StageConfig::new("a", "a.wasm").set_concurrency(4).set_order(Order::Unordered))
        .push_stage(StageConfig::new("b", "b.wasm"));
    config.set_shutdown_timeout(Duration::from_secs(2));
    let a = config.stages()[0].execution();
    assert_eq!((a.concurrency, a.order, a.batch), (4, Order::Unordered, 1));
    assert_eq!(config.stages()[1].execution().concurrency, 1);
    assert_eq!(config.shutdown_timeout(), Duration::from_secs(2));
}

#[test]
fn stage_settings_set_in_code_must_be_an_object() {
    let mut config = PipelineConfig::new();
    let native = || StageConfig::native("n", |m: &crate::Message| Ok(vec![m.clone()]));
    config.push_stage(native().set_config(serde_json::json!({"field": "amount"})));
    assert!(config.validate().is_ok());
    assert_eq!(config.stages()[0].config_json(), r#"{"field":"amount"}"#);
    config.push_stage(native().set_config(serde_json::json!([1, 2])));
    let errors = config.validate().unwrap_err().to_string();
    assert!(errors.contains("stage `n`: its config must be a table (a JSON object), not [1,2]"), "{errors}");
}

#[test]
fn a_config_table_reaches_init_as_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.wasm"), b"").unwrap();
    let text = "version = 1\n[[stages]]\nname = \"a\"\nplugin = \"a.wasm\"\n\
                config = { field = \"amount\", gte = 100, when = 1979-05-27, list = [1.5, true] }\n";
    let config = PipelineConfig::parse(text, Some(&dir.path().join("p.toml"))).unwrap();
    assert_eq!(
        config.stages()[0].config_json(),
        r#"{"field":"amount","gte":100,"list":[1.5,true],"when":"1979-05-27"}"#
    );
}
