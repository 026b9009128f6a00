use super::pending::{PENDING_ENTRY_OVERHEAD, Quota};
use super::*;
use std::sync::Arc;

/// The default `state.max_pending_bytes`.
const DEFAULT_MAX_PENDING: usize = 256 << 20;

const ROOMY: Quota = Quota { max_key: 4096, max_value: 1 << 20, max_total: 64 << 20 };

fn scope(store: &Arc<StateStore>, stage: &str, keyed: bool) -> StateScope {
    StateScope::new(store.clone(), stage.into(), keyed, ROOMY)
}

fn breach(result: Result<(), WriteError>) -> String {
    match result {
        Err(WriteError::Limit(breach)) => breach.to_string(),
        other => panic!("expected a breach, got {other:?}"),
    }
}

#[test]
fn reads_see_pending_writes_and_commits_make_them_durable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    {
        let store = Arc::new(StateStore::open(&path, DEFAULT_MAX_PENDING));
        let mut s = scope(&store, "count", false);
        s.set(b"a", Some(b"1".to_vec())).unwrap();
        s.set(b"b", Some(b"2".to_vec())).unwrap();
        assert_eq!(s.get(b"a").unwrap(), Some(b"1".to_vec()), "the call sees its own writes");
        s.keep_writes();
        assert_eq!(scope(&store, "count", false).get(b"a").unwrap(), Some(b"1".to_vec()), "visible before commit");
        store.commit(Some(Checkpoint { source: 7, sink: 10, dead_letters: 0, ..Default::default() })).unwrap();
        s.set(b"b", None).unwrap();
        s.set(b"c", Some(b"3".to_vec())).unwrap();
        s.keep_writes();
        // Not committed: lost with the process.
    }
    let store = Arc::new(StateStore::open(&path, DEFAULT_MAX_PENDING));
    let s = scope(&store, "count", false);
    assert_eq!(s.get(b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(s.get(b"b").unwrap(), Some(b"2".to_vec()), "the deletion was never committed");
    assert_eq!(s.get(b"c").unwrap(), None);
    assert_eq!(
        store.checkpoint().unwrap(),
        Some(Checkpoint { source: 7, sink: 10, dead_letters: 0, ..Default::default() })
    );
    store.commit(None).unwrap();
    assert_eq!(store.checkpoint().unwrap(), None, "a finished run clears its checkpoint");
}

#[test]
fn stages_and_partitions_do_not_see_each_others_keys() {
    let store = Arc::new(StateStore::memory());
    let (mut a, mut keyed) = (scope(&store, "a", false), scope(&store, "k", true));
    a.set(b"x", Some(b"a".to_vec())).unwrap();
    a.keep_writes();
    keyed.enter(Some(b"user-1"));
    keyed.set(b"x", Some(b"1".to_vec())).unwrap();
    keyed.keep_writes();
    keyed.enter(Some(b"user-2"));
    assert_eq!(keyed.get(b"x").unwrap(), None);
    keyed.set(b"x", Some(b"2".to_vec())).unwrap();
    keyed.keep_writes();
    keyed.enter(Some(b"user-1"));
    assert_eq!(keyed.get(b"x").unwrap(), Some(b"1".to_vec()));
    assert_eq!(scope(&store, "b", false).get(b"x").unwrap(), None);
    assert_eq!(a.get(b"x").unwrap(), Some(b"a".to_vec()));
}

#[test]
fn scan_merges_pending_over_committed_in_key_order() {
    let store = Arc::new(StateStore::memory());
    let mut s = scope(&store, "s", false);
    for k in ["p1", "p2", "p3", "q1"] {
        s.set(k.as_bytes(), Some(k.as_bytes().to_vec())).unwrap();
    }
    s.keep_writes();
    store.commit(None).unwrap();
    s.set(b"p2", None).unwrap();
    s.keep_writes();
    s.set(b"p0", Some(b"new".to_vec())).unwrap();
    let keys: Vec<Vec<u8>> = s.scan(b"p", 10).unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, [b"p0".to_vec(), b"p1".to_vec(), b"p3".to_vec()]);
    assert_eq!(s.scan(b"p", 2).unwrap().len(), 2);
    s.drop_writes();
    assert_eq!(s.get(b"p0").unwrap(), None, "a dropped call's writes are gone");
}

