//! The writer thread: a bounded queue, group commit and durability.
//!
//! Every LMDB write transaction of this process is begun *and* committed here, on one thread
//! (a write transaction committed on another thread hangs the next one: heed#339). Callers
//! validate on their own thread, hand canonical records over, and return; the writer takes
//! everything queued at once, compresses it, appends it in one transaction and commits.
//! Whatever arrives during a commit's fsync rides in the next one, so batches grow with load.

use std::collections::VecDeque;
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use heed::{EnvFlags, FlagSetMode, PutFlags, RwTxn};

use crate::codec::{self, Dictionary, Encoder};
use crate::decision::DecisionJob;
use crate::error::{Error, Result};
use crate::fork;
use crate::ids::TraceId;
use crate::killpoint::{KillPoints, Point};
use crate::merge::{Contribution, MergeState};
use crate::query::{self, Filters};
use crate::store::{check_updates, parse_seq_key, seq_key, Core, Databases};
use crate::summary::Summary;
use crate::time::Timestamp;

/// A validated record waiting to be written.
pub struct Pending {
    pub trace_id: TraceId,
    /// Canonical msgpack of the trace fragment, or its stored value once `encoded`.
    pub bytes: Vec<u8>,
    /// Whether a caller already compressed it (see [`Writer::backlogged`]).
    pub encoded: bool,
    /// What this fragment adds to the trace's summary.
    pub summary: Summary,
    /// What it adds to the trace's merge state, if the trace has several fragments.
    pub contribution: Contribution,
    /// Set when the caller named the trace: identifies an exact re-send.
    pub resend_key: Option<u128>,
}

/// Where a caller waits for the outcome of its job.
struct Completion {
    outcome: Mutex<Option<Result<u64>>>,
    ready: Condvar,
}

impl Completion {
    fn new() -> Arc<Self> {
        Arc::new(Completion { outcome: Mutex::new(None), ready: Condvar::new() })
    }

    fn complete(&self, outcome: Result<u64>) {
        *lock(&self.outcome) = Some(outcome);
        self.ready.notify_all();
    }

    fn wait(&self, timeout: Option<Duration>) -> Result<u64> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut outcome = lock(&self.outcome);
        loop {
            if let Some(result) = outcome.take() {
                return result;
            }
            outcome = match deadline {
                None => self.ready.wait(outcome).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::Timeout(format!(
                            "flush did not finish within {:.3} s; the data is still queued \
                             and will be written",
                            timeout.unwrap_or_default().as_secs_f64()
                        )));
                    }
                    self.ready.wait_timeout(outcome, left).unwrap_or_else(|e| e.into_inner()).0
                }
            };
        }
    }
}

enum Job {
    Append {
        records: Vec<Pending>,
        /// The records came from one `log_many`: refusals name each one's position.
        many: bool,
        fsync: bool,
        done: Option<Arc<Completion>>,
        /// Set by the writer when an update breaks SPEC §4's rules: nothing of it is stored.
        refused: Option<Error>,
    },
    Flush(Arc<Completion>),
    /// Remove these traces; completes with how many existed.
    Delete(Vec<TraceId>, Arc<Completion>),
    /// Remove every trace these filters match once the jobs before it are written;
    /// completes with how many.
    DeleteWhere(Box<Filters>, Arc<Completion>),
    /// A change to decisions, committed and synced on its own.
    Decision(DecisionJob, Arc<Completion>),
}

impl Job {
    /// Whether the job runs in a transaction of its own, after the jobs before it commit.
    fn runs_alone(&self) -> bool {
        matches!(self, Job::Delete(..) | Job::DeleteWhere(..) | Job::Decision(..))
    }

    fn bytes(&self) -> usize {
        match self {
            Job::Append { records, .. } => records.iter().map(|r| r.bytes.len()).sum(),
            Job::Flush(_) | Job::Delete(..) | Job::DeleteWhere(..) | Job::Decision(..) => 0,
        }
    }
}

struct QueueState {
    jobs: VecDeque<Job>,
    /// Whether the writer sleeps on `work`: only then does a push pay for a wake-up syscall.
    writer_waiting: bool,
    /// Bytes of queued and in-flight records; bounded by `capacity` so memory stays flat.
    bytes: usize,
    shutdown: bool,
}

