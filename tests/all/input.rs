//! What the source does with lines that are not messages: blank lines are
//! skipped and counted, lines that are not JSON are dead-lettered as `input`.

use crate::support::{Scratch, guests, header, read_json_lines, read_lines, stage};

#[tokio::test(flavor = "multi_thread")]
async fn blank_lines_are_counted_as_skipped_and_invalid_utf8_is_an_input_error() {
    let scratch = Scratch::new();
    // Line 4 is JSON in form, but a string holds a byte that is not UTF-8:
    // not JSON text (RFC 8259), so the source refuses it, not the stage.
    scratch.write("input", b"{\"n\":1}\n\n  \t\n{\"n\":\"\xff\"}\n{\"n\":2}\n");
    let pipeline = scratch.build(&(header("jsonl") + &stage("t", guests::TEST_STAGE, ""))).await.unwrap();
    let report = pipeline.run().await.unwrap();

    assert_eq!(read_lines(&scratch.path("out")), [r#"{"n":1}"#, r#"{"n":2}"#]);
    let dead = read_json_lines(&scratch.path("dead.jsonl"));
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0]["stage"], "source");
    assert_eq!(dead[0]["error"], "input");
    assert_eq!(dead[0]["reason"], "not JSON: not UTF-8 (invalid utf-8 sequence of 1 bytes from index 6)");
    assert_eq!(dead[0]["input"]["line"], 4);

    assert_eq!((report.read, report.skipped, report.written, report.dead_lettered), (3, 2, 2, 1));
    assert_eq!(report.stages[0].input, 2, "neither blank lines nor bad input reach the stage");
    let summary = report.to_string();
    assert!(summary.starts_with("3 read, 2 written, 1 dead-lettered, 2 blank lines skipped in "), "{summary}");
}
