//! The writer thread: a bounded queue, group commit and durability.
//!
//! Every LMDB write transaction of this process is begun *and* committed here, on one thread
//! (a write transaction committed on another thread hangs the next one: heed#339). Callers
//! validate on their own thread, hand canonical records over, and return; the writer takes
//! everything queued at once, compresses it, appends it in one transaction and commits.
//! Whatever arrives during a commit's fsync rides in the next one, so batches grow with load.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use heed::{EnvFlags, FlagSetMode, PutFlags, RwTxn};

use crate::codec::{self, Dictionary, Encoder};
use crate::error::{Error, Result};
use crate::fork;
use crate::ids::TraceId;
use crate::store::{parse_seq_key, seq_key, Core};

/// A validated record waiting to be written.
pub struct Pending {
    pub trace_id: TraceId,
    /// Canonical msgpack of the trace fragment, or its stored value once `encoded`.
    pub bytes: Vec<u8>,
    /// Whether a caller already compressed it (see [`Writer::backlogged`]).
    pub encoded: bool,
}

/// Where a caller waits for the outcome of its job.
struct Completion {
    outcome: Mutex<Option<Result<()>>>,
    ready: Condvar,
}

impl Completion {
    fn new() -> Arc<Self> {
        Arc::new(Completion { outcome: Mutex::new(None), ready: Condvar::new() })
    }

    fn complete(&self, outcome: Result<()>) {
        *lock(&self.outcome) = Some(outcome);
        self.ready.notify_all();
    }

