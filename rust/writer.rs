//! The writer thread: a bounded queue, group commit and durability.
//!
//! Every LMDB write transaction of this process is begun *and* committed here, on one thread
//! (a write transaction committed on another thread hangs the next one: heed#339). Callers
//! validate on their own thread, hand canonical records over, and return; the writer takes
//! everything queued at once, compresses it, appends it in one transaction and commits.
//! Whatever arrives during a commit's fsync rides in the next one, so batches grow with load.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use heed::{EnvFlags, FlagSetMode, PutFlags};

use crate::error::{Error, Result};
use crate::fork;
use crate::ids::TraceId;
use crate::store::{seq_key, Core, ValueEncoder};

/// A validated record waiting to be written.
pub struct Pending {
    pub trace_id: TraceId,
    /// Canonical msgpack of the trace fragment (uncompressed).
    pub bytes: Vec<u8>,
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
    /// Bytes of queued and in-flight records; bounded by `capacity` so memory stays flat.
    bytes: usize,
    shutdown: bool,
}

struct Queue {
    state: Mutex<QueueState>,
    work: Condvar,
    space: Condvar,
    capacity: usize,
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
            return Err(Error::StoreClosed("the store is closing; nothing more is accepted".into()));
        }
        state.bytes += size;
        state.jobs.push_back(job);
        drop(state);
        self.work.notify_one();
        Ok(())
    }

    /// Everything queued, waiting for work; empty only once shut down and drained.
    fn take_all(&self) -> Vec<Job> {
        let mut state = lock(&self.state);
        while state.jobs.is_empty() && !state.shutdown {
            state = self.work.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.jobs.drain(..).collect()
    }

    fn release(&self, bytes: usize) {
        lock(&self.state).bytes -= bytes;
        self.space.notify_all();
    }

    fn shut_down(&self) {
        lock(&self.state).shutdown = true;
        self.work.notify_all();
        self.space.notify_all();
    }
}

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
            state: Mutex::new(QueueState { jobs: VecDeque::new(), bytes: 0, shutdown: false }),
            work: Condvar::new(),
            space: Condvar::new(),
            capacity: capacity.max(1),
        });
        let writer_loop = WriterLoop::new(core, Arc::clone(&queue), ValueEncoder::new()?);
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
    encoder: ValueEncoder,
}

impl WriterLoop {
    fn new(core: Arc<Core>, queue: Arc<Queue>, encoder: ValueEncoder) -> Self {
        WriterLoop { core, queue, no_sync: false, unreported: None, encoder }
    }

    fn run(mut self) {
        loop {
            let jobs = self.queue.take_all();
            if jobs.is_empty() {
                return;
            }
            let bytes = jobs.iter().map(Job::bytes).sum();
            let outcome = self.commit(&jobs);
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

    fn commit(&mut self, jobs: &[Job]) -> Result<()> {
        let mut fsync = false;
        let mut values = Vec::new();
        for job in jobs {
            if let Job::Append { records, fsync: wants, .. } = job {
                fsync |= *wants;
                values.extend(records.iter().map(|r| (r.trace_id, self.encoder.encode(&r.bytes))));
            }
        }
        if values.is_empty() {
            return Ok(());
        }
        self.set_no_sync(!fsync)?;
        loop {
            match self.append_batch(&values) {
                Err(heed::Error::Mdb(heed::MdbError::MapFull)) => self.core.grow_map()?,
                Err(heed::Error::Mdb(heed::MdbError::MapResized)) => self.core.adopt_map_size()?,
                Err(err) => return Err(Error::storage("writing a batch of traces", err)),
                Ok(()) => return Ok(()),
            }
        }
    }

    /// One write transaction: append every record under the next sequence numbers and index
    /// it by trace id. All or nothing: an error aborts the transaction.
    fn append_batch(&self, values: &[(TraceId, Vec<u8>)]) -> heed::Result<()> {
        let _no_resize = self.core.resize_guard();
        let env = self.core.env();
        let dbs = &self.core.dbs;
        let mut txn = env.write_txn()?;
        // Read the last key inside the transaction: other processes append to the same store.
        let mut seq = match dbs.records.last(&txn)? {
            Some((key, _)) => crate::store::parse_seq_key(key).unwrap_or(0),
            None => 0,
        };
        for (trace_id, value) in values {
            seq += 1;
            let key = seq_key(seq);
            dbs.records.put_with_flags(&mut txn, PutFlags::APPEND, &key, value)?;
            dbs.fragments.put(&mut txn, trace_id, &key)?;
        }
        txn.commit()
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