#[test]
fn keys_and_values_over_their_caps_are_named_breaches_and_not_written() {
    let store = Arc::new(StateStore::memory());
    let quota = Quota { max_key: 8, max_value: 16, max_total: 1 << 20 };
    let mut s = StateScope::new(store.clone(), "s".into(), false, quota);
    s.set(b"12345678", Some(vec![0; 16])).unwrap();
    assert_eq!(
        breach(s.set(b"123456789", Some(b"v".to_vec()))),
        "wrote a state key of 9 bytes, over the 8 allowed (limits.max_state_key_bytes)"
    );
    assert_eq!(
        breach(s.set(b"k", Some(vec![0; 17]))),
        "wrote a state value of 17 bytes, over the 16 bytes allowed (limits.max_state_value_bytes)"
    );
    assert_eq!(breach(s.set(&[b'k'; 9], None)), breach(s.set(b"123456789", Some(vec![]))), "deletes too");
    s.keep_writes();
    assert_eq!(s.get(b"k").unwrap(), None);
    assert_eq!(s.get(b"12345678").unwrap(), Some(vec![0; 16]));
}

#[test]
fn a_scope_holds_up_to_its_quota_counting_overwrites_and_deletions() {
    let store = Arc::new(StateStore::memory());
    let quota = Quota { max_key: 64, max_value: 64, max_total: 30 };
    let mut s = StateScope::new(store.clone(), "s".into(), false, quota);
    s.set(b"a", Some(vec![0; 9])).unwrap(); // 10 bytes
    s.set(b"b", Some(vec![0; 9])).unwrap(); // 20
    s.keep_writes();
    s.set(b"a", Some(vec![0; 19])).unwrap(); // a grows to 20: 30 in all
    assert_eq!(
        breach(s.set(b"c", Some(vec![]))),
        "would hold 31 bytes of state for this stage, over the 30 bytes allowed (limits.max_state_bytes)"
    );
    s.drop_writes();
    s.set(b"c", Some(vec![0; 9])).unwrap(); // the dropped call's growth is forgotten: 30
    s.keep_writes();
    assert!(s.set(b"d", Some(vec![])).is_err(), "full");
    s.set(b"b", None).unwrap();
    s.set(b"d", Some(vec![0; 9])).unwrap(); // a deletion makes room in the same call
    s.keep_writes();
    let mut other = StateScope::new(store.clone(), "t".into(), false, quota);
    other.set(b"x", Some(vec![0; 29])).unwrap();
    assert!(other.set(b"y", Some(vec![])).is_err(), "the other stage has its own 30");
}

#[test]
fn a_scopes_count_survives_a_restart_and_keyed_partitions_have_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let quota = Quota { max_key: 64, max_value: 64, max_total: 20 };
    {
        let store = Arc::new(StateStore::open(&path, DEFAULT_MAX_PENDING));
        let mut s = StateScope::new(store.clone(), "k".into(), true, quota);
        s.enter(Some(b"u1"));
        s.set(b"a", Some(vec![0; 19])).unwrap();
        s.keep_writes();
        store.commit(None).unwrap();
    }
    let store = Arc::new(StateStore::open(&path, DEFAULT_MAX_PENDING));
    let mut s = StateScope::new(store.clone(), "k".into(), true, quota);
    s.enter(Some(b"u1"));
    assert_eq!(
        breach(s.set(b"b", Some(vec![]))),
        "would hold 21 bytes of state for this message key, over the 20 bytes allowed (limits.max_state_bytes)"
    );
    s.set(b"a", Some(vec![0; 18])).unwrap();
    s.keep_writes();
    s.enter(Some(b"u2"));
    s.set(b"a", Some(vec![0; 19])).unwrap();
    s.keep_writes();
    s.enter(Some(b"u1"));
    s.set(b"b", Some(vec![])).unwrap();
    s.keep_writes();
    assert!(s.set(b"c", Some(vec![])).is_err());
}

