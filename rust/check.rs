//! `flightlog check`: verifies, in one read transaction, that the databases agree with each
//! other (docs/format.md): records decode (to one msgpack map) and are each listed once in
//! `fragments`, every trace has a summary and every summary a trace, and `index` /
//! `by_time` hold exactly the keys the summaries produce.

use heed::{RoTxn, WithoutTls};

use crate::decision;
use crate::error::{Error, Result};
use crate::ids::{to_hex, TraceId};
use crate::merge::MergeState;
use crate::msgpack::{
    begin_map, finish_map, write_array_header, write_bool, write_str, write_uint, Reader, Token,
};
use crate::store::{parse_seq_key, Core};
use crate::summary::{parse_time_key, time_key, Summary};

/// Problems listed at most; the rest are only counted.
const MAX_PROBLEMS: usize = 100;

/// What `check` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Trace ids in `fragments`.
    pub traces: u64,
    /// Values in `records`.
    pub records: u64,
    /// Keys in `index`.
    pub index_entries: u64,
    /// Decisions whose chain was verified.
    pub decisions: u64,
    /// One line per problem, naming the database and key in hex; at most 100 (the last line
    /// then says how many more there were).
    pub problems: Vec<String>,
}

impl CheckReport {
    /// True when no problem was found.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// `{ok, traces, records, index_entries, problems}` as a msgpack map.
    pub fn to_msgpack(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(64 + self.problems.iter().map(|p| p.len() + 3).sum::<usize>());
        let map = begin_map(&mut out, 6);
        write_str(&mut out, "ok");
        write_bool(&mut out, self.ok());
        for (key, value) in [
            ("traces", self.traces),
            ("records", self.records),
            ("index_entries", self.index_entries),
            ("decisions", self.decisions),
        ] {
            write_str(&mut out, key);
            write_uint(&mut out, value);
        }
        write_str(&mut out, "problems");
        write_array_header(&mut out, self.problems.len() as u32);
        for problem in &self.problems {
            write_str(&mut out, problem);
        }
        finish_map(&mut out, map, 6);
        out
    }
}

/// Checks the whole store in one read transaction (a consistent snapshot, however busy
/// the writers are).
pub fn check(core: &Core) -> Result<CheckReport> {
    core.read(|txn| Checker { core, txn, report: CheckReport::default(), unlisted: 0 }.run())
}

struct Checker<'c, 't> {
    core: &'c Core,
    txn: &'t RoTxn<'t, WithoutTls>,
    report: CheckReport,
    /// Problems beyond [`MAX_PROBLEMS`].
    unlisted: u64,
}

/// One `fragments` duplicate: a record's sequence number and the trace listing it.
type Pointer = (u64, TraceId);

/// What the summaries say the indexes must hold.
#[derive(Default)]
struct Expected {
    /// Distinct `index` keys the decodable summaries produce.
    index_keys: u64,
    /// `by_time` keys the decodable summaries produce.
    by_time_keys: u64,
    /// A summary did not decode or an expected key was missing: equal counts then prove
    /// nothing, so every key must be looked at.
    incomplete: bool,
}

impl Checker<'_, '_> {
    fn run(mut self) -> Result<CheckReport> {
        let (mut pointers, traces) = self.fragments()?;
        self.records(&mut pointers)?;
        let expected = self.summaries(&traces)?;
        self.merges(&traces)?;
        self.index(&expected)?;
        self.by_time(&expected)?;
        self.decisions()?;
        if self.unlisted > 0 {
            let more = format!("... and {} more problems", self.unlisted);
            self.report.problems.push(more);
        }
        Ok(self.report)
    }

    fn problem(&mut self, text: String) {
        if self.report.problems.len() < MAX_PROBLEMS {
            self.report.problems.push(text);
        } else {
            self.unlisted += 1;
        }
    }

    /// Every decision's envelope decodes and its hash chain is intact.
    fn decisions(&mut self) -> Result<()> {
        let (count, problems) = decision::check_all(&self.core.dbs, self.txn)?;
        self.report.decisions = count;
        for problem in problems {
            self.problem(problem);
        }
        Ok(())
    }

