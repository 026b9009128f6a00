//! The README's quickstart, exactly as shipped in `examples/quickstart/`.

use crate::support::{Scratch, read_json_lines, read_lines, root};
use sluice::{Pipeline, PipelineConfig};

#[tokio::test(flavor = "multi_thread")]
async fn quickstart_filters_redacts_tags_and_dead_letters() {
    let scratch = Scratch::new();
    let mut config = PipelineConfig::from_file(root().join("examples/quickstart/pipeline.toml")).unwrap();
    config.set_output(scratch.path("out.jsonl"));
    config.set_dead_letter(scratch.path("dead.jsonl"));
    let report = Pipeline::build(config).await.unwrap().run().await.unwrap();

    let output = read_lines(&scratch.path("out.jsonl"));
    let expected = [
        r#"{"id": 1, "card": "****1111", "customer": {"name": "Ada", "email": "****.com"}, "amount_eur": 250.0, "review": {"queue": "large-orders"}}"#,
        r#"{"id": 3, "card": "****0009", "customer": {"name": "Chen", "email": "****.org"}, "amount_eur": 980, "review": {"queue": "large-orders"}}"#,
        r#"{"id": 5, "card": "****0000", "customer": {"name": "Emeka", "email": "****.com"}, "amount_eur": 100, "review": {"queue": "large-orders"}}"#,
        r#"{"id": 7, "card": "****2222", "customer": {"name": "Goran"}, "amount_eur": 1500, "review": {"queue": "large-orders"}}"#,
        r#"{"id": 10, "card": "****5556", "customer": {"name": "Ivo", "email": "****.com"}, "amount_eur": 310.4, "review": {"queue": "large-orders"}}"#,
    ];
    assert_eq!(output, expected);

    let dead = read_json_lines(&scratch.path("dead.jsonl"));
    assert_eq!(dead.len(), 2, "{dead:#?}");
    let by_stage = |stage: &str| {
        dead.iter().find(|d| d["stage"] == stage).unwrap_or_else(|| panic!("no dead letter from {stage}"))
    };
    let rejected = by_stage("large-orders");
    assert_eq!(rejected["error"], "invalid");
    assert_eq!(rejected["reason"], "field `amount` is a string, but `gte` needs a number");
    assert_eq!(rejected["input"]["line"], 4);
    assert_eq!(rejected["message"]["value"]["id"], 4, "the original record is kept");
    let not_json = by_stage("source");
    assert_eq!(not_json["error"], "input");
    assert_eq!(not_json["input"]["line"], 8);
    assert_eq!(not_json["message"]["value_text"], "this line is not JSON");

    assert_eq!((report.read, report.written, report.dead_lettered), (10, 5, 2));
    let filter = &report.stages[0];
    assert_eq!((filter.input, filter.output, filter.dropped, filter.dead_lettered), (9, 5, 3, 1));
    for later in &report.stages[1..] {
        assert_eq!((later.input, later.output), (5, 5), "{}", later.name);
    }
}