#[test]
fn pending_writes_are_bounded_and_a_checkpoint_is_due_at_half() {
    let dir = tempfile::tempdir().unwrap();
    let entry = PENDING_ENTRY_OVERHEAD + 2 + 100; // "s\0" + key "k<i>" ... counted below
    let store = Arc::new(StateStore::open(&dir.path().join("state.redb"), 10 * entry));
    let mut s = scope(&store, "s", false);
    let mut kept = 0;
    for i in 0..100 {
        match s.set(format!("{i:02}").as_bytes(), Some(vec![0; 98])) {
            Ok(()) => {
                s.keep_writes();
                kept += 1;
            }
            Err(e) => {
                assert!(breach(Err(e)).ends_with("(state.max_pending_bytes)"));
                break;
            }
        }
        assert_eq!(store.pending_past_mark(), kept > 5, "after {kept} entries");
    }
    assert_eq!(kept, 10, "ten entries of {entry} bytes fill the budget");
    store.commit(None).unwrap();
    assert!(!store.pending_past_mark());
    s.set(b"10", Some(vec![0; 98])).unwrap();
    s.keep_writes();
    assert_eq!(s.get(b"09").unwrap().map(|v| v.len()), Some(98), "committed");
}

#[test]
fn clearing_removes_a_stages_state_or_all_and_an_unfinished_runs_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let store = Arc::new(StateStore::open(&path, DEFAULT_MAX_PENDING));
    for (stage, keyed) in [("a", false), ("ab", false), ("k", true)] {
        let mut s = scope(&store, stage, keyed);
        s.enter(Some(b"u"));
        s.set(b"x", Some(b"1".to_vec())).unwrap();
        s.set(b"y", Some(b"2".to_vec())).unwrap();
        s.keep_writes();
    }
    let checkpoint = Checkpoint { source: 3, sink: 0, dead_letters: 0, ..Default::default() };
    store.commit(Some(checkpoint.clone())).unwrap();
    assert!(clear_state(&path, None).unwrap_err().to_string().contains("is the pipeline running?"));
    drop(store);

    let cleared = clear_state(&path, Some("a")).unwrap();
    assert_eq!(cleared, Cleared { entries: 2, bytes: 2 * (b"a\0x".len() as u64 + 1), checkpoint: None });
    assert!(read_state(&path, "a", false).unwrap().is_empty());
    assert_eq!(read_state(&path, "ab", false).unwrap().len(), 2, "a stage whose name starts alike is kept");
    assert_eq!(read_checkpoint(&path).unwrap(), Some(checkpoint.clone()), "the other stages' position is kept");
    let cleared = clear_state(&path, None).unwrap();
    assert_eq!((cleared.entries, cleared.checkpoint), (4, Some(checkpoint)), "all state: the checkpoint goes");
    assert_eq!(read_checkpoint(&path).unwrap(), None);
    assert!(read_state(&path, "k", true).unwrap().is_empty());
}

#[test]
fn a_store_no_stage_writes_to_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let store = Arc::new(StateStore::open(&path, DEFAULT_MAX_PENDING));
    let mut s = scope(&store, "s", false);
    assert_eq!(s.get(b"a").unwrap(), None);
    assert!(s.scan(b"", 10).unwrap().is_empty());
    s.set(b"a", None).unwrap();
    s.keep_writes();
    assert!(!store.has_pending(), "deleting what the store does not hold is no write");
    store.commit(Some(Checkpoint { source: 1, sink: 0, dead_letters: 0, ..Default::default() })).unwrap();
    assert!(!path.exists() && !store.has_committed());
    assert_eq!(read_checkpoint(&path).unwrap(), None);
    for error in [read_state(&path, "s", false).unwrap_err(), clear_state(&path, None).unwrap_err()] {
        assert!(error.to_string().ends_with(NO_STATE_FILE), "{error}");
    }
}

