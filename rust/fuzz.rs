//! The code the fuzz targets in `fuzz/` run (RELIABILITY.md test 10), one function per
//! target, so that `cargo test` replays their corpus (`tests/corpus/<target>/`) through
//! exactly the same calls.
//!
//! Each function hands arbitrary bytes to the parsers of one boundary: what a caller sends
//! (`canonicalize`, `query_args`) and what is read back from LMDB (`stored_record`,
//! `stored_value`). None of them may panic, hang, or allocate without bound by a length the
//! bytes claim. A function panics itself only when an invariant between two parts of the
//! core breaks, such as a validated trace the writer could not summarize.

use std::sync::LazyLock;

use crate::codec::{self, Dictionary, Encoder};
use crate::decision::{self, Envelope};
use crate::error::FieldError;
use crate::ids;
use crate::merge::MergeState;
use crate::msgpack::{self, Reader, Token};
use crate::query::{self, Filters, PageRequest};
use crate::redact::{Mode, Redaction};
use crate::schema::{self, Canonical, Limits};
use crate::store::{self, Durability, Options, Store};
use crate::summary::{self, Numbers, Summary, Texts};
use crate::time::Timestamp;

/// The default `timestamp` of fuzzed traces: fixed, so a corpus file always does the same.
const NOW: Timestamp = Timestamp { secs: 1_750_000_000, nanos: 0 };

/// Limits small enough for short inputs to reach every "too large" path.
const TIGHT: Limits = Limits { max_trace_bytes: 2048, max_depth: 4, max_spans: 3 };

/// A trace as `Store::log` and `Store::log_many` receive it: canonicalized under the
/// default policy, under tight limits with `redaction="reject"`, and as a batch.
pub fn canonicalize(data: &[u8]) {
    static REJECT: LazyLock<Redaction> =
        LazyLock::new(|| Redaction::new(Mode::Reject, &[], &[]).expect("no custom rules"));
    let policies = [(&Limits::default(), &Redaction::default()), (&TIGHT, &*REJECT)];
    for (limits, redaction) in policies {
        match schema::canonicalize(data, limits, redaction, NOW) {
            Ok(trace) => accepted(&trace, redaction),
            Err(errors) => refused(&errors),
        }
    }
    match schema::canonicalize_many(data, &Limits::default(), &Redaction::default(), NOW) {
        Ok(traces) => traces.iter().for_each(|trace| accepted(trace, &Redaction::default())),
        Err(errors) => refused(&errors),
    }
}

/// A refused trace names at least one problem and at most the 100 the schema lists.
fn refused(errors: &[FieldError]) {
    assert!((1..=100).contains(&errors.len()), "{} errors: {errors:?}", errors.len());
}

/// What the writer and later reads do with an accepted trace, and the schema's promise
/// that canonical output is valid input that canonicalizes to itself.
fn accepted(trace: &Canonical, redaction: &Redaction) {
    summarize(&trace.bytes).expect("the writer summarizes every trace the schema accepts");
    let again = schema::canonicalize(&trace.bytes, &Limits::default(), redaction, NOW)
        .unwrap_or_else(|errors| panic!("canonical output is refused: {errors:?}"));
    assert_eq!(again.trace_id, trace.trace_id);
    assert!(again.resend_key.is_some(), "a canonical record names its trace");
    // Redacting again finds nothing, so only a record without redactions is a fixed point.
    if redactions(&trace.bytes) == Some(0) {
        assert!(again.bytes == trace.bytes, "canonical output is not a fixed point");
    }
}

/// The `redactions` count of a canonical record.
fn redactions(canonical: &[u8]) -> Option<u64> {
    let mut reader = Reader::new(canonical);
    let Ok(Token::Map(entries)) = reader.read_token() else { return None };
    for _ in 0..entries {
        let key = reader.read_token().ok()?;
        if key == Token::Str(b"redactions") {
            return match reader.read_token().ok()? {
                Token::UInt(count) => Some(count),
                _ => None,
            };
        }
        reader.skip_value().ok()?;
    }
    None
}

/// What the writer derives from an accepted trace (its summary and merge state) and stores,
/// which must read back as written. Errors only when the record is not a trace.
fn summarize(canonical: &[u8]) -> Result<(), String> {
    let (summary, contribution) = Summary::of_fragment(canonical)?;
    let stored = summary.encode();
    let read = Summary::decode(&stored).expect("a summary the writer stores decodes");
    assert!(read.encode() == stored, "a stored summary does not read back as written");
    let mut state = MergeState::default();
    state.fold(&contribution, Some(1));
    let stored = state.encode();
    let read = MergeState::decode(&stored).expect("a merge state the writer stores decodes");
    assert!(read.encode() == stored, "a stored merge state does not read back as written");
    Ok(())
}

