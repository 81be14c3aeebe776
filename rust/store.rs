//! The LMDB environment: opening (one environment per path per process), the named
//! databases and their key/value encodings, reads, map growth, and fork safety.
//! The byte layout is documented in docs/format.md; keep the two in step.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fs::DirBuilder;
use std::mem::ManuallyDrop;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, Weak};
use std::time::Duration;

use heed::types::Bytes;
use heed::{
    CompactionOption, Database, DatabaseFlags, Env, EnvFlags, EnvOpenOptions, RoTxn, RwTxn,
    WithoutTls,
};

use crate::check::{self, CheckReport};
use crate::codec::{self, Dictionary};
use crate::decision::DecisionJob;
use crate::error::{Error, FieldError, Result};
use crate::fork;
use crate::ids::{to_hex, TraceId};
use crate::merge::{self, Contribution, MergeState, SpanLink};
use crate::query::{self, Filters, PageRequest};
use crate::redact::Redaction;
use crate::schema::{self, Limits};
use crate::summary::{time_key, Summary};
use crate::time::Timestamp;
use crate::writer::{Pending, Retention, Writer};

/// Written under `meta["format"]`; bumped on any incompatible change of the layout.
pub const FORMAT: &[u8] = b"flightlog/1";
/// The map only reserves address space; the file grows as data is written.
pub const DEFAULT_MAP_SIZE: usize = 1 << 30;
const MAX_MAP_SIZE: usize = 1 << 44;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Commit as soon as possible in shared batches, fsync each commit; `flush()` waits.
    Group,
    /// Like group, but `log()` returns only once its batch is durable.
    Sync,
    /// Commit in batches without fsync: survives a process crash, not an OS crash.
    None,
}