#[test]
fn written_state_is_what_the_next_run_reads_and_an_unfinished_runs_checkpoint_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let checkpoint = Checkpoint { source: 5, sink: 0, dead_letters: 0, ..Default::default() };
    {
        let store = Arc::new(StateStore::open(&path, DEFAULT_MAX_PENDING));
        let mut s = scope(&store, "count", false);
        s.set(b"a", Some(b"1".to_vec())).unwrap();
        s.set(b"b", Some(b"2".to_vec())).unwrap();
        s.keep_writes();
        store.commit(Some(checkpoint.clone())).unwrap();
    }
    let entry = |partition: Option<&[u8]>, key: &[u8], value: &[u8]| StateEntry {
        partition: partition.map(<[u8]>::to_vec),
        key: key.to_vec(),
        value: value.to_vec(),
    };
    write_state(&path, "count", &[entry(None, b"a", b"10"), entry(None, b"c", b"3")]).unwrap();
    write_state(&path, "keyed", &[entry(Some(b"user-1"), b"x", b"7"), entry(Some(b""), b"x", b"8")]).unwrap();

    let store = Arc::new(StateStore::open(&path, DEFAULT_MAX_PENDING));
    let s = scope(&store, "count", false);
    assert_eq!(s.get(b"a").unwrap(), Some(b"10".to_vec()), "written over the committed value");
    assert_eq!(s.get(b"b").unwrap(), Some(b"2".to_vec()), "entries not written are kept");
    assert_eq!(s.get(b"c").unwrap(), Some(b"3".to_vec()));
    let mut keyed = scope(&store, "keyed", true);
    keyed.enter(Some(b"user-1"));
    assert_eq!(keyed.get(b"x").unwrap(), Some(b"7".to_vec()), "a partition's entry is its message key's");
    keyed.enter(Some(b"user-2"));
    assert_eq!(keyed.get(b"x").unwrap(), None);
    assert_eq!(store.checkpoint().unwrap(), Some(checkpoint));
    drop((s, keyed, store));
    let read = read_state(&path, "keyed", true).unwrap();
    assert_eq!(read, vec![entry(Some(b""), b"x", b"8"), entry(Some(b"user-1"), b"x", b"7")], "read back as written");
}

#[test]
fn the_record_of_a_brokers_inputs_outlives_the_checkpoint_until_replaced_or_the_state_is_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let record = |positions: Vec<(u64, u64)>| AppliedRecord {
        source: "nats:IN/c".into(),
        groups: vec![AppliedGroup { until_ms: u64::MAX, positions }],
    };
    {
        let store = Arc::new(StateStore::open(&path, DEFAULT_MAX_PENDING));
        let mut s = scope(&store, "count", false);
        s.set(b"a", Some(b"1".to_vec())).unwrap();
        s.keep_writes();
        store
            .commit(Some(Checkpoint { source: 3, applied: Some(record(vec![(1, 3)])), ..Default::default() }))
            .unwrap();
        assert_eq!(store.checkpoint().unwrap().map(|c| c.applied), Some(None), "not in the checkpoint's own record");
        // A checkpoint without a record leaves it as it was.
        store.commit(Some(Checkpoint { source: 4, ..Default::default() })).unwrap();
        assert_eq!(store.applied().unwrap(), Some(record(vec![(1, 3)])));
        store
            .commit(Some(Checkpoint { source: 5, applied: Some(record(vec![(4, 5)])), ..Default::default() }))
            .unwrap();
        // The run's end clears its checkpoint, not the record.
        store.commit(None).unwrap();
    }
    let store = StateStore::open(&path, DEFAULT_MAX_PENDING);
    assert_eq!(store.checkpoint().unwrap(), None);
    assert_eq!(store.applied().unwrap(), Some(record(vec![(4, 5)])));
    drop(store);
    // A stage's state cleared keeps it; all the state cleared does not.
    clear_state(&path, Some("other")).unwrap();
    assert!(StateStore::open(&path, DEFAULT_MAX_PENDING).applied().unwrap().is_some());
    clear_state(&path, None).unwrap();
    assert_eq!(StateStore::open(&path, DEFAULT_MAX_PENDING).applied().unwrap(), None);
}