/// Raw content that zstd accepts as a dictionary without training: what most records
/// share. `fuzz/seed_corpus.py` writes codec-2 seeds with the same bytes.
pub const DICTIONARY: &[u8] = b"agent_name trace_id timestamp spans span_id parent_span_id name \
kind LLM TOOL AGENT status_code UNSET OK ERROR start_time end_time duration_ms attributes \
gen_ai.usage.input_tokens gen_ai.usage.output_tokens tool_calls tool_name input output \
latency_ms cost_usd token_usage prompt_tokens completion_tokens total_tokens events event_id \
type metadata status succeeded failed tags redactions";

/// The id `DICTIONARY` has in the fuzzed values (dictionary ids start at 1).
pub const DICTIONARY_ID: u32 = 1;

static FUZZ_DICTIONARY: LazyLock<Dictionary> = LazyLock::new(|| {
    Dictionary::new(DICTIONARY_ID, DICTIONARY).expect("zstd takes raw content as a dictionary")
});

/// A value of `records`, decoded as `Core::decode_record` does when its dictionary is in
/// the store and when it is not, then summarized as `Core::merge_state` does. Whatever
/// decodes must survive being encoded and decoded again, with and without the dictionary.
pub fn stored_record(data: &[u8]) {
    let dictionary = &*FUZZ_DICTIONARY;
    let _ = codec::decode(data, None);
    rebuild_merge_state(data);
    if let Ok(canonical) = codec::decode(data, Some(dictionary)) {
        rebuild_merge_state(&canonical);
        round_trip(&canonical, dictionary);
    }
    round_trip(data, dictionary);
}

/// What `Core::merge_state` does with each stored fragment of a trace that has none.
fn rebuild_merge_state(canonical: &[u8]) {
    if let Ok((_, contribution)) = Summary::of_fragment(canonical) {
        MergeState::default().fold(&contribution, None);
    }
}

fn round_trip(canonical: &[u8], dictionary: &Dictionary) {
    let mut encoder = Encoder::default();
    for with in [None, Some(dictionary)] {
        let value = encoder.encode(canonical, with);
        let needs = codec::dictionary_id(&value).map(|_| dictionary);
        let decoded = codec::decode(&value, needs)
            .unwrap_or_else(|why| panic!("an encoded record does not decode: {why}"));
        assert!(decoded == canonical, "an encoded record decodes to other bytes");
    }
}

/// A value of `summaries`, `merges`, `decisions` or `dicts`, or a key of `records`,
/// `by_time` or `index`, read as the queries, the writer and `check` read them. A value
/// that decodes must encode back to bytes that decode to the same value.
pub fn stored_value(data: &[u8]) {
    if let Ok(summary) = Summary::decode(data) {
        let stored = summary.encode();
        assert!(Summary::decode(&stored).map(|s| s.encode()) == Ok(stored), "summary");
    }
    if Numbers::read(data).is_ok() {
        if let Ok(texts) = Texts::read(data) {
            if let Ok(tags) = texts.tags() {
                tags.for_each(drop);
            }
        }
    }
    if let Ok(state) = MergeState::decode(data) {
        let stored = state.encode();
        assert!(MergeState::decode(&stored).map(|s| s.encode()) == Ok(stored), "merge state");
    }
    if let Ok(envelope) = Envelope::decode(data) {
        assert!(Envelope::decode(&envelope.encode()) == Ok(envelope), "envelope");
    }
    if let Some((at, id)) = summary::parse_time_key(data) {
        assert!(data.ends_with(&summary::time_key(at, &id)), "time key");
    }
    if let Some(seq) = store::parse_seq_key(data) {
        assert_eq!(store::seq_key(seq), data, "sequence key");
    }
    if let Ok(dictionary) = Dictionary::new(DICTIONARY_ID, data) {
        round_trip(DICTIONARY, &dictionary);
    }
}

/// What a caller passes to `query`, `count`, `stats`, `delete_where` and the time bounds
/// of the decision calls: the bytes as msgpack filters and as an instant, and as a cursor
/// (hex, as `query` returns them, and as text). Filters that parse are run against a small
/// store whose traces span the whole time range.
pub fn query_args(data: &[u8]) {
    let parsed = Filters::parse(data);
    // Unlike a trace's, filter errors are not capped: one per bad filter or array item.
    assert!(parsed.as_ref().err().map_or(true, |errors| !errors.is_empty()), "no error named");
    let _ = query::parse_instant_bytes(data);
    let cursors = [ids::to_hex(data), String::from_utf8_lossy(data).into_owned()];
    let _ = decision::parse_decision_id(&cursors[1]);
    let store = &*QUERY_STORE;
    for order_by in ["timestamp", "latency_ms", "cost_usd"] {
        for descending in [false, true] {
            for cursor in &cursors {
                let Ok(page) = PageRequest::new(order_by, descending, 2, Some(cursor.clone()))
                else {
                    continue;
                };
                let _ = store.query(b"\x80", &page);
            }
            if parsed.is_ok() {
                let page = PageRequest::new(order_by, descending, 2, None).expect("valid");
                let _ = store.query(data, &page);
            }
        }
    }
    if parsed.is_ok() {
        let _ = store.count(data);
        let _ = store.stats(data, None);
        let _ = store.stats(data, Some("agent_name"));
    }
}