    fn wait(&self, timeout: Option<Duration>) -> Result<()> {
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
    Append { records: Vec<Pending>, fsync: bool, done: Option<Arc<Completion>> },
    Flush(Arc<Completion>),
}

impl Job {
    fn bytes(&self) -> usize {
        match self {
            Job::Append { records, .. } => records.iter().map(|r| r.bytes.len()).sum(),
            Job::Flush(_) => 0,
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

    /// Everything queued, waiting for work; empty only once shut down and drained.
    fn take_all(&self) -> Vec<Job> {
        let mut state = lock(&self.state);
        while state.jobs.is_empty() && !state.shutdown {
            state.writer_waiting = true;
            state = self.work.wait(state).unwrap_or_else(|e| e.into_inner());
            state.writer_waiting = false;
        }
        state.jobs.drain(..).collect()
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
    pub fn spawn(core: Arc<Core>, capacity: usize) -> Result<Writer> {
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
        let writer_loop = WriterLoop::new(core, Arc::clone(&queue));
        let thread = std::thread::Builder::new()
            .name("flightlog-writer".into())
            .spawn(move || writer_loop.run())
            .map_err(|e| Error::Storage(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer { queue, thread: Some(thread), generation: fork::generation() })
    }

    /// Queues records. With `wait`, returns only once their batch is committed (and synced
    /// when `fsync`), sharing that commit with whatever else was queued meanwhile.
    pub fn append(&self, records: Vec<Pending>, fsync: bool, wait: bool) -> Result<()> {
        let done = wait.then(Completion::new);
        self.queue.push(Job::Append { records, fsync, done: done.clone() })?;
        match done {
            Some(done) => done.wait(None),
            None => Ok(()),
        }
    }

    /// Whether the writer thread is falling behind: callers should then compress their own
    /// records (with the GIL released) so that both cores share the work.
    pub fn backlogged(&self) -> bool {
        self.queue.queued.load(Ordering::Relaxed) >= BACKLOG_BYTES.min(self.queue.capacity / 2)
    }

    /// Returns once everything queued before the call is durable, or reports the first write
    /// failure since the previous flush.
    pub fn flush(&self, timeout: Option<Duration>) -> Result<()> {
        let done = Completion::new();
        self.queue.push(Job::Flush(Arc::clone(&done)))?;
        done.wait(timeout)
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
}

/// Getting a compression dictionary for a store that has none: collect the first records,
/// train on a helper thread (a few hundred ms), then store and use the result.
enum Training {
    Collecting { samples: Vec<Vec<u8>>, bytes: usize },
    Running(JoinHandle<Option<Vec<u8>>>),
    Done,
}

impl WriterLoop {
    fn new(core: Arc<Core>, queue: Arc<Queue>) -> Self {
        let training = if core.active_dictionary().is_some() {
            Training::Done
        } else {
            Training::Collecting { samples: Vec::new(), bytes: 0 }
        };
        WriterLoop {
            core,
            queue,
            no_sync: false,
            unreported: None,
            encoder: Encoder::default(),
            training,
        }
    }

    fn run(mut self) {
        loop {
            let mut jobs = self.queue.take_all();
            if jobs.is_empty() {
                return;
            }
            let bytes = jobs.iter().map(Job::bytes).sum();
            let outcome = self.commit(&mut jobs);
            if let Err(err) = &outcome {
                self.unreported.get_or_insert_with(|| err.clone());
            }
            for job in jobs {
                match job {
                    Job::Append { done: Some(done), .. } => done.complete(outcome.clone()),
                    Job::Append { done: None, .. } => {}
                    Job::Flush(done) => done.complete(match self.unreported.take() {
                        Some(err) => Err(err),
                        None => Ok(()),
                    }),
                }
            }
            self.queue.release(bytes);
        }
    }

    fn commit(&mut self, jobs: &mut [Job]) -> Result<()> {
        self.adopt_trained_dictionary();
        let dictionary = self.core.active_dictionary();
        let mut fsync = false;
        let mut values = Vec::new();
        for job in jobs {
            if let Job::Append { records, fsync: wants, .. } = job {
                fsync |= *wants;
                for record in records.iter_mut() {
                    values.push((record.trace_id, self.encode(record, dictionary.as_deref())));
                }
            }
        }
        if values.is_empty() {
            return Ok(());
        }
        self.set_no_sync(!fsync)?;
        self.write("writing a batch of traces", |dbs, txn| {
            // Read the last key inside the transaction: other processes append to this store.
            let mut seq = match dbs.records.last(txn)? {
                Some((key, _)) => parse_seq_key(key).unwrap_or(0),
                None => 0,
            };
            for (trace_id, value) in &values {
                seq += 1;
                let key = seq_key(seq);
                dbs.records.put_with_flags(txn, PutFlags::APPEND, &key, value)?;
                dbs.fragments.put(txn, trace_id, &key)?;
            }
            Ok(())
        })
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
        let stored = self.write("storing the compression dictionary", |dbs, txn| {
            id = match dbs.dicts.last(txn)? {
                Some((key, _)) => key.try_into().map_or(0, u32::from_be_bytes) + 1,
                None => 1,
            };
            dbs.dicts.put(txn, &id.to_be_bytes(), &raw)
        });
        if stored.is_ok() {
            self.core.activate(Arc::new(Dictionary::new(id, &raw)));
        }
    }

    /// Runs `fill` in one write transaction and commits it: all or nothing. Grows the map and
    /// retries on MDB_MAP_FULL; adopts another process's map size on MDB_MAP_RESIZED.
    fn write(
        &self,
        context: &str,
        mut fill: impl FnMut(&crate::store::Databases, &mut RwTxn) -> heed::Result<()>,
    ) -> Result<()> {
        loop {
            let attempt = {
                let _no_resize = self.core.resize_guard();
                self.core.env().write_txn().and_then(|mut txn| {
                    fill(&self.core.dbs, &mut txn)?;
                    txn.commit()
                })
            };
            match attempt {
                Err(heed::Error::Mdb(heed::MdbError::MapFull)) => self.core.grow_map()?,
                Err(heed::Error::Mdb(heed::MdbError::MapResized)) => self.core.adopt_map_size()?,
                Err(err) => return Err(Error::storage(context, err)),
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