    /// Every `fragments` duplicate, and the distinct trace ids in key order.
    fn fragments(&mut self) -> Result<(Vec<Pointer>, Vec<TraceId>)> {
        let fail = |e| Error::storage("checking fragments", e);
        let mut pointers = Vec::new();
        let mut traces: Vec<TraceId> = Vec::new();
        for entry in self.core.dbs.fragments.iter(self.txn).map_err(fail)? {
            let (key, value) = entry.map_err(fail)?;
            let Ok(id) = TraceId::try_from(key) else {
                self.problem(format!(
                    "fragments[{}]: the key is not a 16-byte trace id",
                    to_hex(key)
                ));
                continue;
            };
            if traces.last() != Some(&id) {
                traces.push(id);
            }
            match parse_seq_key(value) {
                Some(seq) => pointers.push((seq, id)),
                None => self.problem(format!(
                    "fragments[{}]: the duplicate {} is not an 8-byte records key",
                    to_hex(key),
                    to_hex(value)
                )),
            }
        }
        self.report.traces = traces.len() as u64;
        Ok((pointers, traces))
    }

    /// Decodes every record and matches records against the `fragments` pointers (both in
    /// sequence order, so one merge pass instead of a lookup per record).
    fn records(&mut self, pointers: &mut [Pointer]) -> Result<()> {
        pointers.sort_unstable();
        let fail = |e| Error::storage("checking records", e);
        let mut next = 0;
        for entry in self.core.dbs.records.iter(self.txn).map_err(fail)? {
            let (key, value) = entry.map_err(fail)?;
            self.report.records += 1;
            match self.core.decode_record(self.txn, key, value) {
                Ok(canonical) => {
                    if let Err(why) = one_map(&canonical) {
                        self.problem(format!("records[{}] is not a trace: {why}", to_hex(key)));
                    }
                }
                Err(Error::Corrupt(why)) => self.problem(why),
                Err(other) => return Err(other),
            }
            let Some(seq) = parse_seq_key(key) else {
                self.problem(format!("records[{}]: the key is not 8 bytes", to_hex(key)));
                continue;
            };
            while let Some(&(missing, id)) = pointers.get(next).filter(|p| p.0 < seq) {
                self.dangling(missing, &id);
                next += 1;
            }
            let listed = pointers[next..].iter().take_while(|p| p.0 == seq).count();
            if listed != 1 {
                let owners: Vec<String> =
                    pointers[next..next + listed].iter().map(|p| to_hex(&p.1)).collect();
                self.problem(format!(
                    "records[{}] is listed {listed} times in fragments (not once){}",
                    to_hex(key),
                    if owners.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", owners.join(", "))
                    }
                ));
            }
            next += listed;
        }
        for &(missing, id) in &pointers[next..] {
            self.dangling(missing, &id);
        }
        Ok(())
    }

    fn dangling(&mut self, seq: u64, id: &TraceId) {
        self.problem(format!(
            "fragments[{}] points at records[{}], which does not exist",
            to_hex(id),
            to_hex(&seq.to_be_bytes())
        ));
    }

    /// Matches summaries against the traces of `fragments` (both in id order) and checks
    /// that each summary's index and `by_time` keys exist.
    fn summaries(&mut self, traces: &[TraceId]) -> Result<Expected> {
        let fail = |e| Error::storage("checking summaries", e);
        let mut expected = Expected::default();
        let mut next = 0;
        for entry in self.core.dbs.summaries.iter(self.txn).map_err(fail)? {
            let (key, value) = entry.map_err(fail)?;
            let Ok(id) = TraceId::try_from(key) else {
                self.problem(format!(
                    "summaries[{}]: the key is not a 16-byte trace id",
                    to_hex(key)
                ));
                continue;
            };
            while let Some(missing) = traces.get(next).filter(|t| **t < id) {
                self.problem(format!("fragments[{}] has no summaries entry", to_hex(missing)));
                next += 1;
            }
            if traces.get(next) == Some(&id) {
                next += 1;
            } else {
                self.problem(format!("summaries[{}] has no fragments", to_hex(&id)));
            }
            match Summary::decode(value) {
                Ok(summary) => self.summary_keys(&id, &summary, &mut expected)?,
                Err(why) => {
                    expected.incomplete = true;
                    self.problem(format!("summaries[{}] does not decode: {why}", to_hex(&id)));
                }
            }
        }
        for missing in &traces[next..] {
            self.problem(format!("fragments[{}] has no summaries entry", to_hex(missing)));
        }
        Ok(expected)
    }

    /// Every merge state decodes and belongs to a trace that has fragments.
    fn merges(&mut self, traces: &[TraceId]) -> Result<()> {
        let fail = |e| Error::storage("checking merge states", e);
        for entry in self.core.dbs.merges.iter(self.txn).map_err(fail)? {
            let (key, value) = entry.map_err(fail)?;
            let listed = TraceId::try_from(key).is_ok_and(|id| traces.binary_search(&id).is_ok());
            if !listed {
                self.problem(format!("merges[{}] belongs to no trace", to_hex(key)));
            }
            if let Err(why) = MergeState::decode(value) {
                self.problem(format!("merges[{}] does not decode: {why}", to_hex(key)));
            }
        }
        Ok(())
    }

    fn summary_keys(
        &mut self,
        id: &TraceId,
        summary: &Summary,
        expected: &mut Expected,
    ) -> Result<()> {
        let fail = |e| Error::storage("checking index entries", e);
        let mut keys = summary.index_keys(id);
        keys.sort_unstable();
        keys.dedup();
        expected.index_keys += keys.len() as u64;
        for key in keys {
            if self.core.dbs.index.get(self.txn, &key).map_err(fail)?.is_none() {
                expected.incomplete = true;
                self.problem(format!(
                    "summaries[{}]: index[{}] is missing",
                    to_hex(id),
                    to_hex(&key)
                ));
            }
        }
        expected.by_time_keys += 1;
        let key = time_key(summary.numbers.timestamp_us, id);
        if self.core.dbs.by_time.get(self.txn, &key).map_err(fail)?.is_none() {
            expected.incomplete = true;
            self.problem(format!(
                "summaries[{}]: by_time[{}] is missing",
                to_hex(id),
                to_hex(&key)
            ));
        }
        Ok(())
    }

    /// Counts `index` keys; looks for keys no summary produces only when the count shows
    /// there are some (every expected key was found present, so equal counts mean equal sets).
    fn index(&mut self, expected: &Expected) -> Result<()> {
        let fail = |e| Error::storage("checking index", e);
        self.report.index_entries = self.core.dbs.index.len(self.txn).map_err(fail)?;
        if self.report.index_entries == expected.index_keys && !expected.incomplete {
            return Ok(());
        }
        for entry in self.core.dbs.index.iter(self.txn).map_err(fail)? {
            let (key, _) = entry.map_err(fail)?;
            let owner = self.owner(key)?;
            if !owner.is_some_and(|(id, summary)| summary.index_keys(&id).iter().any(|k| k == key))
            {
                self.problem(format!("index[{}] belongs to no live summary", to_hex(key)));
            }
        }
        Ok(())
    }

    /// Like [`Checker::index`], for `by_time`.
    fn by_time(&mut self, expected: &Expected) -> Result<()> {
        let fail = |e| Error::storage("checking by_time", e);
        let len = self.core.dbs.by_time.len(self.txn).map_err(fail)?;
        if len == expected.by_time_keys && !expected.incomplete {
            return Ok(());
        }
        for entry in self.core.dbs.by_time.iter(self.txn).map_err(fail)? {
            let (key, _) = entry.map_err(fail)?;
            let owner = self.owner(key)?;
            let produced = owner.is_some_and(|(id, summary)| {
                key.len() == 24 && key == time_key(summary.numbers.timestamp_us, &id)
            });
            if !produced {
                self.problem(format!("by_time[{}] belongs to no live summary", to_hex(key)));
            }
        }
        Ok(())
    }

    /// The decodable summary of the trace a key's time-key tail names, if any.
    fn owner(&self, key: &[u8]) -> Result<Option<(TraceId, Summary)>> {
        let Some((_, id)) = parse_time_key(key) else { return Ok(None) };
        let stored = self
            .core
            .dbs
            .summaries
            .get(self.txn, &id)
            .map_err(|e| Error::storage("checking summaries", e))?;
        Ok(stored.and_then(|bytes| Summary::decode(bytes).ok()).map(|summary| (id, summary)))
    }
}