struct Queue {
    state: Mutex<QueueState>,
    work: Condvar,
    space: Condvar,
    capacity: usize,
    /// `state.bytes`, readable without the lock.
    queued: AtomicUsize,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the data half-updated in a way
    // that matters (plain counters and queues), so a poisoned lock is still used.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Queue {
    fn push(&self, job: Job) -> Result<()> {
        let size = job.bytes();
        let mut state = lock(&self.state);
        // Wait for room, but always admit a job into an empty queue (one record larger
        // than the whole capacity must still get through).
        while state.bytes > 0 && state.bytes + size > self.capacity && !state.shutdown {
            state = self.space.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if state.shutdown {
            return Err(Error::StoreClosed(
                "the store is closing; nothing more is accepted".into(),
            ));
        }
        state.bytes += size;
        self.queued.store(state.bytes, Ordering::Relaxed);
        state.jobs.push_back(job);
        let wake = state.writer_waiting;
        drop(state);
        if wake {
            self.work.notify_one();
        }
        Ok(())
    }

    /// Everything queued, waiting for work at most `timeout`; `None` once shut down and
    /// drained, an empty batch when the timeout passed first.
    fn take_all(&self, timeout: Option<Duration>) -> Option<Vec<Job>> {
        let mut state = lock(&self.state);
        while state.jobs.is_empty() && !state.shutdown {
            state.writer_waiting = true;
            state = match timeout {
                None => self.work.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(timeout) => {
                    let (state, waited) =
                        self.work.wait_timeout(state, timeout).unwrap_or_else(|e| e.into_inner());
                    if waited.timed_out() {
                        let mut state = state;
                        state.writer_waiting = false;
                        return Some(Vec::new());
                    }
                    state
                }
            };
            state.writer_waiting = false;
        }
        if state.jobs.is_empty() {
            return None;
        }
        Some(state.jobs.drain(..).collect())
    }

    fn release(&self, bytes: usize) {
        let mut state = lock(&self.state);
        state.bytes -= bytes;
        self.queued.store(state.bytes, Ordering::Relaxed);
        drop(state);
        self.space.notify_all();
    }

    fn shut_down(&self) {
        lock(&self.state).shutdown = true;
        self.work.notify_all();
        self.space.notify_all();
    }
}

/// Queued bytes beyond which callers help with compression. Well above what arrives during
/// one commit's fsync (a queue that long only means the writer is waiting on the disk), so
/// callers help only when the writer's CPU really falls behind.
const BACKLOG_BYTES: usize = 24 << 20;

/// Handle to the writer thread of one environment. Dropping it drains the queue, commits and
/// joins the thread.
pub struct Writer {
    queue: Arc<Queue>,
    thread: Option<JoinHandle<()>>,
    generation: u64,
}

impl Writer {
    pub fn spawn(core: Arc<Core>, capacity: usize, retention: Retention) -> Result<Writer> {
        let queue = Arc::new(Queue {
            state: Mutex::new(QueueState {
                jobs: VecDeque::new(),
                writer_waiting: false,
                bytes: 0,
                shutdown: false,
            }),
            work: Condvar::new(),
            space: Condvar::new(),
            capacity: capacity.max(1),
            queued: AtomicUsize::new(0),
        });
        let writer_loop = WriterLoop::new(core, Arc::clone(&queue), retention)?;
        let thread = std::thread::Builder::new()
            .name("flightlog-writer".into())
            .spawn(move || writer_loop.run())
            .map_err(|e| Error::Storage(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer { queue, thread: Some(thread), generation: fork::generation() })
    }

    /// Queues records (`many` when they came from one `log_many`). With `wait`, returns only
    /// once their batch is committed (and synced when `fsync`), sharing that commit with
    /// whatever else was queued meanwhile.
    pub fn append(&self, records: Vec<Pending>, many: bool, fsync: bool, wait: bool) -> Result<()> {
        let done = wait.then(Completion::new);
        let job = Job::Append { records, many, fsync, done: done.clone(), refused: None };
        self.queue.push(job)?;
        match done {
            Some(done) => done.wait(None).map(|_| ()),
            None => Ok(()),
        }
    }

    /// Removes traces (records, fragments, summary, index entries) in one transaction after
    /// everything queued before; returns how many of them existed.
    pub fn delete(&self, ids: Vec<TraceId>) -> Result<u64> {
        let done = Completion::new();
        self.queue.push(Job::Delete(ids, Arc::clone(&done)))?;
        done.wait(None)
    }

    /// Applies a decision change in its own transaction after everything queued before,
    /// and returns once it is synced: the job's outcome, or its refusal.
    pub fn decide(&self, job: DecisionJob) -> Result<u64> {
        let done = Completion::new();
        self.queue.push(Job::Decision(job, Arc::clone(&done)))?;
        done.wait(None)
    }

    /// Whether the writer thread is falling behind: callers should then compress their own
    /// records (with the GIL released) so that both cores share the work.
    pub fn backlogged(&self) -> bool {
        self.queue.queued.load(Ordering::Relaxed) >= BACKLOG_BYTES.min(self.queue.capacity / 2)
    }

    /// Removes every trace the filters match, seeing every job queued before (a trace logged
    /// a moment ago and not committed yet is matched too), in one transaction; returns how
    /// many it removed.
    pub fn delete_where(&self, filters: Filters) -> Result<u64> {
        let done = Completion::new();
        self.queue.push(Job::DeleteWhere(Box::new(filters), Arc::clone(&done)))?;
        done.wait(None)
    }

    /// Returns once everything queued before the call is durable, or reports the first write
    /// failure since the previous flush.
    pub fn flush(&self, timeout: Option<Duration>) -> Result<()> {
        let done = Completion::new();
        self.queue.push(Job::Flush(Arc::clone(&done)))?;
        done.wait(timeout).map(|_| ())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.generation != fork::generation() {
            // In a forked child the thread does not exist and its locks may be held forever.
            if let Some(thread) = self.thread.take() {
                std::mem::forget(thread);
            }
            return;
        }
        self.queue.shut_down();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct WriterLoop {
    core: Arc<Core>,
    queue: Arc<Queue>,
    /// Whether LMDB's NO_SYNC flag is currently set (batches with only `none` records).
    no_sync: bool,
    /// The first failure since the last flush, reported to that flush.
    unreported: Option<Error>,
    encoder: Encoder,
    training: Training,
    /// Records this writer stored before its dictionary existed, to recompress with it.
    backlog: Option<Backlog>,
    retention: Retention,
    last_sweep: Instant,
    /// Test-only crash injection (see killpoint.rs); disarmed unless its variable is set.
    kill_points: KillPoints,
}

/// The records keys `next..=last` may hold values compressed without the dictionary.
#[derive(Debug, Clone, Copy)]
struct Backlog {
    next: u64,
    last: u64,
}

/// Backlog records rewritten per batch transaction at most: ~20 µs each, so a commit grows
/// by a few ms at most while the backlog lasts.
const RECOMPRESS_PER_COMMIT: usize = 256;

/// What the writer removes by itself, oldest traces first.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Retention {
    /// Traces whose timestamp is older than this.
    pub max_age: Option<Duration>,
    /// Oldest traces until the data (pages in use) fits in this many bytes.
    pub max_bytes: Option<u64>,
}

impl Retention {
    fn is_set(&self) -> bool {
        self.max_age.is_some() || self.max_bytes.is_some()
    }
}

/// How often retention runs while the store is open.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Traces removed per retention transaction, so a sweep never holds the writer for long.
const SWEEP_BATCH: usize = 10_000;

/// Getting a compression dictionary for a store that has none: collect the first records,
/// train on a helper thread (a few hundred ms), then store and use the result.
enum Training {
    Collecting { samples: Vec<Vec<u8>>, bytes: usize },
    Running(JoinHandle<Option<Vec<u8>>>),
    Done,
}

impl WriterLoop {
    fn new(core: Arc<Core>, queue: Arc<Queue>, retention: Retention) -> Result<Self> {
        let training = if core.active_dictionary().is_some() {
            Training::Done
        } else {
            Training::Collecting { samples: Vec::new(), bytes: 0 }
        };
        Ok(WriterLoop {
            core,
            queue,
            no_sync: false,
            unreported: None,
            encoder: Encoder::default(),
            training,
            backlog: None,
            retention,
            last_sweep: Instant::now(),
            kill_points: KillPoints::from_env()?,
        })
    }

    fn run(mut self) {
        let timeout = self.retention.is_set().then_some(SWEEP_EVERY);
        while let Some(mut jobs) = self.queue.take_all(timeout) {
            let bytes = jobs.iter().map(Job::bytes).sum();
            // Deletes and decision changes split the batch so that every job sees exactly
            // the jobs before it.
            let mut start = 0;
            for end in 0..=jobs.len() {
                if end < jobs.len() && !jobs[end].runs_alone() {
                    continue;
                }
                let outcome = self.commit(&mut jobs[start..end]);
                self.complete(&jobs[start..end], outcome);
                match jobs.get(end) {
                    Some(Job::Delete(ids, done)) => done.complete(self.delete(ids)),
                    Some(Job::DeleteWhere(filters, done)) => {
                        done.complete(self.delete_where(filters))
                    }
                    Some(Job::Decision(job, done)) => done.complete(self.decide(job)),
                    _ => {}
                }
                start = end + 1;
            }
            self.queue.release(bytes);
            if self.retention.is_set() && self.last_sweep.elapsed() >= SWEEP_EVERY {
                self.sweep();
            }
        }
    }

    /// Tells every job of a committed (or failed) batch its outcome. A failure goes to the
    /// callers waiting for it, and is kept for the next flush only for those that did not
    /// wait: a `sync` caller that got its error must not see it again from `flush()`.
    fn complete(&mut self, jobs: &[Job], outcome: Result<()>) {
        for job in jobs {
            match job {
                Job::Append { done, refused, .. } => {
                    let outcome = match (refused, &outcome) {
                        (Some(refusal), Ok(())) => Err(refusal.clone()),
                        _ => outcome.clone(),
                    };
                    match (done, outcome) {
                        (Some(done), outcome) => done.complete(outcome.map(|()| 0)),
                        (None, Err(err)) => {
                            self.unreported.get_or_insert(err);
                        }
                        (None, Ok(())) => {}
                    }
                }
                Job::Flush(done) => done.complete(match self.unreported.take() {
                    Some(err) => Err(err),
                    None => Ok(0),
                }),
                Job::Delete(..) | Job::DeleteWhere(..) | Job::Decision(..) => {}
            }
        }
    }

    /// Removes traces, counting those that existed.
    fn delete(&self, ids: &[TraceId]) -> Result<u64> {
        let mut removed = 0;
        self.write("deleting traces", |dbs, txn| {
            removed = 0;
            for id in ids {
                removed += u64::from(remove_trace(dbs, txn, id)?);
            }
            Ok(())
        })?;
        Ok(removed)
    }

    /// Removes the traces matching the filters, reading the matches in the same transaction.
    fn delete_where(&self, filters: &Filters) -> Result<u64> {
        let mut removed = 0;
        self.write("deleting traces", |dbs, txn| {
            removed = 0;
            for id in query::matching(txn, dbs, filters).map_err(Failure::Other)? {
                removed += u64::from(remove_trace(dbs, txn, &id)?);
            }
            Ok(())
        })?;
        Ok(removed)
    }

    /// Applies a decision change in one synced transaction.
    fn decide(&mut self, job: &DecisionJob) -> Result<u64> {
        self.set_no_sync(false)?;
        let mut outcome = 0;
        self.write("recording a decision event", |dbs, txn| {
            outcome = job.apply(dbs, txn)?;
            Ok(())
        })?;
        Ok(outcome)
    }

    /// Enforces retention: traces older than `max_age`, then the oldest until the data fits
    /// in `max_bytes`. Failures are reported to the next flush like write failures.
    fn sweep(&mut self) {
        self.last_sweep = Instant::now();
        if let Err(err) = self.sweep_age().and_then(|()| self.sweep_size()) {
            self.unreported.get_or_insert(err);
        }
    }

    fn sweep_age(&self) -> Result<()> {
        let Some(max_age) = self.retention.max_age else {
            return Ok(());
        };
        let cutoff = Timestamp::now().as_micros().saturating_sub(max_age.as_micros() as i64);
        loop {
            let expired = self.oldest(SWEEP_BATCH, Some(cutoff))?;
            if expired.is_empty() {
                return Ok(());
            }
            self.delete(&expired)?;
        }
    }

    fn sweep_size(&self) -> Result<()> {
        let Some(max_bytes) = self.retention.max_bytes else {
            return Ok(());
        };
        let used = self
            .core
            .env()
            .non_free_pages_size()
            .map_err(|e| Error::storage("measuring the store", e))?;
        if used <= max_bytes {
            return Ok(());
        }
        let traces = self.core.read(|txn| {
            self.core.dbs.summaries.len(txn).map_err(|e| Error::storage("counting traces", e))
        })?;
        // Remove about the excess at the average trace size (at least one); the next sweep,
        // a second later, removes more if freed pages were not enough.
        let per_trace = (used / traces.max(1)).max(1);
        let excess = ((used - max_bytes) / per_trace + 1).min(SWEEP_BATCH as u64) as usize;
        let oldest = self.oldest(excess, None)?;
        self.delete(&oldest).map(|_| ())
    }

    /// Up to `limit` trace ids in timestamp order, older than `before` (Unix µs) if given.
    fn oldest(&self, limit: usize, before: Option<i64>) -> Result<Vec<TraceId>> {
        self.core.read(|txn| {
            let fail = |e| Error::storage("scanning traces by time", e);
            let mut ids = Vec::new();
            for entry in self.core.dbs.by_time.iter(txn).map_err(fail)? {
                let (key, _) = entry.map_err(fail)?;
                let Some((stamp, id)) = crate::summary::parse_time_key(key) else { continue };
                if ids.len() >= limit || before.is_some_and(|cutoff| stamp >= cutoff) {
                    break;
                }
                ids.push(id);
            }
            Ok(ids)
        })
    }

    fn commit(&mut self, jobs: &mut [Job]) -> Result<()> {
        self.adopt_trained_dictionary();
        let dictionary = self.core.active_dictionary();
        let mut fsync = false;
        let mut any = false;
        for job in jobs.iter_mut() {
            if let Job::Append { records, fsync: wants, .. } = job {
                fsync |= *wants;
                for record in records.iter_mut() {
                    record.bytes = self.encode(record, dictionary.as_deref());
                    record.encoded = true;
                    any = true;
                }
            }
        }
        if !any {
            return Ok(());
        }
        self.set_no_sync(!fsync)?;
        let core = Arc::clone(&self.core);
        let backlog = self.backlog;
        let mut left = backlog;
        let kill_points = &self.kill_points;
        self.write("writing a batch of traces", |dbs, txn| {
            kill_points.reach(Point::BeforePut);
            // Read the last key inside the transaction: other processes append to this store.
            let mut seq = match dbs.records.last(txn)? {
                Some((key, _)) => parse_seq_key(key).unwrap_or(0),
                None => 0,
            };
            for job in jobs.iter_mut() {
                let Job::Append { records, many, refused, .. } = job else { continue };
                *refused = None;
                // All or nothing per call, as validation is.
                if records.iter().any(|record| record.resend_key.is_some()) {
                    match check_updates(&core, txn, records, *many, true) {
                        Ok(()) => {}
                        Err(err @ Error::Validation(_)) => {
                            *refused = Some(err);
                            continue;
                        }
                        Err(err) => return Err(Failure::Other(err)),
                    }
                }
                for record in records.iter() {
                    write_fragment(&core, dbs, txn, &mut seq, record)?;
                }
            }
            if let (Some(backlog), Some(dictionary)) = (backlog, dictionary.as_deref()) {
                left = recompress(dbs, txn, backlog, dictionary)?;
            }
            kill_points.reach(Point::AfterPut);
            Ok(())
        })?;
        self.backlog = left;
        self.kill_points.reach(Point::AfterCommit);
        Ok(())
    }

    fn encode(&mut self, record: &mut Pending, dictionary: Option<&Dictionary>) -> Vec<u8> {
        if record.encoded {
            return std::mem::take(&mut record.bytes);
        }
        if let Training::Collecting { samples, bytes } = &mut self.training {
            if *bytes + record.bytes.len() <= codec::TRAINING_BYTES {
                *bytes += record.bytes.len();
                samples.push(record.bytes.clone());
            }
            if samples.len() >= codec::TRAINING_SAMPLES || *bytes >= codec::TRAINING_BYTES {
                let samples = std::mem::take(samples);
                self.training = match std::thread::Builder::new()
                    .name("flightlog-train".into())
                    .spawn(move || Dictionary::train(&samples))
                {
                    Ok(handle) => Training::Running(handle),
                    Err(_) => Training::Done,
                };
            }
        }
        self.encoder.encode(&record.bytes, dictionary)
    }

    /// Stores a freshly trained dictionary and switches to it. A failure here only means
    /// records stay compressed without one, so it is not reported to callers.
    fn adopt_trained_dictionary(&mut self) {
        let finished = matches!(&self.training, Training::Running(h) if h.is_finished());
        if !finished {
            return;
        }
        let Training::Running(handle) = std::mem::replace(&mut self.training, Training::Done)
        else {
            return;
        };
        let Ok(Some(raw)) = handle.join() else {
            return;
        };
        let mut id = 0;
        let mut last = None;
        let stored = self.write("storing the compression dictionary", |dbs, txn| {
            id = match dbs.dicts.last(txn)? {
                Some((key, _)) => key.try_into().map_or(0, u32::from_be_bytes) + 1,
                None => 1,
            };
            last = dbs.records.last(txn)?.and_then(|(key, _)| parse_seq_key(key));
            Ok(dbs.dicts.put(txn, &id.to_be_bytes(), &raw)?)
        });
        if let (Ok(()), Ok(dictionary)) = (stored, Dictionary::new(id, &raw)) {
            self.core.activate(Arc::new(dictionary));
            self.backlog = last.map(|last| Backlog { next: 0, last });
        }
    }

    /// Runs `fill` in one write transaction and commits it: all or nothing. Grows the map and
    /// retries on MDB_MAP_FULL; adopts another process's map size on MDB_MAP_RESIZED.
    fn write(
        &self,
        context: &str,
        mut fill: impl FnMut(&Databases, &mut RwTxn) -> std::result::Result<(), Failure>,
    ) -> Result<()> {
        loop {
            let attempt = {
                let _no_resize = self.core.resize_guard();
                self.core.env().write_txn().map_err(Failure::Lmdb).and_then(|mut txn| {
                    fill(&self.core.dbs, &mut txn)?;
                    txn.commit().map_err(Failure::Lmdb)
                })
            };
            match attempt {
                Err(Failure::Lmdb(heed::Error::Mdb(heed::MdbError::MapFull))) => {
                    self.core.grow_map()?
                }
                Err(Failure::Lmdb(heed::Error::Mdb(heed::MdbError::MapResized))) => {
                    self.core.adopt_map_size()?
                }
                Err(Failure::Lmdb(err)) => return Err(self.core.write_failure(context, err)),
                Err(Failure::Other(err)) => return Err(err),
                Ok(()) => return Ok(()),
            }
        }
    }

    fn set_no_sync(&mut self, no_sync: bool) -> Result<()> {
        if no_sync == self.no_sync {
            return Ok(());
        }
        let mode = if no_sync { FlagSetMode::Enable } else { FlagSetMode::Disable };
        // SAFETY: NO_SYNC only skips the fsync at commit; it is toggled between transactions
        // by the only thread that commits, and a batch with any durable record clears it.
        unsafe { self.core.env().set_flags(EnvFlags::NO_SYNC, mode) }
            .map_err(|e| Error::storage("setting the durability mode", e))?;
        self.no_sync = no_sync;
        Ok(())
    }
}

/// Why a write transaction failed: LMDB (some failures are retried), or reading what is
/// stored (a record that does not decode), or a refusal (nothing is committed).
pub enum Failure {
    Lmdb(heed::Error),
    Other(Error),
}

impl From<heed::Error> for Failure {
    fn from(err: heed::Error) -> Self {
        Failure::Lmdb(err)
    }
}

/// Rewrites up to [`RECOMPRESS_PER_COMMIT`] records of the backlog that were compressed
/// without a dictionary, with it, where that makes them smaller; what is left of the backlog.
///
/// The records written while the first dictionary trains are stored ~2.3x larger; most of
/// them (~2.9 KB for a standard trace) exceed LMDB's inline limit (~2 KB on 4 KB pages) and
/// take a whole overflow page each. A record that does not decode is left for `check()`.
fn recompress(
    dbs: &Databases,
    txn: &mut RwTxn,
    backlog: Backlog,
    dictionary: &Dictionary,
) -> std::result::Result<Option<Backlog>, Failure> {
    let (first, last) = (seq_key(backlog.next), seq_key(backlog.last));
    let range = (Bound::Included(&first[..]), Bound::Included(&last[..]));
    let mut smaller = Vec::new();
    let mut next = None;
    for (visited, entry) in dbs.records.range(txn, &range)?.enumerate() {
        let (key, value) = entry?;
        let seq = parse_seq_key(key).unwrap_or(u64::MAX);
        if visited == RECOMPRESS_PER_COMMIT {
            next = Some(seq);
            break;
        }
        if codec::dictionary_id(value).is_some() {
            continue;
        }
        let Ok(canonical) = codec::decode(value, None) else { continue };
        let rewritten = codec::encode_here(&canonical, Some(dictionary));
        if rewritten.len() < value.len() {
            smaller.push((seq, rewritten));
        }
    }
    for (seq, value) in &smaller {
        dbs.records.put(txn, &seq_key(*seq), value)?;
    }
    Ok(next.map(|next| Backlog { next, last: backlog.last }))
}

/// Appends one fragment and folds it into its trace's summary and merge state (reading what
/// this transaction already wrote, so fragments of one trace in a batch merge in order), then
/// re-indexes the trace. An exact re-send of a stored fragment is dropped.
fn write_fragment(
    core: &Core,
    dbs: &Databases,
    txn: &mut RwTxn,
    seq: &mut u64,
    record: &Pending,
) -> std::result::Result<(), Failure> {
    let id = &record.trace_id;
    // An undecodable stored summary is replaced rather than blocking every later write;
    // `check` reports the index entries it may leave behind.
    let old = dbs.summaries.get(txn, id)?.and_then(|bytes| Summary::decode(bytes).ok());
    let (merged, state) = match &old {
        None => {
            let state = record.resend_key.map(|key| {
                let mut state = MergeState::default();
                state.fold(&record.contribution, Some(key));
                state
            });
            (record.summary.clone(), state)
        }
        Some(old) => {
            let mut state = core.merge_state(txn, id).map_err(Failure::Other)?;
            if record.resend_key.is_some_and(|key| state.is_resend(key)) {
                return Ok(());
            }
            state.fold(&record.contribution, record.resend_key);
            let mut merged = old.clone();
            merged.merge(&record.summary);
            state.apply(&mut merged.numbers);
            (merged, Some(state))
        }
    };
    *seq += 1;
    let key = seq_key(*seq);
    dbs.records.put_with_flags(txn, PutFlags::APPEND, &key, &record.bytes)?;
    dbs.fragments.put(txn, id, &key)?;
    if let Some(state) = state {
        dbs.merges.put(txn, id, &state.encode())?;
    }
    dbs.put_summary(txn, id, old.as_ref(), &merged)?;
    Ok(())
}

/// Removes one trace's records, fragment index, summary and index entries; false if it had
/// none of them.
fn remove_trace(dbs: &Databases, txn: &mut RwTxn, trace_id: &TraceId) -> heed::Result<bool> {
    let mut keys = Vec::new();
    if let Some(dups) = dbs.fragments.get_duplicates(txn, trace_id)? {
        for entry in dups {
            keys.push(entry?.1.to_vec());
        }
    }
    for key in &keys {
        dbs.records.delete(txn, key)?;
    }
    let had_fragments = dbs.fragments.delete(txn, trace_id)?;
    dbs.merges.delete(txn, trace_id)?;
    let summary = dbs.summaries.get(txn, trace_id)?.map(Summary::decode);
    let had_summary = summary.is_some();
    match summary {
        Some(Ok(summary)) => dbs.remove_summary(txn, trace_id, &summary)?,
        Some(Err(_)) => {
            dbs.summaries.delete(txn, trace_id)?;
        }
        None => {}
    }
    Ok(had_fragments || had_summary)
}
