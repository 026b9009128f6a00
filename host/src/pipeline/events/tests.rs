use super::*;
use crate::pipeline::dead_letter::Kind;
use crate::pipeline::stats::StageStats;
use std::time::Duration;

fn stage(events: &Events) -> StageStats {
    events.snapshot().stages.remove(0)
}

#[test]
fn a_keyed_stage_counts_queued_messages_as_input_not_in_flight() {
    let events = Events::new(["s".to_string()]);
    let s = events.stage(0);
    s.emit(Started { messages: 1 });
    s.emit(Queued);
    s.emit(Queued);
    let now = stage(&events);
    assert_eq!((now.input, now.in_flight, now.queued), (3, 1, 2));
    let mut job = JobFinished::new(1);
    assert!(job.took(Duration::from_millis(1)).is_none());
    s.emit(job);
    s.emit(Unqueued { messages: 2 });
    let now = stage(&events);
    assert_eq!((now.input, now.in_flight, now.queued), (3, 2, 0));
}

#[test]
fn a_job_records_its_outcomes_latencies_and_batch_size_once() {
    let events = Events::new(["s".to_string()]);
    let s = events.stage(0);
    s.emit(Started { messages: 4 });
    let mut job = JobFinished::new(4);
    // Three messages settled by the batch call, one run again alone.
    let mut earlier = Vec::new();
    for took in [2, 2, 2, 40] {
        earlier.extend(job.took(Duration::from_millis(took)));
    }
    assert_eq!(earlier.len(), 1, "the batch's run is handed back when a message took another time");
    earlier.into_iter().for_each(|e| s.emit(e));
    job.outputs = 2;
    job.dropped = 1;
    job.retried = 3;
    job.trapped = 1;
    job.dead_lettered(Kind::Trap);
    s.emit(job);
    let now = stage(&events);
    assert_eq!((now.input, now.output, now.dropped, now.retried, now.trapped), (4, 2, 1, 3, 1));
    assert_eq!((now.dead_lettered, now.dead_letters.trap, now.in_flight), (1, 1, 0));
    assert_eq!((now.latency_us.count, now.latency_us.sum), (4, 3 * 2000 + 40_000));
    assert_eq!(now.latency_us.p50 / 100, 20, "2 ms, within the histogram's 2 digits");
    assert_eq!((now.batch_size.count, now.batch_size.max), (1, 4));
}

#[test]
fn dead_letters_are_counted_by_kind_and_in_all() {
    let events = Events::new(Vec::new());
    for kind in [Kind::Input, Kind::Input, Kind::Output, Kind::Limit] {
        events.emit(DeadLettered { kind });
    }
    events.emit(InputRead { bytes: 10 });
    events.emit(BlankSkipped { bytes: 1 });
    events.emit(Written { messages: 0 });
    events.emit(Written { messages: 7 });
    events.emit(CheckpointTaken { took: Duration::from_millis(3) });
    let stats = events.snapshot();
    assert_eq!((stats.read, stats.skipped, stats.written, stats.dead_lettered), (1, 1, 7, 4));
    assert_eq!(stats.bytes_read, 11, "blank lines take bytes of the file too");
    let by_kind = &stats.dead_letters;
    assert_eq!((by_kind.input, by_kind.output, by_kind.limit, by_kind.trap), (2, 1, 1, 0));
    assert_eq!((stats.checkpoint_us.count, stats.checkpoint_us.sum), (1, 3000));
}
