//! The binding: argument extraction, releasing the GIL around all real work, and mapping
//! `Error` to the classes of `flightlog.errors`. No logic lives here.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use pyo3::exceptions::{PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use crate::decision::{DecisionQuery, EventFields, OpenRequest};
use crate::error::{Error, FieldError};
use crate::ids;
use crate::query::PageRequest;
use crate::redact::{Mode, Redaction};
use crate::schema::Limits;
use crate::store::{Durability, Options, Store, DEFAULT_MAP_SIZE};
use crate::writer::Retention;

pyo3::import_exception!(flightlog.errors, ValidationError);
pyo3::import_exception!(flightlog.errors, SecretDetected);
pyo3::import_exception!(flightlog.errors, TraceNotFound);
pyo3::import_exception!(flightlog.errors, StorageError);
pyo3::import_exception!(flightlog.errors, StorageFull);
pyo3::import_exception!(flightlog.errors, StoreClosed);
pyo3::import_exception!(flightlog.errors, DecisionNotFound);
pyo3::import_exception!(flightlog.errors, AccessDenied);
pyo3::import_exception!(flightlog.errors, DecisionClosed);
pyo3::import_exception!(flightlog.errors, InvalidTransition);

fn to_py_err(err: Error) -> PyErr {
    let message = err.to_string();
    match err {
        Error::Validation(errors) => field_errors(&errors)
            .map_or_else(|e| e, |list| ValidationError::new_err((message, list))),
        Error::SecretDetected(errors) => field_errors(&errors)
            .map_or_else(|e| e, |list| SecretDetected::new_err((message, list))),
        Error::TraceNotFound(_) => TraceNotFound::new_err(message),
        Error::StoreClosed(_) => StoreClosed::new_err(message),
        Error::StorageFull(_) => StorageFull::new_err(message),
        Error::Storage(_) | Error::Corrupt(_) => StorageError::new_err(message),
        Error::Timeout(_) => PyTimeoutError::new_err(message),
        Error::DecisionNotFound(_) => DecisionNotFound::new_err(message),
        Error::AccessDenied(_) => AccessDenied::new_err(message),
        Error::DecisionClosed(_) => DecisionClosed::new_err(message),
        Error::InvalidTransition(_) => InvalidTransition::new_err(message),
    }
}

/// The `errors` list of a `ValidationError`: `{path, message}` dicts, plus `kind` for secrets.
fn field_errors(errors: &[FieldError]) -> PyResult<Py<PyList>> {
    Python::attach(|py| {
        let list = PyList::empty(py);
        for e in errors {
            let item = PyDict::new(py);
            item.set_item("path", &e.path)?;
            item.set_item("message", &e.message)?;
            if let Some(kind) = &e.kind {
                item.set_item("kind", kind)?;
            }
            list.append(item)?;
        }
        Ok(list.unbind())
    })
}

fn parse_trace_id(text: &str) -> PyResult<ids::TraceId> {
    ids::parse_trace_id(text).ok_or_else(|| {
        to_py_err(Error::validation(
            "trace_id",
            format!("must be 32 lowercase hex characters (not all zero), got {text:?}"),
        ))
    })
}

/// A msgpack-encoded instant (datetime, ISO-8601 string or epoch seconds) as Unix µs.
fn instant(path: &str, bytes: &[u8]) -> PyResult<i64> {
    crate::query::parse_instant_bytes(bytes).map_err(|why| to_py_err(Error::validation(path, why)))
}

/// An open store. The Python `flightlog.Store` wraps it; see its docstrings.
#[pyclass(name = "Store", module = "flightlog._core", frozen)]
struct PyStore {
    /// `None` once closed. Replaced by a fresh handle in a forked child.
    handle: Mutex<Option<Store>>,
}

