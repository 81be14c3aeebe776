//! flightlog's core: validation, ids, redaction and LMDB storage behind a thin PyO3 binding.
//! Module wiring only; `python.rs` is the only file that speaks pyo3.

pub mod check;
pub mod codec;
pub mod decision;
pub mod error;
pub mod fork;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod ids;
pub mod killpoint;
pub mod merge;
pub mod msgpack;
pub mod query;
pub mod redact;
pub mod schema;
pub mod store;
pub mod summary;
pub mod time;
pub mod writer;

#[cfg(feature = "python")]
mod python;