/// Whether a decoded record is what every record is: exactly one well-formed msgpack map.
fn one_map(canonical: &[u8]) -> std::result::Result<(), String> {
    let mut reader = Reader::new(canonical);
    let first = reader.read_token().map_err(|e| e.to_string())?;
    if !matches!(first, Token::Map(_)) {
        return Err(format!("expected a map, got {}", first.kind()));
    }
    reader.skip_contents(&first).and_then(|()| reader.expect_end()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msgpack::{Reader, Token};
    use crate::store::{seq_key, Options, Store};
    use crate::summary::{index_key, Field};

    /// A msgpack trace map of string fields.
    fn trace(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut out = vec![0x80 | fields.len() as u8];
        for (key, value) in fields {
            write_str(&mut out, key);
            write_str(&mut out, value);
        }
        out
    }

    /// A store with `n` traces logged through the writer (records, fragments, summaries).
    fn logged(n: usize) -> (tempfile::TempDir, Store, Vec<TraceId>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Options::default()).unwrap();
        let ids = (0..n)
            .map(|i| {
                let run = format!("run-{}", i % 7);
                let agent = if i % 2 == 0 { "even" } else { "odd" };
                store
                    .log(&trace(&[("agent_name", agent), ("run_id", &run), ("status", "failed")]))
                    .unwrap()
            })
            .collect();
        store.flush(None).unwrap();
        (dir, store, ids)
    }

    fn edit(store: &Store, f: impl FnOnce(&mut heed::RwTxn, &crate::store::Databases)) {
        let core = store.core();
        let mut txn = core.env().write_txn().unwrap();
        f(&mut txn, &core.dbs);
        txn.commit().unwrap();
    }

    fn summary(store: &Store, id: &TraceId) -> Summary {
        let core = store.core();
        core.read(|txn| {
            Ok(Summary::decode(core.dbs.summaries.get(txn, id).unwrap().unwrap()).unwrap())
        })
        .unwrap()
    }

    fn first_record_key(store: &Store, id: &TraceId) -> Vec<u8> {
        let core = store.core();
        core.read(|txn| Ok(core.dbs.fragments.get(txn, id).unwrap().unwrap().to_vec())).unwrap()
    }

    fn has(report: &CheckReport, words: &[&str]) -> bool {
        report.problems.iter().any(|p| words.iter().all(|w| p.contains(w)))
    }

    #[test]
    fn a_healthy_store_checks_clean() {
        let (_dir, store, ids) = logged(50);
        // A second fragment for one trace: two records, one trace.
        store
            .log(&trace(&[
                ("agent_name", "even"),
                ("trace_id", &to_hex(&ids[0])),
                ("framework", "x"),
            ]))
            .unwrap();
        store.flush(None).unwrap();
        let report = check(store.core()).unwrap();
        assert!(report.ok(), "{:?}", report.problems);
        assert_eq!((report.traces, report.records), (50, 51));
        // agent, run_id, status and has_errors per trace, and one framework.
        assert_eq!(report.index_entries, 50 * 4 + 1);
        let empty = tempfile::tempdir().unwrap();
        let fresh = Store::open(empty.path(), Options::default()).unwrap();
        assert_eq!(check(fresh.core()).unwrap(), CheckReport::default());
    }

    #[test]
    fn a_missing_index_key_is_reported() {
        let (_dir, store, ids) = logged(10);
        let s = summary(&store, &ids[3]);
        let run = s.run_id.as_deref().unwrap().as_bytes();
        let key = index_key(Field::RunId, run, s.numbers.timestamp_us, &ids[3]);
        edit(&store, |txn, dbs| assert!(dbs.index.delete(txn, &key).unwrap()));
        let report = check(store.core()).unwrap();
        assert!(!report.ok());
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert!(has(
            &report,
            &["summaries[", &to_hex(&ids[3]), "index[", &to_hex(&key), "missing"]
        ));
        // An orphan key makes the counts equal again; both are still found.
        let ghost = index_key(Field::RunId, b"ghost", s.numbers.timestamp_us, &ids[3]);
        edit(&store, |txn, dbs| dbs.index.put(txn, &ghost, &[]).unwrap());
        let report = check(store.core()).unwrap();
        assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
        assert!(has(&report, &["index[", &to_hex(&ghost), "no live summary"]));
    }

    #[test]
    fn a_missing_summary_leaves_a_trace_and_orphan_keys() {
        let (_dir, store, ids) = logged(10);
        let s = summary(&store, &ids[5]);
        edit(&store, |txn, dbs| assert!(dbs.summaries.delete(txn, &ids[5]).unwrap()));
        let report = check(store.core()).unwrap();
        let id = to_hex(&ids[5]);
        assert!(has(&report, &["fragments[", &id, "no summaries entry"]), "{:?}", report.problems);
        for key in s.index_keys(&ids[5]) {
            assert!(has(&report, &["index[", &to_hex(&key), "no live summary"]));
        }
        let by_time = to_hex(&time_key(s.numbers.timestamp_us, &ids[5]));
        assert!(has(&report, &["by_time[", &by_time, "no live summary"]));
        assert_eq!(report.problems.len(), 1 + 4 + 1, "{:?}", report.problems);
    }

    #[test]
    fn stray_or_broken_merge_states_are_reported() {
        let (_dir, store, ids) = logged(3);
        let stray = [9u8; 16];
        edit(&store, |txn, dbs| {
            dbs.merges.put(txn, &stray, &MergeState::default().encode()).unwrap();
            dbs.merges.put(txn, &ids[1], b"\x07junk").unwrap();
        });
        let report = check(store.core()).unwrap();
        assert!(has(&report, &["merges[", &to_hex(&stray), "belongs to no trace"]));
        assert!(has(&report, &["merges[", &to_hex(&ids[1]), "does not decode"]));
        assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
    }

    #[test]
    fn a_corrupt_record_and_broken_fragment_lists_are_reported() {
        let (_dir, store, ids) = logged(10);
        let corrupt = first_record_key(&store, &ids[2]);
        let shared = first_record_key(&store, &ids[4]);
        edit(&store, |txn, dbs| {
            dbs.records.put(txn, &corrupt, &[1, 0, 99, 0, 0, 0, b'x']).unwrap();
            // ids[6] also lists ids[4]'s record, and a record that does not exist.
            dbs.fragments.put(txn, &ids[6], &shared).unwrap();
            dbs.fragments.put(txn, &ids[6], &seq_key(999)).unwrap();
            // A record no trace lists.
            dbs.records.put(txn, &seq_key(1000), &[1, 0, 1, 0, 0, 0, 0xc0]).unwrap();
        });
        let report = check(store.core()).unwrap();
        let problems = &report.problems;
        assert!(has(&report, &["records[", &to_hex(&corrupt), "does not decode"]), "{problems:?}");
        assert!(has(&report, &["records[", &to_hex(&shared), "listed 2 times", &to_hex(&ids[6])]));
        assert!(has(
            &report,
            &["fragments[", &to_hex(&ids[6]), &to_hex(&seq_key(999)), "does not exist"]
        ));
        assert!(has(&report, &["records[", &to_hex(&seq_key(1000)), "listed 0 times"]));
        assert!(has(&report, &["records[", &to_hex(&seq_key(1000)), "not a trace", "got nil"]));
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert_eq!(report.records, 11);
    }

    #[test]
    fn problems_are_capped_but_counted() {
        let (_dir, store, ids) = logged(150);
        edit(&store, |txn, dbs| {
            for id in &ids {
                let s = Summary::decode(dbs.summaries.get(txn, id).unwrap().unwrap()).unwrap();
                dbs.by_time.delete(txn, &time_key(s.numbers.timestamp_us, id)).unwrap();
            }
        });
        let report = check(store.core()).unwrap();
        assert_eq!(report.problems.len(), MAX_PROBLEMS + 1);
        assert_eq!(report.problems[MAX_PROBLEMS], "... and 50 more problems");
    }

    #[test]
    fn the_report_encodes_as_a_msgpack_map() {
        let report = CheckReport {
            traces: 3,
            records: 4,
            index_entries: 300,
            decisions: 2,
            problems: vec!["index[01] belongs to no live summary".into()],
        };
        let bytes = report.to_msgpack();
        let mut reader = Reader::new(&bytes);
        let mut tokens = Vec::new();
        while !reader.is_at_end() {
            tokens.push(reader.read_token().unwrap());
        }
        let s = |text: &'static str| Token::Str(text.as_bytes());
        assert_eq!(
            tokens,
            [
                Token::Map(6),
                s("ok"),
                Token::Bool(false),
                s("traces"),
                Token::UInt(3),
                s("records"),
                Token::UInt(4),
                s("index_entries"),
                Token::UInt(300),
                s("decisions"),
                Token::UInt(2),
                s("problems"),
                Token::Array(1),
                s("index[01] belongs to no live summary"),
            ]
        );
        assert_eq!(CheckReport::default().to_msgpack()[..4], [0x86, 0xa2, b'o', b'k']);
    }

    #[test]
    fn a_trace_with_more_tags_than_its_summary_holds_checks_clean_and_deletes_whole() {
        // 70,000 tags: the index listed all of them but the summary kept 65,534, so `check`
        // reported the rest and deleting the trace left them behind, where a query by one
        // of them failed with "summaries[...] is missing but the indexes list the trace".
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Options::default()).unwrap();
        let mut payload = vec![0x82];
        write_str(&mut payload, "agent_name");
        write_str(&mut payload, "a");
        write_str(&mut payload, "tags");
        write_array_header(&mut payload, 70_000);
        for i in 0..70_000 {
            write_str(&mut payload, &format!("t{i}"));
        }
        let id = store.log(&payload).unwrap();
        store.flush(None).unwrap();
        let report = check(store.core()).unwrap();
        assert!(report.ok(), "{:?}", report.problems);
        assert_eq!(report.index_entries, 1 + 65_534);
        store.delete(vec![id]).unwrap();
        let report = check(store.core()).unwrap();
        assert!(report.ok(), "{:?}", report.problems);
        assert_eq!(report.index_entries, 0);
        let mut filter = vec![0x81];
        write_str(&mut filter, "tag");
        write_str(&mut filter, "t69999");
        assert_eq!(store.count(&filter).unwrap(), 0);
    }
}