impl PyStore {
    /// The live handle, reopening the store first in a forked child.
    fn store(&self) -> PyResult<Store> {
        let mut slot = self.handle.lock().unwrap_or_else(|e| e.into_inner());
        match slot.as_ref() {
            None => Err(to_py_err(Error::StoreClosed("the store is closed".into()))),
            Some(store) if store.is_stale() => {
                let fresh =
                    Store::open(store.path(), store.options().clone()).map_err(to_py_err)?;
                *slot = Some(fresh.clone());
                Ok(fresh)
            }
            Some(store) => Ok(store.clone()),
        }
    }
}

#[pymethods]
impl PyStore {
    #[new]
    #[pyo3(signature = (path, *, durability="group", readonly=false, map_size=DEFAULT_MAP_SIZE,
                        queue_bytes=64 << 20, max_trace_bytes=16 << 20, max_depth=64,
                        max_spans=100_000, retention_s=None, max_bytes=None,
                        redaction="redact", redaction_keys=Vec::new(),
                        redaction_patterns=Vec::new()))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        durability: &str,
        readonly: bool,
        map_size: usize,
        queue_bytes: usize,
        max_trace_bytes: usize,
        max_depth: usize,
        max_spans: usize,
        retention_s: Option<f64>,
        max_bytes: Option<u64>,
        redaction: &str,
        redaction_keys: Vec<String>,
        redaction_patterns: Vec<(String, String)>,
    ) -> PyResult<Self> {
        let max_age = match retention_s {
            None => None,
            Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
            Some(s) => {
                return Err(to_py_err(Error::validation(
                    "retention",
                    format!("must be a positive duration, got {s} seconds"),
                )))
            }
        };
        if max_bytes == Some(0) {
            return Err(to_py_err(Error::validation("max_bytes", "must be a positive int")));
        }
        let invalid = |e: FieldError| to_py_err(Error::Validation(vec![e]));
        let mode = Mode::parse(redaction).map_err(invalid)?;
        let redaction = py
            .detach(|| Redaction::new(mode, &redaction_keys, &redaction_patterns))
            .map_err(invalid)?;
        let options = Options {
            durability: Durability::parse(durability).map_err(to_py_err)?,
            readonly,
            map_size,
            queue_bytes,
            limits: Limits { max_trace_bytes, max_depth, max_spans },
            redaction,
            retention: Retention { max_age, max_bytes },
        };
        let store = py.detach(|| Store::open(&path, options)).map_err(to_py_err)?;
        Ok(PyStore { handle: Mutex::new(Some(store)) })
    }

    /// Validates one msgpack-encoded trace and queues it; returns its trace id.
    fn log(&self, py: Python<'_>, payload: &[u8]) -> PyResult<String> {
        let store = self.store()?;
        let id = py.detach(|| store.log(payload)).map_err(to_py_err)?;
        Ok(ids::to_hex(&id))
    }

    /// Validates a msgpack array of traces, all or nothing; returns their trace ids.
    fn log_many(&self, py: Python<'_>, payload: &[u8]) -> PyResult<Vec<String>> {
        let store = self.store()?;
        let ids = py.detach(|| store.log_many(payload)).map_err(to_py_err)?;
        Ok(ids.iter().map(|id| ids::to_hex(id)).collect())
    }

    #[pyo3(signature = (timeout=None))]
    fn flush(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let timeout = match timeout {
            None => None,
            Some(t) if t.is_finite() && t >= 0.0 => Some(Duration::from_secs_f64(t)),
            Some(t) => {
                return Err(PyValueError::new_err(format!(
                    "timeout must be a finite number of seconds >= 0 or None, got {t}"
                )))
            }
        };
        let store = self.store()?;
        py.detach(|| store.flush(timeout)).map_err(to_py_err)
    }

    /// The canonical msgpack bytes of each fragment of a trace, oldest first.
    fn fragments<'py>(
        &self,
        py: Python<'py>,
        trace_id: &str,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let id = parse_trace_id(trace_id)?;
        let store = self.store()?;
        let fragments = py.detach(|| store.fragments(&id)).map_err(to_py_err)?;
        if fragments.is_empty() {
            return Err(to_py_err(Error::TraceNotFound(trace_id.to_owned())));
        }
        Ok(fragments.iter().map(|f| PyBytes::new(py, f)).collect())
    }

    /// One page of summaries (msgpack Page) matching msgpack-encoded filters.
    #[pyo3(signature = (filters, order_by, descending, limit, cursor))]
    fn query<'py>(
        &self,
        py: Python<'py>,
        filters: &[u8],
        order_by: &str,
        descending: bool,
        limit: i64,
        cursor: Option<String>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let page = PageRequest::new(order_by, descending, limit, cursor)
            .map_err(|errors| to_py_err(Error::Validation(errors)))?;
        let store = self.store()?;
        let bytes = py.detach(|| store.query(filters, &page)).map_err(to_py_err)?;
        Ok(PyBytes::new(py, &bytes))
    }

    fn count(&self, py: Python<'_>, filters: &[u8]) -> PyResult<u64> {
        let store = self.store()?;
        py.detach(|| store.count(filters)).map_err(to_py_err)
    }

    #[pyo3(signature = (filters, group_by=None))]
    fn stats<'py>(
        &self,
        py: Python<'py>,
        filters: &[u8],
        group_by: Option<String>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let store = self.store()?;
        let bytes = py.detach(|| store.stats(filters, group_by.as_deref())).map_err(to_py_err)?;
        Ok(PyBytes::new(py, &bytes))
    }

    fn delete_where(&self, py: Python<'_>, filters: &[u8]) -> PyResult<u64> {
        let store = self.store()?;
        py.detach(|| store.delete_where(filters)).map_err(to_py_err)
    }

    /// The check report as msgpack.
    fn check<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let store = self.store()?;
        let report = py.detach(|| store.check()).map_err(to_py_err)?;
        Ok(PyBytes::new(py, &report.to_msgpack()))
    }

    /// Removes a trace and everything indexed about it; whether it existed.
    fn delete(&self, py: Python<'_>, trace_id: &str) -> PyResult<bool> {
        let id = parse_trace_id(trace_id)?;
        let store = self.store()?;
        Ok(py.detach(|| store.delete(vec![id])).map_err(to_py_err)? > 0)
    }

    /// Writes a compacted copy of the store into `dest` (a new or empty directory).
    fn compact(&self, py: Python<'_>, dest: PathBuf) -> PyResult<()> {
        let store = self.store()?;
        py.detach(|| store.compact(&dest)).map_err(to_py_err)
    }

    /// Opens a decision; `metadata` is a msgpack map. Returns the decision id.
    #[pyo3(signature = (agent, intent, automation_mode, metadata=None, trace_id=None, run_id=None))]
    #[allow(clippy::too_many_arguments)]
    fn open_decision(
        &self,
        py: Python<'_>,
        agent: String,
        intent: String,
        automation_mode: String,
        metadata: Option<&[u8]>,
        trace_id: Option<String>,
        run_id: Option<String>,
    ) -> PyResult<String> {
        let metadata = metadata.map(<[u8]>::to_vec);
        let request =
            OpenRequest { agent, intent, mode: automation_mode, metadata, trace_id, run_id };
        let store = self.store()?;
        py.detach(|| store.open_decision(request)).map_err(to_py_err)
    }

    /// Records one decision event durably; returns it as msgpack. `mutation_summary` and
    /// `context` are msgpack values.
    #[pyo3(signature = (decision_id, agent, r#type, *, product=None, purpose=None,
                        data_ref=None, mutation_summary=None, idempotency_key=None,
                        policy_id=None, outcome=None, rationale=None, approved=None, by=None,
                        context=None, summary=None, action=None, reason=None))]
    #[allow(clippy::too_many_arguments)]
    fn decision_event<'py>(
        &self,
        py: Python<'py>,
        decision_id: &str,
        agent: &str,
        r#type: &str,
        product: Option<String>,
        purpose: Option<String>,
        data_ref: Option<String>,
        mutation_summary: Option<&[u8]>,
        idempotency_key: Option<String>,
        policy_id: Option<String>,
        outcome: Option<String>,
        rationale: Option<String>,
        approved: Option<bool>,
        by: Option<String>,
        context: Option<&[u8]>,
        summary: Option<String>,
        action: Option<String>,
        reason: Option<String>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let fields = EventFields {
            product,
            purpose,
            data_ref,
            mutation_summary: mutation_summary.map(<[u8]>::to_vec),
            idempotency_key,
            policy_id,
            outcome,
            rationale,
            approved,
            by,
            context: context.map(<[u8]>::to_vec),
            summary,
            action,
            reason,
        };
        let store = self.store()?;
        let bytes = py
            .detach(|| store.decision_event(decision_id, agent, r#type, fields))
            .map_err(to_py_err)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// A decision as msgpack (a DecisionTrace), with its events unless `events` is false.
    #[pyo3(signature = (decision_id, agent, events=true))]
    fn decision_trace<'py>(
        &self,
        py: Python<'py>,
        decision_id: &str,
        agent: &str,
        events: bool,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let store = self.store()?;
        let bytes =
            py.detach(|| store.decision_trace(decision_id, agent, events)).map_err(to_py_err)?;
        Ok(PyBytes::new(py, &bytes))
    }

    fn verify_decision(&self, py: Python<'_>, decision_id: &str, agent: &str) -> PyResult<bool> {
        let store = self.store()?;
        py.detach(|| store.verify_decision(decision_id, agent)).map_err(to_py_err)
    }

    /// One page (msgpack) of an agent's decisions, newest first. `since` / `until` are
    /// msgpack-encoded instants.
    #[pyo3(signature = (agent, status, intent, since, until, limit, cursor))]
    #[allow(clippy::too_many_arguments)]
    fn decisions<'py>(
        &self,
        py: Python<'py>,
        agent: String,
        status: Option<String>,
        intent: Option<String>,
        since: Option<&[u8]>,
        until: Option<&[u8]>,
        limit: i64,
        cursor: Option<String>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let query = DecisionQuery {
            agent,
            status,
            intent,
            since_us: since.map(|b| instant("since", b)).transpose()?,
            until_us: until.map(|b| instant("until", b)).transpose()?,
            limit,
            cursor,
        };
        let store = self.store()?;
        let bytes = py.detach(|| store.decisions(&query)).map_err(to_py_err)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Removes closed decisions closed before `before` (a msgpack-encoded instant).
    fn purge_decisions(&self, py: Python<'_>, before: &[u8]) -> PyResult<u64> {
        let before_us = instant("before", before)?;
        let store = self.store()?;
        py.detach(|| store.purge_decisions(before_us)).map_err(to_py_err)
    }

    /// Flushes what this handle logged, then releases it. Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let taken = self.handle.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(store) = taken {
            if store.is_stale() {
                return Ok(());
            }
            py.detach(move || {
                let flushed = store.flush(None);
                drop(store);
                flushed
            })
            .map_err(to_py_err)?;
        }
        Ok(())
    }

    #[getter]
    fn closed(&self) -> bool {
        self.handle.lock().unwrap_or_else(|e| e.into_inner()).is_none()
    }
}

/// The deterministic trace id for a caller key such as a run id.
#[pyfunction]
fn trace_id_for(key: &str) -> String {
    ids::to_hex(&ids::trace_id_for(key))
}

/// A new time-ordered trace id (32 lowercase hex).
#[pyfunction]
fn new_trace_id() -> String {
    ids::to_hex(&ids::new_trace_id())
}

/// A new random span id (16 lowercase hex).
#[pyfunction]
fn new_span_id() -> String {
    ids::to_hex(&ids::new_span_id())
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyStore>()?;
    m.add_function(wrap_pyfunction!(trace_id_for, m)?)?;
    m.add_function(wrap_pyfunction!(new_trace_id, m)?)?;
    m.add_function(wrap_pyfunction!(new_span_id, m)?)?;
    Ok(())
}