impl Durability {
    pub fn parse(text: &str) -> Result<Durability> {
        match text {
            "group" => Ok(Durability::Group),
            "sync" => Ok(Durability::Sync),
            "none" => Ok(Durability::None),
            other => Err(Error::validation(
                "durability",
                format!("expected one of 'group', 'sync', 'none', got {other:?}"),
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub durability: Durability,
    pub readonly: bool,
    /// Initial LMDB map size in bytes; it doubles whenever it fills up.
    pub map_size: usize,
    /// Bytes of records that may wait for the writer before `log()` blocks.
    pub queue_bytes: usize,
    pub limits: Limits,
    /// What `log()` does with the secrets in a trace.
    pub redaction: Redaction,
    /// What the writer removes by itself; applies to the environment's writer, so the
    /// first writable handle of a path in a process sets it.
    pub retention: Retention,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::Group,
            readonly: false,
            map_size: DEFAULT_MAP_SIZE,
            queue_bytes: 64 << 20,
            limits: Limits::default(),
            redaction: Redaction::default(),
            retention: Retention::default(),
        }
    }
}

/// The named databases (see docs/format.md).
#[derive(Clone, Copy)]
pub struct Databases {
    /// u64 big-endian sequence number -> record value (one trace fragment).
    pub records: Database<Bytes, Bytes>,
    /// 16-byte trace id -> sorted duplicates of the 8-byte keys of its fragments.
    pub fragments: Database<Bytes, Bytes>,
    /// Store-level facts, e.g. `format`.
    pub meta: Database<Bytes, Bytes>,
    /// u32 big-endian dictionary id -> a zstd dictionary trained on the store's records.
    pub dicts: Database<Bytes, Bytes>,
    /// 16-byte trace id -> the trace's merged [`Summary`].
    pub summaries: Database<Bytes, Bytes>,
    /// [`time_key`] -> empty: every trace in timestamp order.
    pub by_time: Database<Bytes, Bytes>,
    /// [`summary::index_key`] -> empty: traces by field value, then timestamp.
    pub index: Database<Bytes, Bytes>,
    /// 16-byte trace id -> its [`MergeState`], for traces that may be logged in fragments.
    pub merges: Database<Bytes, Bytes>,
    /// 16-byte decision id -> its [`crate::decision::Envelope`].
    pub decisions: Database<Bytes, Bytes>,
    /// [`crate::decision::event_key`] -> the event's hash and canonical bytes.
    pub decision_events: Database<Bytes, Bytes>,
    /// [`crate::decision::agent_key`] -> empty: each agent's decisions in creation order.
    pub decision_agents: Database<Bytes, Bytes>,
    /// Decision id + idempotency key -> u32 big-endian sequence number of its write event.
    pub decision_keys: Database<Bytes, Bytes>,
}

impl Databases {
    /// Lists (or re-lists) a trace under its summary: replaces `old`'s index entries by
    /// `new`'s, in the caller's write transaction.
    pub fn put_summary(
        &self,
        txn: &mut RwTxn,
        trace_id: &TraceId,
        old: Option<&Summary>,
        new: &Summary,
    ) -> heed::Result<()> {
        let new_keys = new.index_keys(trace_id);
        if let Some(old) = old {
            for key in old.index_keys(trace_id) {
                if !new_keys.contains(&key) {
                    self.index.delete(txn, &key)?;
                }
            }
            if old.numbers.timestamp_us != new.numbers.timestamp_us {
                self.by_time.delete(txn, &time_key(old.numbers.timestamp_us, trace_id))?;
            }
        }
        for key in &new_keys {
            self.index.put(txn, key, &[])?;
        }
        self.by_time.put(txn, &time_key(new.numbers.timestamp_us, trace_id), &[])?;
        self.summaries.put(txn, trace_id, &new.encode())
    }

    /// Removes a trace's summary and index entries (its records are the caller's business).
    pub fn remove_summary(
        &self,
        txn: &mut RwTxn,
        trace_id: &TraceId,
        old: &Summary,
    ) -> heed::Result<()> {
        for key in old.index_keys(trace_id) {
            self.index.delete(txn, &key)?;
        }
        self.by_time.delete(txn, &time_key(old.numbers.timestamp_us, trace_id))?;
        self.summaries.delete(txn, trace_id)?;
        Ok(())
    }
}

/// The LMDB side of an open store, shared by the writer thread and readers.
pub struct Core {
    env: ManuallyDrop<Env<WithoutTls>>,
    closed: AtomicBool,
    pub dbs: Databases,
    /// Readers and the writer hold it shared while a transaction is open; a map resize holds
    /// it exclusively, because LMDB allows resizing only with no transaction in the process.
    resize: RwLock<()>,
    /// The dictionary new records are compressed with, once one is trained or loaded.
    active_dictionary: RwLock<Option<Arc<Dictionary>>>,
    /// Dictionaries loaded for reading, by id (records may need any of them).
    dictionaries: RwLock<HashMap<u32, Arc<Dictionary>>>,
}

impl Core {
    pub fn env(&self) -> &Env<WithoutTls> {
        &self.env
    }

    pub fn resize_guard(&self) -> RwLockReadGuard<'_, ()> {
        self.resize.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` in a short read transaction, adopting a map grown by another process.
    pub fn read<T>(&self, mut f: impl FnMut(&RoTxn<WithoutTls>) -> Result<T>) -> Result<T> {
        loop {
            let guard = self.resize_guard();
            match self.env().read_txn() {
                Ok(txn) => return f(&txn),
                Err(heed::Error::Mdb(heed::MdbError::MapResized)) => {
                    drop(guard);
                    self.adopt_map_size()?;
                }
                Err(err) => return Err(Error::storage("starting a read transaction", err)),
            }
        }
    }

    pub fn active_dictionary(&self) -> Option<Arc<Dictionary>> {
        self.active_dictionary.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Makes `dictionary` (already committed to `dicts`) the one new records use.
    pub fn activate(&self, dictionary: Arc<Dictionary>) {
        self.dictionaries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dictionary.id, Arc::clone(&dictionary));
        *self.active_dictionary.write().unwrap_or_else(|e| e.into_inner()) = Some(dictionary);
    }

    /// The dictionary with this id, loading it from `dicts` on first use.
    fn dictionary(&self, txn: &RoTxn<WithoutTls>, id: u32) -> Result<Arc<Dictionary>> {
        if let Some(found) = self.dictionaries.read().unwrap_or_else(|e| e.into_inner()).get(&id) {
            return Ok(Arc::clone(found));
        }
        let raw = self
            .dbs
            .dicts
            .get(txn, &id.to_be_bytes())
            .map_err(|e| Error::storage("reading a dictionary", e))?
            .ok_or_else(|| Error::Corrupt(format!("dicts[{id}] is missing")))?;
        let loaded = Arc::new(Dictionary::new(id, raw).map_err(Error::Corrupt)?);
        self.dictionaries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::clone(&loaded));
        Ok(loaded)
    }

    /// Decodes a `records` value, fetching the dictionary it needs.
    pub fn decode_record(
        &self,
        txn: &RoTxn<WithoutTls>,
        key: &[u8],
        value: &[u8],
    ) -> Result<Vec<u8>> {
        let dictionary = match codec::dictionary_id(value) {
            Some(id) => Some(self.dictionary(txn, id)?),
            None => None,
        };
        codec::decode(value, dictionary.as_deref()).map_err(|why| {
            Error::Corrupt(format!("records[{}] does not decode: {why}", to_hex(key)))
        })
    }

    /// The merge state of a stored trace: as kept in `merges`, or rebuilt from its fragments
    /// (a trace first logged under a minted id has none until it is updated).
    pub fn merge_state(&self, txn: &RoTxn<WithoutTls>, trace_id: &TraceId) -> Result<MergeState> {
        let fail = |e| Error::storage("reading a trace's merge state", e);
        if let Some(bytes) = self.dbs.merges.get(txn, trace_id).map_err(fail)? {
            // An undecodable state is rebuilt below (`check` reports it).
            if let Ok(state) = MergeState::decode(bytes) {
                return Ok(state);
            }
        }
        let mut state = MergeState::default();
        for contribution in self.contributions(txn, trace_id)? {
            state.fold(&contribution, None);
        }
        Ok(state)
    }

    /// Every stored span of a trace with the parent it names, oldest fragment first (a
    /// later version of a span replaces the earlier): only for updates that name parents
    /// outside themselves.
    pub fn stored_links(
        &self,
        txn: &RoTxn<WithoutTls>,
        trace_id: &TraceId,
    ) -> Result<Vec<SpanLink>> {
        let contributions = self.contributions(txn, trace_id)?;
        Ok(contributions.into_iter().flat_map(|c| c.links).collect())
    }

    /// What each stored fragment of a trace contributes, oldest first, read from the
    /// fragments themselves.
    fn contributions(
        &self,
        txn: &RoTxn<WithoutTls>,
        trace_id: &TraceId,
    ) -> Result<Vec<Contribution>> {
        let fail = |e| Error::storage("reading a trace's fragments", e);
        let mut contributions = Vec::new();
        for entry in
            self.dbs.fragments.get_duplicates(txn, trace_id).map_err(fail)?.into_iter().flatten()
        {
            let (_, key) = entry.map_err(fail)?;
            let value = self.dbs.records.get(txn, key).map_err(fail)?.ok_or_else(|| {
                Error::Corrupt(format!("records[{}] is listed but missing", to_hex(key)))
            })?;
            let canonical = self.decode_record(txn, key, value)?;
            let (_, contribution) = Summary::of_fragment(&canonical).map_err(|why| {
                Error::Corrupt(format!("records[{}] is not a trace: {why}", to_hex(key)))
            })?;
            contributions.push(contribution);
        }
        Ok(contributions)
    }

    /// Doubles the map after MDB_MAP_FULL.
    pub fn grow_map(&self) -> Result<()> {
        let _exclusive = self.resize.write().unwrap_or_else(|e| e.into_inner());
        let current = self.env().info().map_size;
        if current >= MAX_MAP_SIZE {
            return Err(Error::StorageFull(format!(
                "the store reached the largest map size ({MAX_MAP_SIZE} bytes)"
            )));
        }
        // SAFETY: the exclusive resize lock is held, so no transaction of this process is
        // open (readers and the writer hold the lock shared for a transaction's lifetime).
        unsafe { self.env().resize(current.saturating_mul(2).min(MAX_MAP_SIZE)) }
            .map_err(|e| Error::storage("growing the LMDB map", e))
    }

    /// What a failed write transaction means for the caller. LMDB reports a short write as
    /// EIO, and a write that runs out of room part-way through a run of pages is exactly
    /// that: so an EIO while the file system is out of space, or the file has reached this
    /// process's RLIMIT_FSIZE, is `StorageFull` ("free space, then retry"), not an I/O error.
    pub fn write_failure(&self, context: &str, err: heed::Error) -> Error {
        let short_write =
            matches!(&err, heed::Error::Io(io) if io.raw_os_error() == Some(libc::EIO));
        if short_write {
            if let Some(why) = out_of_room(self.env().path()) {
                return Error::StorageFull(format!("{context}: {why}"));
            }
        }
        Error::storage(context, err)
    }

    /// Adopts the map size another process set (after MDB_MAP_RESIZED).
    pub fn adopt_map_size(&self) -> Result<()> {
        let _exclusive = self.resize.write().unwrap_or_else(|e| e.into_inner());
        // SAFETY: as in `grow_map`; a size of 0 tells LMDB to adopt the size in the file.
        unsafe { self.env().resize(0) }.map_err(|e| Error::storage("adopting the map size", e))
    }

    /// Closes the environment exactly once.
    ///
    /// Called from `Drop`, and in a forked child for an environment inherited from the
    /// parent: there the parent's writer thread is gone but still "holds" a reference, so
    /// `Drop` would never run, and heed would refuse to open the path again.
    fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            // SAFETY: `closed` guarantees a single bitwise move out of the ManuallyDrop. After
            // it, nothing uses `env`: in the parent this is the drop of the last owner; in a
            // forked child every handle checks the fork generation before touching a Core
            // and the inherited threads do not exist. mdb_env_close in a child only clears
            // the child's own reader slots, unmaps, and closes the child's descriptors.
            let env = unsafe { std::ptr::read(&*self.env) };
            drop(env);
        }
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        self.close();
    }
}

/// One open store path in this process: the Core plus its writer thread.
struct Environment {
    core: Arc<Core>,
    /// `None` when opened read-only.
    writer: Option<Writer>,
    generation: u64,
}

struct RegistryEntry {
    env: Weak<Environment>,
    core: Weak<Core>,
    generation: u64,
}

/// One environment per store directory per process: LMDB must never open a file twice in
/// one process (its locks are per process). Keyed by the directory's device and inode, which
/// every path to it shares: symlinks and `..` (which the canonical path would resolve too),
/// and also bind mounts and other mount points of the same file system (which it would not).
static REGISTRY: Mutex<Option<HashMap<DirectoryId, RegistryEntry>>> = Mutex::new(None);

/// A directory's (device, inode).
type DirectoryId = (u64, u64);

/// A handle on an open store. Cheap to clone; the environment closes when the last handle
/// of this process is dropped.
#[derive(Clone)]
pub struct Store {
    env: Arc<Environment>,
    path: PathBuf,
    options: Options,
}

impl Store {
    /// Opens (creating unless read-only) the store directory at `path`.
    pub fn open(path: &Path, options: Options) -> Result<Store> {
        let path = prepare_directory(path, options.readonly)?;
        let id = directory_id(&path)?;
        let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        let registry = registry.get_or_insert_with(HashMap::new);
        let generation = fork::generation();
        if let Some(entry) = registry.get(&id) {
            if entry.generation == generation {
                if let Some(env) = entry.env.upgrade() {
                    if env.writer.is_none() && !options.readonly {
                        return Err(Error::Storage(format!(
                            "{} is already open read-only in this process; close that \
                             store before opening it for writing",
                            path.display()
                        )));
                    }
                    return Ok(Store { env, path, options });
                }
            } else if let Some(core) = entry.core.upgrade() {
                core.close();
            }
        }
        let env = Arc::new(open_environment(&path, &options, generation)?);
        registry.insert(
            id,
            RegistryEntry {
                env: Arc::downgrade(&env),
                core: Arc::downgrade(&env.core),
                generation,
            },
        );
        Ok(Store { env, path, options })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The LMDB side: databases, read transactions, record decoding.
    pub fn core(&self) -> &Arc<Core> {
        &self.env.core
    }

    /// True in a forked child for a handle opened by the parent: reopen before use.
    pub fn is_stale(&self) -> bool {
        self.env.generation != fork::generation()
    }

    fn writer(&self) -> Result<&Writer> {
        if self.options.readonly {
            return Err(Error::Storage(format!(
                "{} was opened read-only; open it with readonly=False to log",
                self.path.display()
            )));
        }
        self.env.writer.as_ref().ok_or_else(|| Error::Storage("no writer".into()))
    }

    /// Validates one msgpack-encoded trace and queues it; returns its trace id.
    pub fn log(&self, payload: &[u8]) -> Result<TraceId> {
        let writer = self.writer()?;
        let record = schema::canonicalize(
            payload,
            &self.options.limits,
            &self.options.redaction,
            Timestamp::now(),
        )
        .map_err(Error::refused)?;
        let id = record.trace_id;
        let records = vec![pending(record)?];
        self.check_updates(&records, false)?;
        self.append(writer, records, false)?;
        Ok(id)
    }

    /// Validates a msgpack array of traces (all or nothing) and queues them in one hand-off.
    pub fn log_many(&self, payload: &[u8]) -> Result<Vec<TraceId>> {
        let writer = self.writer()?;
        let records = schema::canonicalize_many(
            payload,
            &self.options.limits,
            &self.options.redaction,
            Timestamp::now(),
        )
        .map_err(Error::refused)?;
        let ids = records.iter().map(|r| r.trace_id).collect();
        let pending: Vec<_> = records.into_iter().map(pending).collect::<Result<_>>()?;
        self.check_updates(&pending, true)?;
        self.append(writer, pending, true)?;
        Ok(ids)
    }

    /// Refuses updates that break SPEC §4's rules against what is committed, so the caller
    /// gets the error from `log()`. The writer checks again when it writes (an update queued
    /// meanwhile may decide it); only traces the caller named can be updates.
    fn check_updates(&self, records: &[Pending], many: bool) -> Result<()> {
        if records.iter().all(|record| record.resend_key.is_none()) {
            return Ok(());
        }
        self.env.core.read(|txn| check_updates(&self.env.core, txn, records, many, false))
    }

    /// Hands records to the writer; `many` when they came from one `log_many`.
    fn append(&self, writer: &Writer, mut records: Vec<Pending>, many: bool) -> Result<()> {
        if writer.backlogged() {
            let dictionary = self.env.core.active_dictionary();
            for record in &mut records {
                record.bytes = codec::encode_here(&record.bytes, dictionary.as_deref());
                record.encoded = true;
            }
        }
        match self.options.durability {
            Durability::Group => writer.append(records, many, true, false),
            Durability::Sync => writer.append(records, many, true, true),
            Durability::None => writer.append(records, many, false, false),
        }
    }

    /// Waits until everything logged before the call is committed (and synced, except for
    /// records logged with durability "none").
    pub fn flush(&self, timeout: Option<Duration>) -> Result<()> {
        match &self.env.writer {
            Some(writer) => writer.flush(timeout),
            None => Ok(()),
        }
    }

    /// One page of summaries matching msgpack-encoded filters, as msgpack (see query.rs).
    pub fn query(&self, filters: &[u8], page: &PageRequest) -> Result<Vec<u8>> {
        let filters = Filters::parse(filters).map_err(Error::Validation)?;
        let core = &self.env.core;
        core.read(|txn| query::query(txn, &core.dbs, &filters, page))
    }

    pub fn count(&self, filters: &[u8]) -> Result<u64> {
        let filters = Filters::parse(filters).map_err(Error::Validation)?;
        let core = &self.env.core;
        core.read(|txn| query::count(txn, &core.dbs, &filters))
    }

    pub fn stats(&self, filters: &[u8], group_by: Option<&str>) -> Result<Vec<u8>> {
        let filters = Filters::parse(filters).map_err(Error::Validation)?;
        let core = &self.env.core;
        core.read(|txn| query::stats(txn, &core.dbs, &filters, group_by))
    }

    /// Deletes every trace matching the filters, including those logged before the call and
    /// not committed yet (the writer reads the matches); refuses empty filters.
    pub fn delete_where(&self, filters: &[u8]) -> Result<u64> {
        let filters = Filters::parse(filters).map_err(Error::Validation)?;
        if filters.is_empty() {
            return Err(Error::validation(
                "filters",
                "delete_where needs at least one filter; to delete everything, remove the store",
            ));
        }
        self.writer()?.delete_where(filters)
    }

    /// Verifies the store: records decode, indexes and summaries agree (see check.rs).
    pub fn check(&self) -> Result<CheckReport> {
        check::check(&self.env.core)
    }

    /// Applies a change to decisions on the writer thread, durably (see decision.rs).
    pub fn decide(&self, job: DecisionJob) -> Result<u64> {
        self.writer()?.decide(job)
    }

    /// Removes traces and everything indexed about them; returns how many existed.
    pub fn delete(&self, ids: Vec<TraceId>) -> Result<u64> {
        self.writer()?.delete(ids)
    }

    /// Writes a compacted copy of the store (free pages dropped) into `dest`, a new or empty
    /// directory. The only way to shrink the file, and to purge deleted bytes for real.
    pub fn compact(&self, dest: &Path) -> Result<()> {
        let occupied = dest.read_dir().map(|mut entries| entries.next().is_some()).unwrap_or(false);
        if occupied {
            return Err(Error::Storage(format!(
                "{} is not empty; compact into a new or empty directory",
                dest.display()
            )));
        }
        let fail = |e: std::io::Error| {
            Error::Storage(format!("cannot write the compacted copy into {}: {e}", dest.display()))
        };
        DirBuilder::new().recursive(true).mode(0o700).create(dest).map_err(fail)?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dest.join("data.mdb"))
            .map_err(fail)?;
        let _no_resize = self.env.core.resize_guard();
        self.env
            .core
            .env()
            .copy_to_file(&mut file, CompactionOption::Enabled)
            .map_err(|e| Error::storage("writing the compacted copy", e))
    }

    /// The canonical msgpack of every fragment of a trace, oldest first.
    pub fn fragments(&self, trace_id: &TraceId) -> Result<Vec<Vec<u8>>> {
        let core = &self.env.core;
        core.read(|txn| {
            let mut out = Vec::new();
            let Some(keys) = core
                .dbs
                .fragments
                .get_duplicates(txn, trace_id)
                .map_err(|e| Error::storage("reading the fragment index", e))?
            else {
                return Ok(out);
            };
            for entry in keys {
                let (_, key) =
                    entry.map_err(|e| Error::storage("reading the fragment index", e))?;
                let value = core
                    .dbs
                    .records
                    .get(txn, key)
                    .map_err(|e| Error::storage("reading a record", e))?
                    .ok_or_else(|| {
                        Error::Corrupt(format!(
                            "fragments[{}] points at records[{}], which does not exist",
                            to_hex(trace_id),
                            to_hex(key)
                        ))
                    })?;
                out.push(core.decode_record(txn, key, value)?);
            }
            Ok(out)
        })
    }
}

/// A validated record with its summary, ready for the writer. The summary is read on the
/// caller's thread: callers run in parallel, the writer does not.
fn pending(record: schema::Canonical) -> Result<Pending> {
    let (summary, contribution) = Summary::of_fragment(&record.bytes)
        .map_err(|why| Error::Storage(format!("summarizing a validated trace failed: {why}")))?;
    Ok(Pending {
        trace_id: record.trace_id,
        bytes: record.bytes,
        encoded: false,
        summary,
        contribution,
        resend_key: record.resend_key,
    })
}

/// Checks fragments, in order, against SPEC §4's update rules: each against its trace as
/// stored and as updated by the fragments before it. Exact re-sends are skipped (the writer
/// drops them). When `many` (the records came from one `log_many`), error paths name the
/// element (`[2].status`), as every other error of `log_many` does, even for a batch of one.
/// With `parents`, span parents named outside a fragment are checked too: only the writer
/// does that, as only it has seen every fragment queued before (the caller's check would
/// miss a parent logged just before and not committed yet).
pub fn check_updates(
    core: &Core,
    txn: &RoTxn<WithoutTls>,
    records: &[Pending],
    many: bool,
    parents: bool,
) -> Result<()> {
    let dbs = &core.dbs;
    let fail = |e| Error::storage("reading a trace's summary", e);
    // Traces updated earlier in this batch, with their merged summary so far. A map, not a
    // list searched per record: a batch of 40,000 named traces took seconds.
    let mut batch: HashMap<TraceId, Known> = HashMap::new();
    for (i, record) in records.iter().enumerate() {
        let Some(key) = record.resend_key else { continue };
        let at = |mut errors: Vec<FieldError>| {
            if many {
                for error in &mut errors {
                    error.path = format!("[{i}].{}", error.path);
                }
            }
            Error::Validation(errors)
        };
        let known = match batch.entry(record.trace_id) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(slot) => {
                let stored = dbs.summaries.get(txn, &record.trace_id).map_err(fail)?;
                let Some(summary) = stored.and_then(|bytes| Summary::decode(bytes).ok()) else {
                    if parents {
                        check_parents(core, txn, record, false, std::iter::empty()).map_err(at)?;
                    }
                    slot.insert(Known {
                        summary: record.summary.clone(),
                        resends: vec![key],
                        stored: false,
                        earlier: vec![i],
                    });
                    continue;
                };
                let resends = match dbs.merges.get(txn, &record.trace_id).map_err(fail)? {
                    Some(bytes) => MergeState::decode(bytes).unwrap_or_default().resends().to_vec(),
                    None => Vec::new(),
                };
                slot.insert(Known { summary, resends, stored: true, earlier: Vec::new() })
            }
        };
        if known.resends.contains(&key) {
            continue;
        }
        merge::check_update(&known.summary, &record.summary).map_err(at)?;
        if parents {
            let earlier = known.earlier.iter().flat_map(|&j| &records[j].contribution.links);
            check_parents(core, txn, record, known.stored, earlier).map_err(at)?;
        }
        known.summary.merge(&record.summary);
        known.resends.push(key);
        known.earlier.push(i);
    }
    Ok(())
}

/// A trace as `check_updates` has seen it so far in one batch.
struct Known {
    summary: Summary,
    resends: Vec<u128>,
    /// Whether fragments of it are stored (beyond those of this batch).
    stored: bool,
    /// Its fragments accepted earlier in the batch, by position.
    earlier: Vec<usize>,
}

/// Checks the parents a fragment's spans name outside the fragment: each must be a span of
/// the trace (stored, when `stored`, or earlier in the batch), and no parent chain may come
/// back to where it started. Fragments whose parents all lie inside them (the schema
/// checked those) cost nothing here.
fn check_parents<'a>(
    core: &Core,
    txn: &RoTxn<WithoutTls>,
    record: &Pending,
    stored: bool,
    earlier: impl Iterator<Item = &'a SpanLink>,
) -> std::result::Result<(), Vec<FieldError>> {
    let links = &record.contribution.links;
    let own: HashSet<[u8; 8]> = links.iter().map(|(id, _)| *id).collect();
    let outside = |parent: &Option<[u8; 8]>| parent.is_some_and(|p| !own.contains(&p));
    if !links.iter().any(|(_, parent)| outside(parent)) {
        return Ok(());
    }
    let mut parents: HashMap<[u8; 8], Option<[u8; 8]>> = HashMap::new();
    if stored {
        let fragments = core.stored_links(txn, &record.trace_id).map_err(|e| {
            vec![FieldError::new("spans", format!("the stored spans could not be read: {e}"))]
        })?;
        parents.extend(fragments);
    }
    parents.extend(earlier.copied());
    parents.extend(links.iter().copied());
    let mut errors = Vec::new();
    for (j, (id, parent)) in links.iter().enumerate() {
        if !outside(parent) {
            continue;
        }
        let path = format!("spans[{j}].parent_span_id");
        let mut next = *parent;
        let mut steps = 0;
        while let Some(ancestor) = next {
            let Some(&up) = parents.get(&ancestor) else {
                if steps == 0 {
                    errors.push(FieldError::new(&path, "names no span of this trace"));
                }
                break;
            };
            if ancestor == *id || steps > parents.len() {
                errors.push(FieldError::new(&path, "span parent chain forms a cycle"));
                break;
            }
            next = up;
            steps += 1;
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Creates the store directory owner-only (0700) and returns its canonical path.
fn prepare_directory(path: &Path, readonly: bool) -> Result<PathBuf> {
    if readonly && !path.join("data.mdb").exists() {
        return Err(Error::Storage(format!("there is no store at {}", path.display())));
    }
    if !readonly && !path.exists() {
        DirBuilder::new().recursive(true).mode(0o700).create(path).map_err(|e| {
            Error::Storage(format!("cannot create the store directory {}: {e}", path.display()))
        })?;
    }
    let canonical = path
        .canonicalize()
        .map_err(|e| Error::Storage(format!("cannot open the store at {}: {e}", path.display())))?;
    if !canonical.is_dir() {
        return Err(Error::Storage(format!(
            "{} is not a directory; a store is a directory holding data.mdb and lock.mdb",
            path.display()
        )));
    }
    Ok(canonical)
}

fn directory_id(path: &Path) -> Result<DirectoryId> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::Storage(format!("cannot open the store at {}: {e}", path.display())))?;
    Ok((meta.dev(), meta.ino()))
}

fn open_environment(path: &Path, options: &Options, generation: u64) -> Result<Environment> {
    let page = page_size();
    let map_size = options.map_size.max(page).div_ceil(page) * page;
    let mut env_options = EnvOpenOptions::new().read_txn_without_tls();
    env_options.map_size(map_size).max_dbs(16).max_readers(254);
    if options.readonly {
        // SAFETY: READ_ONLY is a safe flag; the call is unsafe only for the unsafe ones.
        unsafe { env_options.flags(EnvFlags::READ_ONLY) };
    }
    // SAFETY: the registry guarantees this path is not open elsewhere in this process; the
    // files are only modified by LMDB (in this or other processes, under its own locks).
    let env = unsafe { env_options.open(path) }
        .map_err(|e| Error::storage(&format!("opening the store at {}", path.display()), e))?;
    env.clear_stale_readers().map_err(|e| Error::storage("clearing stale readers", e))?;
    let dbs = if options.readonly { open_databases(&env)? } else { create_databases(&env)? };
    let newest = newest_dictionary(&env, &dbs)?;
    let core = Arc::new(Core {
        env: ManuallyDrop::new(env),
        closed: AtomicBool::new(false),
        dbs,
        resize: RwLock::new(()),
        active_dictionary: RwLock::new(None),
        dictionaries: RwLock::new(HashMap::new()),
    });
    if let Some(dictionary) = newest {
        core.activate(Arc::new(dictionary));
    }
    let writer = if options.readonly {
        None
    } else {
        Some(Writer::spawn(Arc::clone(&core), options.queue_bytes, options.retention)?)
    };
    Ok(Environment { core, writer, generation })
}

fn create_databases(env: &Env<WithoutTls>) -> Result<Databases> {
    let fail = |e| Error::storage("creating the databases", e);
    let mut txn = env.write_txn().map_err(fail)?;
    let dbs = Databases {
        records: env.create_database(&mut txn, Some("records")).map_err(fail)?,
        fragments: env
            .database_options()
            .types::<Bytes, Bytes>()
            .name("fragments")
            .flags(DatabaseFlags::DUP_SORT | DatabaseFlags::DUP_FIXED)
            .create(&mut txn)
            .map_err(fail)?,
        meta: env.create_database(&mut txn, Some("meta")).map_err(fail)?,
        dicts: env.create_database(&mut txn, Some("dicts")).map_err(fail)?,
        summaries: env.create_database(&mut txn, Some("summaries")).map_err(fail)?,
        by_time: env.create_database(&mut txn, Some("by_time")).map_err(fail)?,
        index: env.create_database(&mut txn, Some("index")).map_err(fail)?,
        merges: env.create_database(&mut txn, Some("merges")).map_err(fail)?,
        decisions: env.create_database(&mut txn, Some("decisions")).map_err(fail)?,
        decision_events: env.create_database(&mut txn, Some("decision_events")).map_err(fail)?,
        decision_agents: env.create_database(&mut txn, Some("decision_agents")).map_err(fail)?,
        decision_keys: env.create_database(&mut txn, Some("decision_keys")).map_err(fail)?,
    };
    match dbs.meta.get(&txn, b"format").map_err(fail)? {
        None => dbs.meta.put(&mut txn, b"format", FORMAT).map_err(fail)?,
        Some(found) => check_format(found)?,
    }
    txn.commit().map_err(fail)?;
    Ok(dbs)
}

fn open_databases(env: &Env<WithoutTls>) -> Result<Databases> {
    let fail = |e| Error::storage("opening the databases", e);
    let txn = env.read_txn().map_err(fail)?;
    let open = |name: &str| -> Result<Database<Bytes, Bytes>> {
        env.open_database(&txn, Some(name))
            .map_err(fail)?
            .ok_or_else(|| Error::Storage(format!("the store has no {name:?} database")))
    };
    let fragments = env
        .database_options()
        .types::<Bytes, Bytes>()
        .name("fragments")
        .flags(DatabaseFlags::DUP_SORT | DatabaseFlags::DUP_FIXED)
        .open(&txn)
        .map_err(fail)?
        .ok_or_else(|| Error::Storage("the store has no \"fragments\" database".into()))?;
    let dbs = Databases {
        records: open("records")?,
        fragments,
        meta: open("meta")?,
        dicts: open("dicts")?,
        summaries: open("summaries")?,
        by_time: open("by_time")?,
        index: open("index")?,
        merges: open("merges")?,
        decisions: open("decisions")?,
        decision_events: open("decision_events")?,
        decision_agents: open("decision_agents")?,
        decision_keys: open("decision_keys")?,
    };
    match dbs.meta.get(&txn, b"format").map_err(fail)? {
        Some(found) => check_format(found)?,
        None => return Err(Error::Storage("the store has no format marker".into())),
    }
    // Database handles opened in a transaction that aborts are closed again: commit it.
    txn.commit().map_err(fail)?;
    Ok(dbs)
}

/// The most recently trained dictionary in the store, which new records should use.
fn newest_dictionary(env: &Env<WithoutTls>, dbs: &Databases) -> Result<Option<Dictionary>> {
    let fail = |e| Error::storage("loading the compression dictionary", e);
    let txn = env.read_txn().map_err(fail)?;
    let Some((key, raw)) = dbs.dicts.last(&txn).map_err(fail)? else {
        return Ok(None);
    };
    let id = key
        .try_into()
        .map(u32::from_be_bytes)
        .map_err(|_| Error::Corrupt(format!("dicts key {} is not 4 bytes", to_hex(key))))?;
    Dictionary::new(id, raw).map(Some).map_err(Error::Corrupt)
}

fn check_format(found: &[u8]) -> Result<()> {
    if found == FORMAT {
        return Ok(());
    }
    Err(Error::Storage(format!(
        "the store's format is {:?}, this flightlog reads {:?}; use a matching version",
        String::from_utf8_lossy(found),
        String::from_utf8_lossy(FORMAT)
    )))
}

/// Why a write into the store at `dir` cannot fit, if it cannot: fewer free bytes on its
/// file system than a few pages, or data.mdb within a page of the file-size limit.
fn out_of_room(dir: &Path) -> Option<String> {
    let page = page_size() as u64;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    let c_dir = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: `c_dir` is a valid C string and `stat` is writable memory of the right type.
    if unsafe { libc::statvfs(c_dir.as_ptr(), stat.as_mut_ptr()) } == 0 {
        // SAFETY: statvfs succeeded, so it initialized `stat`.
        let stat = unsafe { stat.assume_init() };
        let free = stat.f_bavail.saturating_mul(stat.f_frsize);
        if free < 4 * page {
            return Some(format!("no space left on device ({free} bytes free)"));
        }
    }
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is writable memory of the right type.
    if unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit) } == 0
        && limit.rlim_cur != libc::RLIM_INFINITY
    {
        let size = std::fs::metadata(dir.join("data.mdb")).map(|m| m.len()).unwrap_or(0);
        if size.saturating_add(page) > limit.rlim_cur {
            return Some(format!(
                "file size limit exceeded (data.mdb is {size} bytes, RLIMIT_FSIZE {})",
                limit.rlim_cur
            ));
        }
    }
    None
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096)
}

/// Key of `records`: the sequence number, big-endian so that byte order is numeric order.
pub fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

pub fn parse_seq_key(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary;
    use std::os::unix::fs::PermissionsExt;

    /// A minimal msgpack trace: a map of string keys to string values.
    fn trace(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut out = vec![0x80 | fields.len() as u8];
        for (key, value) in fields {
            for text in [key, value] {
                out.push(0xda);
                out.extend_from_slice(&(text.len() as u16).to_be_bytes());
                out.extend_from_slice(text.as_bytes());
            }
        }
        out
    }

    fn contains(haystack: &[u8], needle: &str) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
    }

    fn open(dir: &Path, tweak: impl FnOnce(&mut Options)) -> Store {
        let mut options = Options::default();
        tweak(&mut options);
        Store::open(dir, options).unwrap()
    }

    #[test]
    fn a_logged_trace_reads_back_after_flush_and_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let store = open(&path, |_| {});
        let id = store.log(&trace(&[("agent_name", "support-bot"), ("input", "hello")])).unwrap();
        store.flush(None).unwrap();
        let fragments = store.fragments(&id).unwrap();
        assert_eq!(fragments.len(), 1);
        assert!(contains(&fragments[0], "support-bot") && contains(&fragments[0], "hello"));
        drop(store);
        let reopened = open(&path, |_| {});
        assert_eq!(reopened.fragments(&id).unwrap(), fragments);
        assert!(reopened.fragments(&crate::ids::new_trace_id()).unwrap().is_empty());
    }

    #[test]
    fn the_store_directory_is_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("private");
        let store = open(&path, |_| {});
        store.log(&trace(&[("agent_name", "a")])).unwrap();
        store.flush(None).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o700);
        assert_eq!(mode(&path.join("data.mdb")) & 0o077, 0);
        assert_eq!(mode(&path.join("lock.mdb")) & 0o077, 0);
    }

    #[test]
    fn logging_an_existing_id_appends_fragments_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), |_| {});
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        for output in ["first", "second", "third"] {
            store
                .log(&trace(&[("agent_name", "a"), ("trace_id", id), ("output", output)]))
                .unwrap();
        }
        store.flush(None).unwrap();
        let fragments = store.fragments(&crate::ids::parse_trace_id(id).unwrap()).unwrap();
        let order: Vec<bool> = ["first", "second", "third"]
            .iter()
            .zip(&fragments)
            .map(|(word, fragment)| contains(fragment, word))
            .collect();
        assert_eq!(order, [true, true, true]);
    }

    #[test]
    fn a_rejected_trace_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), |_| {});
        let bad = trace(&[("input", "no agent name")]);
        assert!(matches!(store.log(&bad), Err(Error::Validation(_))));
        let mut many = vec![0x92];
        many.extend(trace(&[("agent_name", "fine")]));
        many.extend(bad);
        assert!(matches!(store.log_many(&many), Err(Error::Validation(_))));
        store.flush(None).unwrap();
        let count = store
            .env
            .core
            .read(|txn| store.env.core.dbs.records.len(txn).map_err(|e| Error::storage("len", e)));
        assert_eq!(count.unwrap(), 0);
    }

    #[test]
    fn one_path_is_one_environment_whatever_its_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared");
        let first = open(&path, |_| {});
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let via_link = open(&link, |_| {});
        let via_dots = open(&dir.path().join("shared/../shared"), |_| {});
        assert!(Arc::ptr_eq(&first.env, &via_link.env) && Arc::ptr_eq(&first.env, &via_dots.env));
        let id = via_link.log(&trace(&[("agent_name", "a")])).unwrap();
        via_link.flush(None).unwrap();
        assert_eq!(first.fragments(&id).unwrap().len(), 1);
    }

    #[test]
    fn a_tiny_map_grows_until_everything_fits() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), |o| o.map_size = 64 << 10);
        // Hex of random ids does not compress much, so 3,000 traces need many megabytes.
        let ids: Vec<_> = (0..3000)
            .map(|_| {
                let noise: String = (0..40).map(|_| to_hex(&crate::ids::new_trace_id())).collect();
                store.log(&trace(&[("agent_name", "a"), ("input", &noise)])).unwrap()
            })
            .collect();
        store.flush(None).unwrap();
        assert!(store.env.core.env().info().map_size > 64 << 10);
        for id in &ids {
            assert_eq!(store.fragments(id).unwrap().len(), 1);
        }
    }

    #[test]
    fn a_tiny_queue_makes_callers_wait_but_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), |o| o.queue_bytes = 256);
        let ids: Vec<_> =
            (0..2000).map(|_| store.log(&trace(&[("agent_name", "queued")])).unwrap()).collect();
        store.flush(None).unwrap();
        assert!(ids.iter().all(|id| store.fragments(id).unwrap().len() == 1));
    }

    #[test]
    fn sync_durability_returns_after_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), |o| o.durability = Durability::Sync);
        let id = store.log(&trace(&[("agent_name", "a")])).unwrap();
        assert_eq!(store.fragments(&id).unwrap().len(), 1, "visible without flush");
    }

    #[test]
    fn threads_logging_at_once_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), |o| o.durability = Durability::Sync);
        let ids: Vec<TraceId> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        (0..200)
                            .map(|_| store.log(&trace(&[("agent_name", "t")])).unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
        });
        assert_eq!(ids.len(), 800);
        assert!(ids.iter().all(|id| store.fragments(id).unwrap().len() == 1));
    }

    #[test]
    fn read_only_reads_but_refuses_writes_and_missing_stores() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ro");
        let id = {
            let store = open(&path, |_| {});
            let id = store.log(&trace(&[("agent_name", "a")])).unwrap();
            store.flush(None).unwrap();
            id
        };
        let reader = open(&path, |o| o.readonly = true);
        assert_eq!(reader.fragments(&id).unwrap().len(), 1);
        let refused = reader.log(&trace(&[("agent_name", "a")]));
        assert!(matches!(refused, Err(Error::Storage(m)) if m.contains("read-only")));
        let upgrade = Store::open(&path, Options::default());
        assert!(matches!(upgrade, Err(Error::Storage(m)) if m.contains("already open read-only")));
        let missing =
            Store::open(&dir.path().join("nope"), Options { readonly: true, ..Options::default() });
        assert!(matches!(missing, Err(Error::Storage(m)) if m.contains("no store")));
    }

    #[test]
    fn a_dictionary_is_trained_stored_and_used_after_enough_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dict");
        let store = open(&path, |_| {});
        let prose = |i: usize| {
            format!("order {i} for customer {} was delayed; the agent offered a refund ", i % 13)
                .repeat(20)
        };
        let mut ids: Vec<_> = (0..codec::TRAINING_SAMPLES)
            .map(|i| {
                store.log(&trace(&[("agent_name", "support-bot"), ("output", &prose(i))])).unwrap()
            })
            .collect();
        store.flush(None).unwrap();
        // Training runs on a helper thread; the writer adopts the result at its next commit.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while store.env.core.active_dictionary().is_none() {
            assert!(std::time::Instant::now() < deadline, "no dictionary was trained");
            ids.push(store.log(&trace(&[("agent_name", "support-bot")])).unwrap());
            store.flush(None).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        let later =
            store.log(&trace(&[("agent_name", "support-bot"), ("output", &prose(7))])).unwrap();
        store.flush(None).unwrap();
        let dictionary_of = |id: &TraceId| {
            let core = &store.env.core;
            core.read(|txn| {
                let key = core.dbs.fragments.get(txn, id).unwrap().unwrap();
                Ok(codec::dictionary_id(core.dbs.records.get(txn, key).unwrap().unwrap()))
            })
            .unwrap()
        };
        assert_eq!(dictionary_of(&later), Some(1));
        // The records stored before the dictionary existed are recompressed with it, a few
        // hundred per batch.
        for _ in 0..ids.len() / 100 {
            store.log(&trace(&[("agent_name", "support-bot")])).unwrap();
            store.flush(None).unwrap();
        }
        let early = ids[..codec::TRAINING_SAMPLES].iter();
        let early = early.filter(|id| dictionary_of(id).is_none()).count();
        assert_eq!(early, 0, "records still compressed without the dictionary");
        drop(store);
        let reopened = open(&path, |o| o.readonly = true);
        ids.push(later);
        for id in &ids {
            assert_eq!(reopened.fragments(id).unwrap().len(), 1);
        }
        assert!(contains(&reopened.fragments(&later).unwrap()[0], "offered a refund"));
    }

    fn summary_of(store: &Store, id: &TraceId) -> Option<Summary> {
        let core = store.core();
        core.read(|txn| {
            let bytes = core.dbs.summaries.get(txn, id).map_err(|e| Error::storage("get", e))?;
            Ok(bytes.map(|b| Summary::decode(b).unwrap()))
        })
        .unwrap()
    }

    fn index_len(store: &Store) -> u64 {
        let core = store.core();
        core.read(|txn| core.dbs.index.len(txn).map_err(|e| Error::storage("len", e))).unwrap()
    }

    #[test]
    fn summaries_follow_the_merged_view_and_reindex() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), |_| {});
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let tid = crate::ids::parse_trace_id(id).unwrap();
        store
            .log(&trace(&[("agent_name", "bot"), ("trace_id", id), ("status", "running")]))
            .unwrap();
        store.flush(None).unwrap();
        assert_eq!(
            summary_of(&store, &tid).unwrap().numbers.status,
            Some(crate::summary::Status::Running)
        );
        let running = index_len(&store);
        store
            .log(&trace(&[
                ("agent_name", "bot"),
                ("trace_id", id),
                ("status", "failed"),
                ("run_id", "r1"),
            ]))
            .unwrap();
        store.flush(None).unwrap();
        let merged = summary_of(&store, &tid).unwrap();
        assert_eq!(merged.numbers.status, Some(crate::summary::Status::Failed));
        assert!(merged.has_errors());
        assert_eq!(merged.run_id.as_deref(), Some("r1"));
        // The status entry was replaced; has_errors and run_id entries were added.
        assert_eq!(index_len(&store), running + 2);
        let core = store.core();
        let stale = summary::index_key(
            summary::Field::Status,
            b"running",
            merged.numbers.timestamp_us,
            &tid,
        );
        let found = core.read(|txn| Ok(core.dbs.index.get(txn, &stale).unwrap().is_some()));
        assert!(!found.unwrap(), "the old status entry is gone");
    }

    #[test]
    fn delete_removes_records_fragments_summary_and_index_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), |_| {});
        let keep = store.log(&trace(&[("agent_name", "keep")])).unwrap();
        let gone = store.log(&trace(&[("agent_name", "gone"), ("run_id", "r")])).unwrap();
        store.flush(None).unwrap();
        let before = index_len(&store);
        assert_eq!(store.delete(vec![gone, crate::ids::new_trace_id()]).unwrap(), 1);
        assert_eq!(store.delete(vec![gone]).unwrap(), 0);
        assert!(store.fragments(&gone).unwrap().is_empty());
        assert!(summary_of(&store, &gone).is_none());
        assert_eq!(index_len(&store), before - 2, "its agent and run_id entries");
        assert_eq!(store.fragments(&keep).unwrap().len(), 1);
        let core = store.core();
        let records =
            core.read(|txn| core.dbs.records.len(txn).map_err(|e| Error::storage("len", e)));
        assert_eq!(records.unwrap(), 1);
    }

    #[test]
    fn retention_removes_traces_older_than_the_cutoff_while_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), |o| {
            o.retention = Retention { max_age: Some(Duration::from_secs(3600)), max_bytes: None }
        });
        let old = store
            .log(&trace(&[("agent_name", "a"), ("timestamp", "2001-01-01T00:00:00Z")]))
            .unwrap();
        let new = store.log(&trace(&[("agent_name", "a")])).unwrap();
        store.flush(None).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !store.fragments(&old).unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "retention never ran");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(store.fragments(&new).unwrap().len(), 1);
        assert!(summary_of(&store, &old).is_none());
    }

    #[test]
    fn seq_keys_sort_numerically_as_bytes() {
        let keys: Vec<_> =
            [1u64, 2, 255, 256, 65_536, u64::MAX].iter().map(|&s| seq_key(s)).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(parse_seq_key(&seq_key(42)), Some(42));
        assert_eq!(parse_seq_key(b"short"), None);
    }

    #[test]
    fn a_batch_of_many_named_traces_is_checked_whole() {
        // 100,000 traces under caller-given ids, then one that reopens the first. (Finding
        // each trace by a linear search of the batch took about 20 s, twice: the caller's
        // check and the writer's; the time is the benchmark's business, not this test's.)
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), |_| {});
        let id = |i: usize| format!("{:032x}", i + 1);
        let batch = |extra: &[Vec<u8>]| {
            let mut out = vec![0xdd];
            out.extend_from_slice(&(100_000 + extra.len() as u32).to_be_bytes());
            for i in 0..100_000 {
                out.extend(trace(&[
                    ("agent_name", "a"),
                    ("trace_id", &id(i)),
                    ("status", "failed"),
                ]));
            }
            extra.iter().for_each(|t| out.extend_from_slice(t));
            out
        };
        let reopen = trace(&[("agent_name", "a"), ("trace_id", &id(0)), ("status", "running")]);
        let refused = store.log_many(&batch(&[reopen])).unwrap_err().to_string();
        assert!(refused.starts_with("[100000].status: the trace already failed"), "{refused}");
        assert_eq!(store.log_many(&batch(&[])).unwrap().len(), 100_000);
        store.flush(None).unwrap();
        assert_eq!(store.count(b"\x80").unwrap(), 100_000);
    }
}