/// A store of a few traces, from the first instant to the last a trace may have. Its files
/// are removed once it is written: the open environment keeps its mapping, and nothing is
/// left behind when the process ends.
static QUERY_STORE: LazyLock<Store> = LazyLock::new(|| {
    let dir = std::env::temp_dir().join(format!("flightlog-fuzz-{}", std::process::id()));
    let options = Options { durability: Durability::None, ..Options::default() };
    let store = Store::open(&dir, options).expect("a store in the temporary directory");
    let stamps = [
        "0001-01-01T00:00:00Z",
        "1969-12-31T23:59:59.999999Z",
        "2025-06-02T12:00:00Z",
        "9999-12-31T23:59:59.999999Z",
    ];
    for (i, at) in stamps.iter().enumerate() {
        store.log(&query_trace(i, at)).expect("a valid trace");
    }
    store.flush(None).expect("written");
    let _ = std::fs::remove_dir_all(&dir);
    store
});

/// One trace with every field a filter can name.
fn query_trace(i: usize, timestamp: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let map = msgpack::begin_map(&mut out, 9);
    for (key, value) in [
        ("agent_name", ["support-bot", "billing-bot"][i % 2]),
        ("framework", "langgraph"),
        ("run_id", &*format!("run-{i}")),
        ("session_id", "s"),
        ("status", ["running", "succeeded", "failed"][i % 3]),
        ("timestamp", timestamp),
    ] {
        msgpack::write_str(&mut out, key);
        msgpack::write_str(&mut out, value);
    }
    msgpack::write_str(&mut out, "latency_ms");
    msgpack::write_f64(&mut out, i as f64 * 250.5);
    msgpack::write_str(&mut out, "cost_usd");
    msgpack::write_f64(&mut out, i as f64 / 1000.0);
    msgpack::write_str(&mut out, "tags");
    msgpack::write_array_header(&mut out, 2);
    msgpack::write_str(&mut out, "prod");
    // Up to 180 bytes: tags longer than 128 bytes are indexed by their hash.
    msgpack::write_str(&mut out, &"é".repeat(60 + i * 10));
    msgpack::finish_map(&mut out, map, 9);
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every file of `tests/corpus/<target>/`; fails when there are none, so a moved or
    /// emptied corpus cannot make the replay pass vacuously.
    fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus").join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| {
                let path = entry.expect("a directory entry").path();
                let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
                (name, std::fs::read(&path).expect("a corpus file"))
            })
            .collect();
        files.sort();
        assert!(files.len() >= 10, "{} holds only {} files", dir.display(), files.len());
        files
    }

    fn replay(target: &str, run: fn(&[u8])) {
        for (name, bytes) in corpus(target) {
            let outcome = std::panic::catch_unwind(|| run(&bytes));
            assert!(outcome.is_ok(), "tests/corpus/{target}/{name} panics the core");
        }
    }

    #[test]
    fn the_canonicalize_corpus_replays_without_a_panic() {
        replay("canonicalize", super::canonicalize);
    }

    #[test]
    fn the_stored_record_corpus_replays_without_a_panic() {
        replay("stored_record", super::stored_record);
    }

    #[test]
    fn the_stored_value_corpus_replays_without_a_panic() {
        replay("stored_value", super::stored_value);
    }

    #[test]
    fn the_query_args_corpus_replays_without_a_panic() {
        replay("query_args", super::query_args);
    }

    /// The corpus starts from real payloads: it must keep reaching past the parsers'
    /// first checks into accepted traces and decoded values of every codec.
    #[test]
    fn the_corpus_reaches_accepted_traces_and_every_codec() {
        use crate::codec;
        use crate::redact::Redaction;
        use crate::schema::{self, Limits};
        let accepted = corpus("canonicalize")
            .iter()
            .filter(|(_, bytes)| {
                schema::canonicalize(bytes, &Limits::default(), &Redaction::default(), super::NOW)
                    .is_ok()
            })
            .count();
        assert!(accepted >= 10, "only {accepted} corpus traces are accepted");
        let mut codecs = [false; 3];
        for (_, value) in corpus("stored_record") {
            if codec::decode(&value, Some(&super::FUZZ_DICTIONARY)).is_ok() {
                codecs[usize::from(value[1])] = true;
            }
        }
        assert_eq!(codecs, [true; 3], "decodable values of codecs 0, 1 and 2");
    }
}
