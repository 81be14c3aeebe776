//! One error type for the whole core. `python.rs` maps each variant to a class of
//! `flightlog.errors`; nothing else in the core knows about Python.

use std::fmt;

/// One problem found in a record, located by its field path (e.g. `spans[2].start_time`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
    /// For a secret found in `reject` mode, its kind (`openai_api_key`, `key_name`, ...).
    pub kind: Option<String>,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { path: path.into(), message: message.into(), kind: None }
    }

    /// A secret of `kind` at `path`; the message names the kind, never the value.
    pub fn secret(path: impl Into<String>, kind: &str) -> Self {
        let message = if kind == crate::redact::KEY_NAME {
            "is under a secret-looking key name".to_owned()
        } else {
            format!("holds a secret ({kind})")
        };
        FieldError { path: path.into(), message, kind: Some(kind.to_owned()) }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

#[derive(Debug, Clone)]
pub enum Error {
    /// The caller sent something the schema refuses; nothing of it was stored.
    Validation(Vec<FieldError>),
    /// `redaction="reject"` found secrets (each error has its `kind`); nothing was stored.
    SecretDetected(Vec<FieldError>),
    /// No trace with this id is stored.
    TraceNotFound(String),
    /// The store handle was closed (or belongs to the parent of a fork and was not reopened).
    StoreClosed(String),
    /// The disk or the file system refused a write because it is full.
    StorageFull(String),
    /// Any other failure of the storage layer, with what was being done.
    Storage(String),
    /// Bytes read from disk do not decode; names the database and key.
    Corrupt(String),
    /// `flush(timeout)` gave up before everything queued was durable.
    Timeout(String),
    /// No decision with this id is stored.
    DecisionNotFound(String),
    /// The decision belongs to another agent; the message reveals nothing of it.
    AccessDenied(String),
    /// The decision is committed or aborted: nothing more can be recorded.
    DecisionClosed(String),
    /// The decision's status does not allow this event now.
    InvalidTransition(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn validation(path: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Validation(vec![FieldError::new(path, message)])
    }

    /// Why a trace was refused: `SecretDetected` when every problem is a secret.
    pub fn refused(errors: Vec<FieldError>) -> Self {
        if !errors.is_empty() && errors.iter().all(|e| e.kind.is_some()) {
            Error::SecretDetected(errors)
        } else {
            Error::Validation(errors)
        }
    }

    /// Wraps an LMDB error with what was being attempted, keeping "disk full" distinct.
    pub fn storage(context: &str, err: heed::Error) -> Self {
        use heed::{Error as H, MdbError as M};
        match err {
            H::Mdb(M::MapFull) => Error::StorageFull(format!("{context}: the LMDB map is full")),
            H::Io(io) if io.raw_os_error() == Some(libc::ENOSPC) => {
                Error::StorageFull(format!("{context}: no space left on device"))
            }
            H::Io(io) if io.raw_os_error() == Some(libc::EFBIG) => {
                Error::StorageFull(format!("{context}: file size limit exceeded"))
            }
            H::Mdb(M::Other(code)) if code == libc::ENOSPC || code == libc::EFBIG => {
                Error::StorageFull(format!("{context}: no space left on device (errno {code})"))
            }
            other => Error::Storage(format!("{context}: {other}")),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Validation(errors) | Error::SecretDetected(errors) => {
                let first = errors.first().map(ToString::to_string).unwrap_or_default();
                match errors.len() {
                    0 | 1 => write!(f, "{first}"),
                    n => write!(f, "{first} (and {} more problems)", n - 1),
                }
            }
            Error::TraceNotFound(id) => write!(f, "no trace with id {id} in this store"),
            Error::StoreClosed(m)
            | Error::StorageFull(m)
            | Error::Storage(m)
            | Error::Corrupt(m)
            | Error::Timeout(m)
            | Error::DecisionNotFound(m)
            | Error::AccessDenied(m)
            | Error::DecisionClosed(m)
            | Error::InvalidTransition(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}
