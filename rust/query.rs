//! The read side: index scans, filters, cursors, stats.
//!
//! Every query picks one *driver*: the most selective equality filter, whose values' ranges
//! in `index` are walked in time order (merged by time key when there are several), or
//! `by_time` when no equality filter is given. `since` / `until` and a cursor bound the time
//! keys of each range, so they cost a seek, not a scan. Each candidate's summary is then
//! checked against the remaining filters, reading fixed-offset numbers first and strings
//! only when a string filter remains. Records are never decoded.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::hash::Hash;
use std::ops::{Bound, ControlFlow};

use heed::types::Bytes;
use heed::{Database, RoTxn, WithoutTls};

use crate::error::{Error, FieldError, Result};
use crate::ids::{to_hex, TraceId};
use crate::msgpack::{
    begin_map, finish_map, write_array_header, write_bool, write_f64, write_nil,
    write_optional_f64, write_str, write_uint, DecodeError, Reader, Token, TIMESTAMP_EXT,
};
use crate::store::Databases;
use crate::summary::{
    index_prefix, is_hashed, parse_time_key, time_key, Field, Numbers, Status, Summary, Texts,
};
use crate::time::{hour_label, Timestamp};

/// A `by_time` key, also the tail of every `index` key: flipped timestamp, then trace id.
type TimeKey = [u8; 24];

/// The most items one page may hold.
const MAX_LIMIT: i64 = 1000;
const MICROS_PER_HOUR: i64 = 3_600_000_000;
const TOP_AGENTS: usize = 10;

/// The string fields a filter can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextField {
    AgentName,
    Framework,
    RunId,
    RequestId,
    SessionId,
    Tag,
}

impl TextField {
    fn field(self) -> Field {
        match self {
            TextField::AgentName => Field::AgentName,
            TextField::Framework => Field::Framework,
            TextField::RunId => Field::RunId,
            TextField::RequestId => Field::RequestId,
            TextField::SessionId => Field::SessionId,
            TextField::Tag => Field::Tag,
        }
    }
}

/// Inclusive bounds on a number a trace may not have reported.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Bounds {
    min: Option<f64>,
    max: Option<f64>,
}

impl Bounds {
    fn is_empty(&self) -> bool {
        self.min.is_none() && self.max.is_none()
    }

    /// An unreported value never satisfies a bound.
    fn accepts(&self, value: Option<f64>) -> bool {
        match value {
            None => self.is_empty(),
            Some(v) => {
                self.min.map_or(true, |min| v >= min) && self.max.map_or(true, |max| v <= max)
            }
        }
    }
}

/// The caller's filters, parsed and validated; all of them must hold (AND), and a filter
/// with several values accepts any of them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filters {
    agent_name: Vec<String>,
    framework: Vec<String>,
    run_id: Vec<String>,
    request_id: Vec<String>,
    session_id: Vec<String>,
    tag: Vec<String>,
    status: Vec<Status>,
    has_errors: Option<bool>,
    /// Inclusive, in whole microseconds (rounded up: stored timestamps are microseconds).
    since_us: Option<i64>,
    /// Exclusive, rounded up like `since_us`.
    until_us: Option<i64>,
    cost_usd: Bounds,
    latency_ms: Bounds,
}

const FILTER_NAMES: [&str; 14] = [
    "agent_name",
    "framework",
    "run_id",
    "request_id",
    "session_id",
    "tag",
    "status",
    "has_errors",
    "since",
    "until",
    "min_cost_usd",
    "max_cost_usd",
    "min_latency_ms",
    "max_latency_ms",
];

impl Filters {
    /// Parses a msgpack map (msgspec's encoding of the caller's keyword filters). A nil
    /// value means the filter is absent. Reports every problem, each at its filter's name.
    pub fn parse(msgpack: &[u8]) -> std::result::Result<Filters, Vec<FieldError>> {
        let malformed = |e: DecodeError| vec![FieldError::new("", e.to_string())];
        let mut reader = Reader::new(msgpack);
        let entries = match reader.read_token().map_err(malformed)? {
            Token::Map(entries) => entries,
            other => {
                let message = format!("expected a map of filters, got {}", other.kind());
                return Err(vec![FieldError::new("", message)]);
            }
        };
        let mut filters = Filters::default();
        let mut errors = Vec::new();
        let mut seen = [false; FILTER_NAMES.len()];
        for _ in 0..entries {
            let key = reader.read_token().map_err(malformed)?;
            reader.skip_contents(&key).map_err(malformed)?;
            let value = reader.read_token().map_err(malformed)?;
            let name = match key {
                Token::Str(name) => String::from_utf8_lossy(name).into_owned(),
                other => {
                    reader.skip_contents(&value).map_err(malformed)?;
                    let message = format!("filter names are strings, got {}", other.kind());
                    errors.push(FieldError::new("", message));
                    continue;
                }
            };
            match FILTER_NAMES.iter().position(|known| *known == name) {
                None => {
                    reader.skip_contents(&value).map_err(malformed)?;
                    let allowed = FILTER_NAMES.join(", ");
                    errors.push(FieldError::new(name, format!("unknown filter; use {allowed}")));
                }
                Some(at) if seen[at] => {
                    reader.skip_contents(&value).map_err(malformed)?;
                    errors.push(FieldError::new(name, "given more than once"));
                }
                Some(at) => {
                    seen[at] = true;
                    filters.set(&name, value, &mut reader, &mut errors).map_err(malformed)?;
                }
            }
        }
        reader.expect_end().map_err(malformed)?;
        if errors.is_empty() {
            Ok(filters)
        } else {
            Err(errors)
        }
    }

    /// True when every trace matches.
    pub fn is_empty(&self) -> bool {
        *self == Filters::default()
    }

    /// Reads one known filter's value (consuming all of it), recording problems in `errors`.
    fn set(
        &mut self,
        name: &str,
        value: Token<'_>,
        reader: &mut Reader<'_>,
        errors: &mut Vec<FieldError>,
    ) -> std::result::Result<(), DecodeError> {
        if value == Token::Nil {
            return Ok(());
        }
        let text = |reader: &mut Reader<'_>, errors: &mut Vec<FieldError>| {
            any_of(name, value, reader, errors, parse_string)
        };
        match name {
            "agent_name" => self.agent_name = text(reader, errors)?,
            "framework" => self.framework = text(reader, errors)?,
            "run_id" => self.run_id = text(reader, errors)?,
            "request_id" => self.request_id = text(reader, errors)?,
            "session_id" => self.session_id = text(reader, errors)?,
            "tag" => self.tag = text(reader, errors)?,
            "status" => self.status = any_of(name, value, reader, errors, parse_status)?,
            _ => {
                reader.skip_contents(&value)?;
                if let Err(message) = self.set_scalar(name, value) {
                    errors.push(FieldError::new(name, message));
                }
            }
        }
        Ok(())
    }

    fn set_scalar(&mut self, name: &str, value: Token<'_>) -> std::result::Result<(), String> {
        match name {
            "has_errors" => match value {
                Token::Bool(wanted) => self.has_errors = Some(wanted),
                other => return Err(format!("expected a bool, got {}", other.kind())),
            },
            "since" => self.since_us = Some(parse_instant(value)?),
            "until" => self.until_us = Some(parse_instant(value)?),
            "min_cost_usd" => self.cost_usd.min = Some(parse_number(value)?),
            "max_cost_usd" => self.cost_usd.max = Some(parse_number(value)?),
            "min_latency_ms" => self.latency_ms.min = Some(parse_number(value)?),
            // The last of FILTER_NAMES; the others are handled by `set`.
            _ => self.latency_ms.max = Some(parse_number(value)?),
        }
        Ok(())
    }

    fn text(&self, field: TextField) -> &[String] {
        match field {
            TextField::AgentName => &self.agent_name,
            TextField::Framework => &self.framework,
            TextField::RunId => &self.run_id,
            TextField::RequestId => &self.request_id,
            TextField::SessionId => &self.session_id,
            TextField::Tag => &self.tag,
        }
    }

    /// Whether a filter other than `settled` needs the summary's fixed-offset numbers.
    fn needs_numbers(&self, settled: Option<Driver>) -> bool {
        (!self.status.is_empty() && settled != Some(Driver::Status))
            || (self.has_errors.is_some() && settled != Some(Driver::HasErrors))
            || !self.cost_usd.is_empty()
            || !self.latency_ms.is_empty()
    }

    /// The string filters other than `settled`.
    fn text_checks(&self, settled: Option<Driver>) -> impl Iterator<Item = TextField> + '_ {
        DRIVERS.into_iter().filter_map(move |driver| match driver {
            Driver::Text(field) if !self.text(field).is_empty() && settled != Some(driver) => {
                Some(field)
            }
            _ => None,
        })
    }

    fn numbers_match(&self, numbers: &Numbers, settled: Option<Driver>) -> bool {
        let status_ok = settled == Some(Driver::Status)
            || self.status.is_empty()
            || numbers.status.is_some_and(|s| self.status.contains(&s));
        let errors_ok = settled == Some(Driver::HasErrors)
            || self.has_errors.map_or(true, |wanted| numbers.has_errors() == wanted);
        status_ok
            && errors_ok
            && self.cost_usd.accepts(numbers.cost_usd)
            && self.latency_ms.accepts(numbers.latency_ms)
    }
}

/// The values each string filter not settled by the index accepts, hashed: a filter may
/// list 100,000 values and a trace hold 65,534 tags, too many to compare pairwise.
type Wanted<'f> = Vec<(TextField, HashSet<&'f [u8]>)>;

fn texts_match(texts: &Texts<'_>, wanted: &Wanted<'_>) -> std::result::Result<bool, String> {
    for (field, values) in wanted {
        let found = match field {
            TextField::Tag => {
                let mut found = false;
                for tag in texts.tags()? {
                    if values.contains(tag?) {
                        found = true;
                        break;
                    }
                }
                found
            }
            &other => text_of(texts, other).is_some_and(|value| values.contains(value)),
        };
        if !found {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A filter's value: one item or a non-empty array of them. Duplicates are dropped, found
/// by hashing: a caller may list 100,000 values, and comparing each with every earlier one
/// took seconds.
fn any_of<T: Eq + Hash + Clone>(
    name: &str,
    first: Token<'_>,
    reader: &mut Reader<'_>,
    errors: &mut Vec<FieldError>,
    parse: impl Fn(Token<'_>) -> std::result::Result<T, String>,
) -> std::result::Result<Vec<T>, DecodeError> {
    let mut values = Vec::new();
    let mut seen = HashSet::new();
    let mut keep = |value: T| {
        if seen.insert(value.clone()) {
            values.push(value);
        }
    };
    match first {
        Token::Array(0) => errors.push(FieldError::new(name, "expected a non-empty array")),
        Token::Array(items) => {
            for i in 0..items {
                let item = reader.read_token()?;
                reader.skip_contents(&item)?;
                match parse(item) {
                    Ok(value) => keep(value),
                    Err(message) => errors.push(FieldError::new(format!("{name}[{i}]"), message)),
                }
            }
        }
        single => {
            reader.skip_contents(&single)?;
            match parse(single) {
                Ok(value) => keep(value),
                Err(message) => errors.push(FieldError::new(name, message)),
            }
        }
    }
    Ok(values)
}

fn parse_string(token: Token<'_>) -> std::result::Result<String, String> {
    match token {
        Token::Str(bytes) => {
            String::from_utf8(bytes.to_vec()).map_err(|_| "the string is not valid UTF-8".into())
        }
        other => Err(format!("expected a string, got {}", other.kind())),
    }
}

fn parse_status(token: Token<'_>) -> std::result::Result<Status, String> {
    let text = parse_string(token)?;
    Status::parse(&text)
        .ok_or_else(|| format!("expected one of 'running', 'succeeded', 'failed', got {text:?}"))
}

/// A finite number (int or float).
fn parse_number(token: Token<'_>) -> std::result::Result<f64, String> {
    match token {
        Token::UInt(n) => Ok(n as f64),
        Token::NegInt(n) => Ok(n as f64),
        Token::Float(f) if f.is_finite() => Ok(f),
        Token::Float(f) => Err(format!("expected a finite number, got {f}")),
        other => Err(format!("expected a number, got {}", other.kind())),
    }
}

/// [`parse_instant`] of one msgpack-encoded value.
pub fn parse_instant_bytes(bytes: &[u8]) -> std::result::Result<i64, String> {
    let mut reader = Reader::new(bytes);
    let token = reader.read_token().map_err(|e| e.to_string())?;
    reader.expect_end().map_err(|e| e.to_string())?;
    parse_instant(token)
}

/// A datetime, an ISO-8601 string (naive means UTC) or Unix epoch seconds, as microseconds
/// rounded up: a stored microsecond `t` is at or after an instant `x` exactly when
/// `t >= ceil(x)`, which makes both the inclusive and the exclusive bound exact.
fn parse_instant(token: Token<'_>) -> std::result::Result<i64, String> {
    let parsed = match token {
        Token::Ext(TIMESTAMP_EXT, payload) => Timestamp::decode_ext(payload),
        Token::Str(text) => std::str::from_utf8(text).ok().and_then(Timestamp::parse_iso8601),
        Token::UInt(n) => Timestamp::from_epoch_seconds(n as f64),
        Token::NegInt(n) => Timestamp::from_epoch_seconds(n as f64),
        Token::Float(f) => Timestamp::from_epoch_seconds(f),
        _ => None,
    };
    match parsed {
        Some(at) if at.in_range() => Ok(at.as_micros() + i64::from(at.nanos % 1_000 != 0)),
        Some(_) => Err("the instant is outside years 1 to 9999".into()),
        None => {
            let got = match token {
                Token::Str(text) => format!("{:?}", String::from_utf8_lossy(text)),
                other => other.kind().to_string(),
            };
            Err(format!("expected a datetime, an ISO-8601 string or Unix epoch seconds, got {got}"))
        }
    }
}

/// An equality filter whose index ranges can produce the candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driver {
    Text(TextField),
    Status,
    HasErrors,
}

/// Drivers by preference: ids name few traces, then tags and names, then the coarse fields.
const DRIVERS: [Driver; 8] = [
    Driver::Text(TextField::RunId),
    Driver::Text(TextField::RequestId),
    Driver::Text(TextField::SessionId),
    Driver::Text(TextField::Tag),
    Driver::Text(TextField::AgentName),
    Driver::Text(TextField::Framework),
    Driver::Status,
    Driver::HasErrors,
];

/// Bounds on time keys.
#[derive(Debug, Clone, Copy)]
struct Window {
    lo: Bound<TimeKey>,
    hi: Bound<TimeKey>,
}

impl Window {
    fn of(filters: &Filters) -> Window {
        // Sorts before every trace at `us`: no trace has the all-zero id.
        let first_at = |us: i64| time_key(us, &[0; 16]);
        Window {
            lo: filters.since_us.map_or(Bound::Unbounded, |us| Bound::Included(first_at(us))),
            hi: filters.until_us.map_or(Bound::Unbounded, |us| Bound::Excluded(first_at(us))),
        }
    }

    /// Narrows the window to the keys strictly after `key` in walking order (a cursor).
    fn resume_after(&mut self, key: TimeKey, descending: bool) {
        let bound = if descending { &mut self.hi } else { &mut self.lo };
        let tighter = match *bound {
            Bound::Unbounded => true,
            Bound::Included(old) | Bound::Excluded(old) => {
                if descending {
                    key <= old
                } else {
                    key >= old
                }
            }
        };
        if tighter {
            *bound = Bound::Excluded(key);
        }
    }
}

/// How candidates are found and which filters they still have to pass.
struct Plan<'f> {
    filters: &'f Filters,
    /// Index prefixes of the driver's values; empty means walk `by_time`.
    prefixes: Vec<Vec<u8>>,
    /// The driver, when its index ranges alone prove its filter (no hashed value).
    settled: Option<Driver>,
    wanted: Wanted<'f>,
    window: Window,
}

impl<'f> Plan<'f> {
    fn new(filters: &'f Filters) -> Plan<'f> {
        let driver = DRIVERS.into_iter().find(|&driver| match driver {
            Driver::Text(field) => !filters.text(field).is_empty(),
            Driver::Status => !filters.status.is_empty(),
            // Only traces with errors are listed under has_errors (docs/format.md).
            Driver::HasErrors => filters.has_errors == Some(true),
        });
        let prefixes: Vec<Vec<u8>> = match driver {
            None => Vec::new(),
            Some(Driver::Text(field)) => filters
                .text(field)
                .iter()
                .map(|value| index_prefix(field.field(), value.as_bytes()))
                .collect(),
            Some(Driver::Status) => filters
                .status
                .iter()
                .map(|status| index_prefix(Field::Status, status.name().as_bytes()))
                .collect(),
            Some(Driver::HasErrors) => vec![index_prefix(Field::HasErrors, &[1])],
        };
        // A hashed prefix may collide with another value's: such a driver is checked again.
        let hashed = prefixes.iter().any(|prefix| is_hashed(prefix));
        let settled = driver.filter(|_| !hashed);
        let wanted = filters
            .text_checks(settled)
            .map(|field| (field, filters.text(field).iter().map(|v| v.as_bytes()).collect()))
            .collect();
        Plan { filters, prefixes, settled, wanted, window: Window::of(filters) }
    }

    /// Whether candidates pass without reading their summaries.
    fn settled_by_keys(&self) -> bool {
        !self.filters.needs_numbers(self.settled) && self.wanted.is_empty()
    }

    /// The candidates' time keys in walking order, each once.
    fn keys<'t>(
        &self,
        txn: &'t RoTxn<WithoutTls>,
        dbs: &Databases,
        window: &Window,
        descending: bool,
    ) -> Result<Merged<'t>> {
        let sources = if self.prefixes.is_empty() {
            vec![Source::open(dbs.by_time, "by_time", txn, &[], window, descending)?]
        } else {
            self.prefixes
                .iter()
                .map(|prefix| Source::open(dbs.index, "index", txn, prefix, window, descending))
                .collect::<Result<_>>()?
        };
        Ok(Merged::new(sources, descending))
    }

    /// Whether a candidate's summary passes the filters the index did not settle.
    fn accepts(&self, id: &TraceId, summary: &[u8]) -> Result<bool> {
        let numbers = Numbers::read(summary).map_err(|why| corrupt(id, &why))?;
        if !self.filters.numbers_match(&numbers, self.settled) {
            return Ok(false);
        }
        if self.wanted.is_empty() {
            return Ok(true);
        }
        let texts = Texts::read(summary).map_err(|why| corrupt(id, &why))?;
        texts_match(&texts, &self.wanted).map_err(|why| corrupt(id, &why))
    }

    /// Visits every match in time order with its summary, until `visit` breaks.
    fn walk<'t>(
        &self,
        txn: &'t RoTxn<WithoutTls>,
        dbs: &Databases,
        window: &Window,
        descending: bool,
        mut visit: impl FnMut(TimeKey, &'t [u8]) -> Result<ControlFlow<()>>,
    ) -> Result<()> {
        let mut keys = self.keys(txn, dbs, window, descending)?;
        while let Some(key) = keys.next()? {
            let id = trace_id_of(&key);
            let summary = dbs
                .summaries
                .get(txn, &id)
                .map_err(|e| Error::storage("reading a summary", e))?
                .ok_or_else(|| {
                    Error::Corrupt(format!(
                        "summaries[{}] is missing but the indexes list the trace",
                        to_hex(&id)
                    ))
                })?;
            if self.accepts(&id, summary)? && visit(key, summary)?.is_break() {
                break;
            }
        }
        Ok(())
    }
}

/// Below this share of the store's time span, walking `by_time` and looking up each summary
/// beats reading every summary in key order (sequential pages, no lookups).
const SCAN_SHARE: i128 = 4; // 1/4

impl Plan<'_> {
    /// Visits every match in no particular order (stats, counts, value orders, deletes).
    fn visit_all<'t>(
        &self,
        txn: &'t RoTxn<WithoutTls>,
        dbs: &Databases,
        mut visit: impl FnMut(TimeKey, &'t [u8]) -> Result<()>,
    ) -> Result<()> {
        if !self.scans(txn, dbs)? {
            return self.walk(txn, dbs, &self.window, false, |key, summary| {
                visit(key, summary).map(|()| ControlFlow::Continue(()))
            });
        }
        let fail = |e| Error::storage("walking summaries", e);
        let (since, until) = (self.filters.since_us, self.filters.until_us);
        for entry in dbs.summaries.iter(txn).map_err(fail)? {
            let (key, summary) = entry.map_err(fail)?;
            let id = TraceId::try_from(key).map_err(|_| {
                Error::Corrupt(format!("summaries[{}] is not a 16-byte trace id", to_hex(key)))
            })?;
            let at = Numbers::read(summary).map_err(|why| corrupt(&id, &why))?.timestamp_us;
            let inside = since.map_or(true, |since| at >= since) && until.map_or(true, |t| at < t);
            if inside && self.accepts(&id, summary)? {
                visit(time_key(at, &id), summary)?;
            }
        }
        Ok(())
    }

    /// Whether reading every summary is cheaper than walking: no index drives the plan, and
    /// the time window spans at least a quarter of the stored traces' time span.
    fn scans(&self, txn: &RoTxn<WithoutTls>, dbs: &Databases) -> Result<bool> {
        if !self.prefixes.is_empty() {
            return Ok(false);
        }
        if self.filters.since_us.is_none() && self.filters.until_us.is_none() {
            return Ok(true);
        }
        let fail = |e| Error::storage("reading by_time", e);
        let stamp = |entry: Option<(&[u8], &[u8])>| entry.and_then(|(key, _)| parse_time_key(key));
        let first = stamp(dbs.by_time.first(txn).map_err(fail)?);
        let last = stamp(dbs.by_time.last(txn).map_err(fail)?);
        let (Some((first, _)), Some((last, _))) = (first, last) else { return Ok(false) };
        let lo = self.filters.since_us.map_or(first, |since| since.max(first));
        let hi = self.filters.until_us.map_or(last.saturating_add(1), |until| until.min(last + 1));
        let (window, span) =
            (i128::from(hi) - i128::from(lo), i128::from(last) - i128::from(first) + 1);
        Ok(window * SCAN_SHARE >= span)
    }
}

fn corrupt(id: &TraceId, why: &str) -> Error {
    Error::Corrupt(format!("summaries[{}] does not decode: {why}", to_hex(id)))
}

fn trace_id_of(key: &TimeKey) -> TraceId {
    let mut id = [0; 16];
    id.copy_from_slice(&key[8..]);
    id
}

type KeyIter<'t> = Box<dyn Iterator<Item = heed::Result<(&'t [u8], &'t [u8])>> + 't>;

/// One key range (one field value, or all of `by_time`) with its next time key.
struct Source<'t> {
    keys: KeyIter<'t>,
    db: &'static str,
    prefix_len: usize,
    head: Option<TimeKey>,
}

impl<'t> Source<'t> {
    fn open(
        db: Database<Bytes, Bytes>,
        name: &'static str,
        txn: &'t RoTxn<WithoutTls>,
        prefix: &[u8],
        window: &Window,
        descending: bool,
    ) -> Result<Source<'t>> {
        let fail = |e| Error::storage(&format!("walking {name}"), e);
        // Within a prefix, "unbounded" ends at the smallest or largest possible time key.
        let extend = |bound: Bound<TimeKey>, end: TimeKey| match bound {
            Bound::Unbounded => Bound::Included([prefix, &end].concat()),
            bound => bound.map(|key| [prefix, &key].concat()),
        };
        let (lo, hi) = (extend(window.lo, [0; 24]), extend(window.hi, [0xff; 24]));
        let range = (lo.as_ref().map(Vec::as_slice), hi.as_ref().map(Vec::as_slice));
        let keys: KeyIter<'t> = if descending {
            Box::new(db.rev_range(txn, &range).map_err(fail)?)
        } else {
            Box::new(db.range(txn, &range).map_err(fail)?)
        };
        let mut source = Source { keys, db: name, prefix_len: prefix.len(), head: None };
        source.advance()?;
        Ok(source)
    }

    fn advance(&mut self) -> Result<()> {
        let next = self
            .keys
            .next()
            .transpose()
            .map_err(|e| Error::storage(&format!("walking {}", self.db), e))?;
        self.head = match next {
            None => None,
            Some((key, _)) => Some(
                key.get(self.prefix_len..)
                    .and_then(|tail| TimeKey::try_from(tail).ok())
                    .ok_or_else(|| {
                        Error::Corrupt(format!("{}[{}] has no time key", self.db, to_hex(key)))
                    })?,
            ),
        };
        Ok(())
    }
}

/// Several sources merged by time key; a trace listed under several values (tags) is
/// yielded once, since its copies are adjacent in the merged order. The sources' heads are
/// kept in a heap: a filter may list 100,000 values, one source each.
struct Merged<'t> {
    sources: Vec<Source<'t>>,
    descending: bool,
    /// Each source's head as [`Merged::order`] ranks it, with the source's index; the
    /// greatest is next.
    heads: BinaryHeap<(TimeKey, usize)>,
    last: Option<TimeKey>,
}

impl<'t> Merged<'t> {
    fn new(sources: Vec<Source<'t>>, descending: bool) -> Merged<'t> {
        let heads = sources
            .iter()
            .enumerate()
            .filter_map(|(at, source)| Some((Merged::order(source.head?, descending), at)))
            .collect();
        Merged { sources, descending, heads, last: None }
    }

    /// A time key as the heap ranks it: itself when walking down, its bitwise complement
    /// (which sorts in reverse) when walking up. Its own inverse.
    fn order(key: TimeKey, descending: bool) -> TimeKey {
        if descending {
            key
        } else {
            key.map(|byte| !byte)
        }
    }

    fn next(&mut self) -> Result<Option<TimeKey>> {
        while let Some((ranked, at)) = self.heads.pop() {
            let key = Merged::order(ranked, self.descending);
            let source = &mut self.sources[at];
            source.advance()?;
            if let Some(head) = source.head {
                self.heads.push((Merged::order(head, self.descending), at));
            }
            if self.last != Some(key) {
                self.last = Some(key);
                return Ok(Some(key));
            }
        }
        Ok(None)
    }

    fn count(&mut self) -> Result<u64> {
        let mut count = 0;
        while self.next()?.is_some() {
            count += 1;
        }
        Ok(count)
    }
}

/// A single-valued field's bytes in a summary's texts.
fn text_of<'t>(texts: &Texts<'t>, field: TextField) -> Option<&'t [u8]> {
    match field {
        TextField::AgentName => Some(texts.agent_name),
        TextField::Framework => texts.optional[0],
        TextField::RunId => texts.optional[1],
        TextField::RequestId => texts.optional[2],
        TextField::SessionId => texts.optional[3],
        TextField::Tag => None,
    }
}

/// What a page is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderBy {
    Timestamp,
    LatencyMs,
    CostUsd,
}

impl OrderBy {
    /// `"timestamp"`, `"latency_ms"` or `"cost_usd"`.
    pub fn parse(text: &str) -> std::result::Result<OrderBy, FieldError> {
        match text {
            "timestamp" => Ok(OrderBy::Timestamp),
            "latency_ms" => Ok(OrderBy::LatencyMs),
            "cost_usd" => Ok(OrderBy::CostUsd),
            other => Err(FieldError::new(
                "order_by",
                format!("expected one of 'timestamp', 'latency_ms', 'cost_usd', got {other:?}"),
            )),
        }
    }

    fn code(self) -> u8 {
        self as u8
    }
}

/// One page of a query: its order, size and where the previous page ended.
#[derive(Debug, Clone, PartialEq)]
pub struct PageRequest {
    pub order_by: OrderBy,
    pub descending: bool,
    pub limit: usize,
    /// The `next_cursor` of the previous page, made with the same order and direction.
    pub cursor: Option<String>,
}

impl PageRequest {
    /// Validates the caller's paging arguments, reporting each problem at its name.
    pub fn new(
        order_by: &str,
        descending: bool,
        limit: i64,
        cursor: Option<String>,
    ) -> std::result::Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let order_by = match OrderBy::parse(order_by) {
            Ok(order_by) => Some(order_by),
            Err(e) => {
                errors.push(e);
                None
            }
        };
        if !(1..=MAX_LIMIT).contains(&limit) {
            let message = format!("must be between 1 and {MAX_LIMIT}, got {limit}");
            errors.push(FieldError::new("limit", message));
        }
        if let (Some(order_by), Some(text)) = (order_by, &cursor) {
            if let Err(e) = Position::decode(text, order_by, descending) {
                errors.push(e);
            }
        }
        match order_by {
            Some(order_by) if errors.is_empty() => {
                Ok(PageRequest { order_by, descending, limit: limit as usize, cursor })
            }
            _ => Err(errors),
        }
    }
}

/// Where a page ended: the last item's sort value (value orders only) and time key.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Position {
    value: Option<f64>,
    key: TimeKey,
}

const CURSOR_VERSION: u8 = 1;

impl Position {
    /// Lowercase hex of: version, order, direction, then the time key (timestamp order) or
    /// a reported flag, the value's f64 bits and the time key (value orders).
    fn encode(&self, order_by: OrderBy, descending: bool) -> String {
        let mut raw = vec![CURSOR_VERSION, order_by.code(), u8::from(descending)];
        if order_by != OrderBy::Timestamp {
            raw.push(u8::from(self.value.is_some()));
            raw.extend_from_slice(&self.value.unwrap_or(0.0).to_bits().to_be_bytes());
        }
        raw.extend_from_slice(&self.key);
        to_hex(&raw)
    }

    fn decode(
        text: &str,
        order_by: OrderBy,
        descending: bool,
    ) -> std::result::Result<Position, FieldError> {
        let invalid = |why: &str| FieldError::new("cursor", why.to_string());
        let unknown = || invalid("not a cursor returned by query()");
        let raw = from_hex(text).ok_or_else(unknown)?;
        let [version, order, direction, rest @ ..] = raw.as_slice() else {
            return Err(unknown());
        };
        if *version != CURSOR_VERSION {
            return Err(invalid("made by another version of flightlog"));
        }
        if *order != order_by.code() || *direction != u8::from(descending) {
            return Err(invalid("made for another order_by or direction"));
        }
        let (value, key) = match order_by {
            OrderBy::Timestamp => (None, rest),
            OrderBy::LatencyMs | OrderBy::CostUsd => {
                let [reported, rest @ ..] = rest else { return Err(unknown()) };
                let (bits, key) = rest.split_first_chunk::<8>().ok_or_else(unknown)?;
                let value = f64::from_bits(u64::from_be_bytes(*bits));
                match reported {
                    0 => (None, key),
                    1 => (Some(value), key),
                    _ => return Err(unknown()),
                }
            }
        };
        let key = TimeKey::try_from(key).map_err(|_| unknown())?;
        Ok(Position { value, key })
    }
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let bytes = text.as_bytes();
    if bytes.len() % 2 != 0 {
        return None;
    }
    bytes.chunks_exact(2).map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?)).collect()
}

/// A match on a page, with what it is sorted by.
struct Ranked<'t> {
    at: Position,
    summary: &'t [u8],
}

/// Value order: reported values first (ascending or descending), ties and unreported
/// values by time key in the same direction.
fn rank(a: &Position, b: &Position, descending: bool) -> Ordering {
    let directed = |order: Ordering| if descending { order.reverse() } else { order };
    match (a.value, b.value) {
        (Some(x), Some(y)) => directed(x.total_cmp(&y).then(a.key.cmp(&b.key))),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => directed(a.key.cmp(&b.key)),
    }
}

/// One page of matches as msgpack `{"items": [TraceSummary...], "next_cursor": str | nil}`.
pub fn query(
    txn: &RoTxn<WithoutTls>,
    dbs: &Databases,
    filters: &Filters,
    page: &PageRequest,
) -> Result<Vec<u8>> {
    let after = page
        .cursor
        .as_deref()
        .map(|text| Position::decode(text, page.order_by, page.descending))
        .transpose()
        .map_err(|e| Error::Validation(vec![e]))?;
    let plan = Plan::new(filters);
    let value: fn(&Numbers) -> Option<f64> = match page.order_by {
        OrderBy::Timestamp => return page_by_time(txn, dbs, &plan, page, after),
        OrderBy::LatencyMs => |numbers| numbers.latency_ms,
        OrderBy::CostUsd => |numbers| numbers.cost_usd,
    };
    page_by_value(txn, dbs, &plan, page, after, value)
}

/// Walks in time order from the cursor and stops one match past the page.
fn page_by_time(
    txn: &RoTxn<WithoutTls>,
    dbs: &Databases,
    plan: &Plan<'_>,
    page: &PageRequest,
    after: Option<Position>,
) -> Result<Vec<u8>> {
    let mut window = plan.window;
    if let Some(after) = after {
        window.resume_after(after.key, page.descending);
    }
    let mut found = Vec::new();
    plan.walk(txn, dbs, &window, page.descending, |key, summary| {
        found.push(Ranked { at: Position { value: None, key }, summary });
        Ok(if found.len() > page.limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    })?;
    write_page(found, page)
}

/// Gathers every match after the cursor and keeps the page's share, partially sorted.
fn page_by_value(
    txn: &RoTxn<WithoutTls>,
    dbs: &Databases,
    plan: &Plan<'_>,
    page: &PageRequest,
    after: Option<Position>,
    value: fn(&Numbers) -> Option<f64>,
) -> Result<Vec<u8>> {
    let mut found = Vec::new();
    plan.visit_all(txn, dbs, |key, summary| {
        let numbers = Numbers::read(summary).map_err(|why| corrupt(&trace_id_of(&key), &why))?;
        let at = Position { value: value(&numbers), key };
        if after.map_or(true, |after| rank(&at, &after, page.descending) == Ordering::Greater) {
            found.push(Ranked { at, summary });
        }
        Ok(())
    })?;
    let order = |a: &Ranked<'_>, b: &Ranked<'_>| rank(&a.at, &b.at, page.descending);
    // The page and one more, to know whether another page follows.
    let wanted = page.limit.saturating_add(1);
    if found.len() > wanted {
        found.select_nth_unstable_by(wanted - 1, order);
        found.truncate(wanted);
    }
    found.sort_unstable_by(order);
    write_page(found, page)
}

/// Writes the first `limit` of `found`; one more means another page follows.
fn write_page(mut found: Vec<Ranked<'_>>, page: &PageRequest) -> Result<Vec<u8>> {
    let more = found.len() > page.limit;
    found.truncate(page.limit);
    let mut out = Vec::with_capacity(64 + found.len() * 256);
    let map = begin_map(&mut out, 2);
    write_str(&mut out, "items");
    write_array_header(&mut out, found.len() as u32);
    for item in &found {
        let id = trace_id_of(&item.at.key);
        let summary = Summary::decode(item.summary).map_err(|why| corrupt(&id, &why))?;
        write_trace_summary(&mut out, &id, &summary);
    }
    write_str(&mut out, "next_cursor");
    match found.last().filter(|_| more) {
        Some(last) => write_str(&mut out, &last.at.encode(page.order_by, page.descending)),
        None => write_nil(&mut out),
    }
    finish_map(&mut out, map, 2);
    Ok(out)
}

/// How many traces match. Counts index keys alone when the index settles every filter.
pub fn count(txn: &RoTxn<WithoutTls>, dbs: &Databases, filters: &Filters) -> Result<u64> {
    if filters.is_empty() {
        return dbs.summaries.len(txn).map_err(|e| Error::storage("counting summaries", e));
    }
    let plan = Plan::new(filters);
    if plan.settled_by_keys() {
        return plan.keys(txn, dbs, &plan.window, false)?.count();
    }
    let mut count = 0;
    plan.visit_all(txn, dbs, |_, _| {
        count += 1;
        Ok(())
    })?;
    Ok(count)
}

/// The id of every match, for `delete_where`.
pub fn matching(
    txn: &RoTxn<WithoutTls>,
    dbs: &Databases,
    filters: &Filters,
) -> Result<Vec<TraceId>> {
    let mut ids = Vec::new();
    for_each_match(txn, dbs, filters, |id, _| {
        ids.push(*id);
        Ok(())
    })?;
    Ok(ids)
}

/// Visits every match in any order (see [`Plan::visit_all`]).
fn for_each_match<'t>(
    txn: &'t RoTxn<WithoutTls>,
    dbs: &Databases,
    filters: &Filters,
    mut visit: impl FnMut(&TraceId, &'t [u8]) -> Result<()>,
) -> Result<()> {
    Plan::new(filters).visit_all(txn, dbs, |key, summary| visit(&trace_id_of(&key), summary))
}

/// A field stats can group by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GroupBy {
    Text(TextField),
    Status,
}

impl GroupBy {
    fn parse(text: &str) -> Result<GroupBy> {
        Ok(match text {
            "agent_name" => GroupBy::Text(TextField::AgentName),
            "framework" => GroupBy::Text(TextField::Framework),
            "run_id" => GroupBy::Text(TextField::RunId),
            "request_id" => GroupBy::Text(TextField::RequestId),
            "session_id" => GroupBy::Text(TextField::SessionId),
            "status" => GroupBy::Status,
            other => {
                return Err(Error::validation(
                    "group_by",
                    format!(
                        "expected one of 'agent_name', 'framework', 'status', 'run_id', \
                         'request_id', 'session_id', got {other:?}"
                    ),
                ))
            }
        })
    }
}

/// Running totals of one stats map; strings borrow from the read transaction.
#[derive(Default)]
struct Tally<'t> {
    count: u64,
    errors: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    cost_sum: f64,
    costs: u64,
    latencies: Vec<f64>,
    hours: BTreeMap<i64, u64>,
    /// The hour being counted and its count: matches mostly arrive in time order, so this
    /// spares a map update per trace.
    current_hour: Option<(i64, u64)>,
    agents: HashMap<&'t str, u64>,
}

impl<'t> Tally<'t> {
    fn add(&mut self, numbers: &Numbers, agent: &'t str) {
        self.count += 1;
        self.errors += u64::from(numbers.has_errors());
        let sum = |total: &mut u64, value: Option<u64>| {
            *total = total.saturating_add(value.unwrap_or(0));
        };
        sum(&mut self.prompt_tokens, numbers.prompt_tokens);
        sum(&mut self.completion_tokens, numbers.completion_tokens);
        sum(&mut self.total_tokens, numbers.total_tokens);
        if let Some(cost) = numbers.cost_usd {
            self.cost_sum += cost;
            self.costs += 1;
        }
        self.latencies.extend(numbers.latency_ms);
        let hour = numbers.timestamp_us.div_euclid(MICROS_PER_HOUR);
        match &mut self.current_hour {
            Some((current, count)) if *current == hour => *count += 1,
            current => {
                if let Some((previous, count)) = current.replace((hour, 1)) {
                    *self.hours.entry(previous).or_default() += count;
                }
            }
        }
        *self.agents.entry(agent).or_default() += 1;
    }

    /// Writes the stats map; `groups` are written as nested maps (empty when `None`).
    fn write(mut self, out: &mut Vec<u8>, groups: Option<BTreeMap<&str, Tally<'_>>>) {
        if let Some((hour, count)) = self.current_hour.take() {
            *self.hours.entry(hour).or_default() += count;
        }
        let map = begin_map(out, 14);
        let entry_uint = |out: &mut Vec<u8>, key: &str, value: u64| {
            write_str(out, key);
            write_uint(out, value);
        };
        entry_uint(out, "count", self.count);
        entry_uint(out, "error_count", self.errors);
        write_str(out, "error_rate");
        let rate = if self.count == 0 { 0.0 } else { self.errors as f64 / self.count as f64 };
        write_f64(out, rate);
        entry_uint(out, "prompt_tokens", self.prompt_tokens);
        entry_uint(out, "completion_tokens", self.completion_tokens);
        entry_uint(out, "total_tokens", self.total_tokens);
        write_str(out, "cost_usd");
        write_f64(out, self.cost_sum);
        write_str(out, "mean_cost_usd");
        write_optional_f64(out, (self.costs > 0).then(|| self.cost_sum / self.costs as f64));
        let [p50, p95, p99] = percentiles(&mut self.latencies, [50, 95, 99]);
        for (key, value) in
            [("latency_p50_ms", p50), ("latency_p95_ms", p95), ("latency_p99_ms", p99)]
        {
            write_str(out, key);
            write_optional_f64(out, value);
        }
        write_str(out, "per_hour");
        let hours = begin_map(out, self.hours.len());
        for (&hour, &count) in &self.hours {
            write_str(out, &hour_label(hour));
            write_uint(out, count);
        }
        finish_map(out, hours, self.hours.len());
        write_str(out, "top_agents");
        write_top_agents(out, &self.agents);
        write_str(out, "groups");
        let groups = groups.unwrap_or_default();
        let len = groups.len();
        let nested = begin_map(out, len);
        for (value, tally) in groups {
            write_str(out, value);
            tally.write(out, None);
        }
        finish_map(out, nested, len);
        finish_map(out, map, 14);
    }
}

/// Nearest-rank percentiles of `values` (each `ceil(p/100 * n)`-th smallest) for ascending
/// `ranks`, found by successive selections on the shrinking upper part, not a full sort.
fn percentiles<const N: usize>(values: &mut [f64], ranks: [u64; N]) -> [Option<f64>; N] {
    let mut found = [None; N];
    let n = values.len() as u64;
    let mut start = 0;
    for (slot, p) in found.iter_mut().zip(ranks) {
        let Some(index) = (p * n).div_ceil(100).checked_sub(1) else { continue };
        let index = index as usize;
        let (_, nth, _) = values[start..].select_nth_unstable_by(index - start, f64::total_cmp);
        *slot = Some(*nth);
        start = index;
    }
    found
}

/// The ten agents with the most traces (ties by name) as `[[name, count], ...]`.
fn write_top_agents(out: &mut Vec<u8>, agents: &HashMap<&str, u64>) {
    let mut top: Vec<(&str, u64)> = agents.iter().map(|(&name, &count)| (name, count)).collect();
    let order = |a: &(&str, u64), b: &(&str, u64)| b.1.cmp(&a.1).then(a.0.cmp(b.0));
    if top.len() > TOP_AGENTS {
        top.select_nth_unstable_by(TOP_AGENTS - 1, order);
        top.truncate(TOP_AGENTS);
    }
    top.sort_unstable_by(order);
    write_array_header(out, top.len() as u32);
    for (name, count) in top {
        write_array_header(out, 2);
        write_str(out, name);
        write_uint(out, count);
    }
}

/// Aggregates over the matches as a msgpack Stats map, optionally grouped by a field.
pub fn stats(
    txn: &RoTxn<WithoutTls>,
    dbs: &Databases,
    filters: &Filters,
    group_by: Option<&str>,
) -> Result<Vec<u8>> {
    let group_by = group_by.map(GroupBy::parse).transpose()?;
    let mut overall = Tally::default();
    let mut groups: HashMap<&str, Tally<'_>> = HashMap::new();
    for_each_match(txn, dbs, filters, |id, summary| {
        let numbers = Numbers::read(summary).map_err(|why| corrupt(id, &why))?;
        let texts = Texts::read(summary).map_err(|why| corrupt(id, &why))?;
        let agent = utf8(id, texts.agent_name)?;
        overall.add(&numbers, agent);
        let group = match group_by {
            None => None,
            Some(GroupBy::Status) => numbers.status.map(Status::name),
            Some(GroupBy::Text(field)) => {
                text_of(&texts, field).map(|v| utf8(id, v)).transpose()?
            }
        };
        if let Some(group) = group {
            groups.entry(group).or_default().add(&numbers, agent);
        }
        Ok(())
    })?;
    let mut out = Vec::with_capacity(512);
    overall.write(&mut out, Some(groups.into_iter().collect()));
    Ok(out)
}

fn utf8<'t>(id: &TraceId, bytes: &'t [u8]) -> Result<&'t str> {
    std::str::from_utf8(bytes).map_err(|_| corrupt(id, "a summary string is not UTF-8"))
}

/// A TraceSummary map; keys whose value was not reported are left out.
fn write_trace_summary(out: &mut Vec<u8>, id: &TraceId, summary: &Summary) {
    let map = begin_map(out, 14);
    let mut entries = 0;
    let mut key = |out: &mut Vec<u8>, name: &str| {
        write_str(out, name);
        entries += 1;
    };
    key(out, "trace_id");
    write_str(out, &to_hex(id));
    key(out, "agent_name");
    write_str(out, &summary.agent_name);
    if let Some(framework) = &summary.framework {
        key(out, "framework");
        write_str(out, framework);
    }
    key(out, "timestamp");
    let micros = summary.numbers.timestamp_us;
    let nanos = micros.rem_euclid(1_000_000) as u32 * 1_000;
    Timestamp { secs: micros.div_euclid(1_000_000), nanos }.write_ext(out);
    if let Some(status) = summary.numbers.status {
        key(out, "status");
        write_str(out, status.name());
    }
    key(out, "has_errors");
    write_bool(out, summary.has_errors());
    if let Some(latency) = summary.numbers.latency_ms {
        key(out, "latency_ms");
        write_f64(out, latency);
    }
    let tokens = [
        ("prompt_tokens", summary.numbers.prompt_tokens),
        ("completion_tokens", summary.numbers.completion_tokens),
        ("total_tokens", summary.numbers.total_tokens),
    ];
    let reported = tokens.iter().filter(|(_, value)| value.is_some()).count();
    if reported > 0 {
        key(out, "token_usage");
        let usage = begin_map(out, reported);
        for (name, value) in tokens {
            if let Some(value) = value {
                write_str(out, name);
                write_uint(out, value);
            }
        }
        finish_map(out, usage, reported);
    }
    if let Some(cost) = summary.numbers.cost_usd {
        key(out, "cost_usd");
        write_f64(out, cost);
    }
    let ids = [
        ("run_id", &summary.run_id),
        ("request_id", &summary.request_id),
        ("session_id", &summary.session_id),
    ];
    for (name, value) in ids {
        if let Some(value) = value {
            key(out, name);
            write_str(out, value);
        }
    }
    key(out, "span_count");
    write_uint(out, u64::from(summary.numbers.span_count));
    if !summary.tags.is_empty() {
        key(out, "tags");
        write_array_header(out, summary.tags.len() as u32);
        for tag in &summary.tags {
            write_str(out, tag);
        }
    }
    finish_map(out, map, entries);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Options, Store};
    use crate::summary::index_key;
    use std::collections::HashSet;

    /// xorshift64*: a fixed-seed generator, so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }

        fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[self.below(items.len() as u64) as usize]
        }

        fn id(&mut self) -> TraceId {
            let mut id = [0; 16];
            id[..8].copy_from_slice(&self.next().to_be_bytes());
            id[8..].copy_from_slice(&(self.next() | 1).to_be_bytes());
            id
        }
    }

    // ---- msgpack for the tests: a decoded tree, and encoders for filter maps ----

    #[derive(Debug, Clone, PartialEq)]
    enum V {
        Nil,
        Bool(bool),
        Int(u64),
        Float(f64),
        Str(String),
        Micros(i64),
        Array(Vec<V>),
        Map(Vec<(String, V)>),
    }

    impl V {
        fn get(&self, key: &str) -> Option<&V> {
            let V::Map(entries) = self else { panic!("not a map: {self:?}") };
            entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
        }

        fn keys(&self) -> Vec<&str> {
            let V::Map(entries) = self else { panic!("not a map: {self:?}") };
            entries.iter().map(|(k, _)| k.as_str()).collect()
        }
    }

    fn decode(bytes: &[u8]) -> V {
        fn value(r: &mut Reader<'_>) -> V {
            match r.read_token().unwrap() {
                Token::Nil => V::Nil,
                Token::Bool(b) => V::Bool(b),
                Token::UInt(n) => V::Int(n),
                Token::Float(f) => V::Float(f),
                Token::Str(s) => V::Str(String::from_utf8(s.to_vec()).unwrap()),
                Token::Ext(TIMESTAMP_EXT, p) => {
                    V::Micros(Timestamp::decode_ext(p).unwrap().as_micros())
                }
                Token::Array(n) => V::Array((0..n).map(|_| value(r)).collect()),
                Token::Map(n) => V::Map(
                    (0..n)
                        .map(|_| {
                            let V::Str(key) = value(r) else { panic!("non-string key") };
                            (key, value(r))
                        })
                        .collect(),
                ),
                other => panic!("unexpected {other:?}"),
            }
        }
        let mut reader = Reader::new(bytes);
        let decoded = value(&mut reader);
        reader.expect_end().unwrap();
        decoded
    }

    fn mp_str(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        write_str(&mut out, text);
        out
    }

    fn mp_int(n: i64) -> Vec<u8> {
        let mut out = Vec::new();
        if n >= 0 {
            write_uint(&mut out, n as u64);
        } else {
            out.push(0xd3);
            out.extend_from_slice(&n.to_be_bytes());
        }
        out
    }

    fn mp_float(f: f64) -> Vec<u8> {
        let mut out = Vec::new();
        write_f64(&mut out, f);
        out
    }

    fn mp_bool(b: bool) -> Vec<u8> {
        vec![if b { 0xc3 } else { 0xc2 }]
    }

    fn mp_micros(us: i64) -> Vec<u8> {
        let mut out = Vec::new();
        let nanos = us.rem_euclid(1_000_000) as u32 * 1000;
        Timestamp { secs: us.div_euclid(1_000_000), nanos }.write_ext(&mut out);
        out
    }

    fn mp_array(items: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        write_array_header(&mut out, items.len() as u32);
        items.iter().for_each(|item| out.extend_from_slice(item));
        out
    }

    fn mp_map(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        let map = begin_map(&mut out, entries.len());
        for (key, value) in entries {
            write_str(&mut out, key);
            out.extend_from_slice(value);
        }
        finish_map(&mut out, map, entries.len());
        out
    }

    /// `YYYY-MM-DDTHH:MM:SS.ffffff` (naive, so UTC) for an instant in microseconds.
    fn iso(us: i64) -> String {
        let secs = us.div_euclid(1_000_000);
        let hour = hour_label(secs.div_euclid(3600)); // YYYY-MM-DDTHH:00:00Z
        let in_hour = secs.rem_euclid(3600);
        let micros = us.rem_euclid(1_000_000);
        format!("{}{:02}:{:02}.{micros:06}", &hour[..14], in_hour / 60, in_hour % 60)
    }

    // ---- stores ----

    fn open_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Options::default()).unwrap();
        (dir, store)
    }

    fn put(store: &Store, traces: &[(TraceId, Summary)]) {
        let core = store.core();
        let mut txn = core.env().write_txn().unwrap();
        for (id, summary) in traces {
            core.dbs.put_summary(&mut txn, id, None, summary).unwrap();
        }
        txn.commit().unwrap();
    }

    fn read<T>(
        store: &Store,
        mut f: impl FnMut(&RoTxn<WithoutTls>, &Databases) -> Result<T>,
    ) -> Result<T> {
        let core = store.core();
        core.read(|txn| f(txn, &core.dbs))
    }

    fn filters(entries: &[(&str, Vec<u8>)]) -> Filters {
        Filters::parse(&mp_map(entries)).unwrap()
    }

    #[test]
    fn filters_listing_100000_values_are_parsed_and_matched() {
        // Dropping duplicate values pairwise, picking each next key among 100,000 index
        // ranges by a scan, and comparing 65,534 tags with 100,000 wanted ones took minutes.
        let (_dir, store) = open_store();
        let tags: Vec<String> = (0..65_534).map(|i| format!("t{i}")).collect();
        let traces: Vec<(TraceId, Summary)> = (0..200u8)
            .map(|i| {
                let summary = Summary {
                    numbers: Numbers { timestamp_us: i64::from(i), ..Numbers::default() },
                    agent_name: "a".into(),
                    run_id: Some("r".into()),
                    tags: if i == 0 { tags.clone() } else { tags[..100].to_vec() },
                    ..Summary::default()
                };
                ([i + 1; 16], summary)
            })
            .collect();
        put(&store, &traces);
        let wanted: Vec<Vec<u8>> = (0..100_000)
            .map(|i| mp_str(&format!("w{i}")))
            .chain([mp_str("t65533"), mp_str("t99"), mp_str("w7")])
            .collect();
        let by_tag = filters(&[("tag", mp_array(&wanted))]);
        assert_eq!(by_tag.tag.len(), 100_002, "duplicates dropped");
        assert_eq!(read(&store, |txn, dbs| count(txn, dbs, &by_tag)).unwrap(), 200);
        // run_id drives: every tag of each candidate is looked up among the wanted ones.
        let by_run = filters(&[("run_id", mp_str("r")), ("tag", mp_array(&wanted))]);
        assert_eq!(read(&store, |txn, dbs| count(txn, dbs, &by_run)).unwrap(), 200);
    }

    fn page_ids(out: &[u8]) -> (Vec<TraceId>, Option<String>) {
        let page = decode(out);
        assert_eq!(page.keys(), ["items", "next_cursor"]);
        let Some(V::Array(items)) = page.get("items") else { panic!("no items") };
        let ids = items
            .iter()
            .map(|item| match item.get("trace_id") {
                Some(V::Str(hex)) => crate::ids::parse_trace_id(hex).unwrap(),
                other => panic!("bad trace_id {other:?}"),
            })
            .collect();
        let cursor = match page.get("next_cursor") {
            Some(V::Str(cursor)) => Some(cursor.clone()),
            Some(V::Nil) => None,
            other => panic!("bad next_cursor {other:?}"),
        };
        (ids, cursor)
    }

    /// Every page of a query, checking that a page with a cursor after it is full and that
    /// no trace comes back twice (which also ends a walk that would never finish).
    fn walk_pages(
        store: &Store,
        filters: &Filters,
        order: &str,
        descending: bool,
        limit: i64,
    ) -> Vec<TraceId> {
        let (mut all, mut seen, mut cursor) = (Vec::new(), HashSet::new(), None);
        loop {
            let page = PageRequest::new(order, descending, limit, cursor.take()).unwrap();
            let out = read(store, |txn, dbs| query(txn, dbs, filters, &page)).unwrap();
            let (ids, next) = page_ids(&out);
            for id in ids.iter() {
                assert!(seen.insert(*id), "{} returned twice", to_hex(id));
            }
            all.extend(ids.iter().copied());
            match next {
                Some(next) => {
                    assert_eq!(ids.len() as i64, limit, "a page before the last is full");
                    cursor = Some(next);
                }
                None => return all,
            }
        }
    }

    // ---- the model ----

    const AGENTS: [&str; 10] = [
        "support-bot",
        "billing",
        "triage",
        "research",
        "écrivain",
        "planner",
        "coder",
        "critic",
        "router",
        "summarizer",
    ];
    const FRAMEWORKS: [&str; 3] = ["langgraph", "crewai", "openai-agents"];
    const TAGS: [&str; 5] = ["prod", "eu", "us", "beta", "vip"];

    /// Values over 128 bytes, indexed by hash; the pairs share their first 128 bytes.
    fn long(stem: char, last: char) -> String {
        let mut text: String = std::iter::repeat(stem).take(140).collect();
        text.push(last);
        text
    }

    fn agent_pool() -> Vec<String> {
        let mut pool: Vec<String> = AGENTS.iter().map(|s| s.to_string()).collect();
        pool.push(long('a', '1'));
        pool.push(long('a', '2'));
        pool
    }

    fn run_pool() -> Vec<String> {
        let mut pool: Vec<String> = (0..8).map(|i| format!("run-{i}")).collect();
        pool.push(long('r', '1'));
        pool.push(long('r', '2'));
        pool
    }

    fn tag_pool() -> Vec<String> {
        let mut pool: Vec<String> = TAGS.iter().map(|s| s.to_string()).collect();
        pool.push(long('t', '1'));
        pool
    }

    const BASE_US: i64 = 1_750_000_000_000_000;
    const SPREAD_US: u64 = 50 * 3_600_000_000;

    fn random_summary(rng: &mut Rng, previous_us: i64) -> Summary {
        let timestamp_us = match rng.below(20) {
            0 => previous_us,
            1 => -(rng.below(SPREAD_US) as i64),
            _ => BASE_US + rng.below(SPREAD_US) as i64,
        };
        let some = |rng: &mut Rng, percent| rng.chance(percent);
        let mut tags = Vec::new();
        for _ in 0..rng.below(4) {
            let tag = rng.pick(&tag_pool()).clone();
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        // Skewed towards the first agents so that top_agents has clear winners and ties.
        let agents = agent_pool();
        let agent = agents[(rng.below(12) * rng.below(13) / 12) as usize].clone();
        Summary {
            numbers: Numbers {
                timestamp_us,
                status: match rng.below(4) {
                    0 => None,
                    1 => Some(Status::Running),
                    2 => Some(Status::Succeeded),
                    _ => Some(Status::Failed),
                },
                errors_logged: some(rng, 15),
                cost_usd: some(rng, 70).then(|| rng.below(2048) as f64 / 1024.0),
                prompt_tokens: some(rng, 60).then(|| rng.below(5000)),
                completion_tokens: some(rng, 60).then(|| rng.below(2000)),
                total_tokens: some(rng, 50).then(|| rng.below(7000)),
                span_count: rng.below(20) as u32,
                // Coarse grids give ties; multiples of 1/1024 add up exactly in any order.
                latency_ms: some(rng, 80).then(|| rng.below(300) as f64 * 2.5),
            },
            agent_name: agent,
            framework: some(rng, 70).then(|| rng.pick(&FRAMEWORKS).to_string()),
            run_id: some(rng, 60).then(|| rng.pick(&run_pool()).clone()),
            request_id: some(rng, 40).then(|| format!("req-{}", rng.below(30))),
            session_id: some(rng, 50).then(|| format!("s-{}", rng.below(6))),
            tags,
        }
    }

    fn random_traces(rng: &mut Rng, n: usize) -> Vec<(TraceId, Summary)> {
        let mut traces: Vec<(TraceId, Summary)> = Vec::with_capacity(n);
        for _ in 0..n {
            let previous = traces.last().map_or(BASE_US, |(_, s)| s.numbers.timestamp_us);
            traces.push((rng.id(), random_summary(rng, previous)));
        }
        traces
    }

    /// One filter as the model sees it.
    #[derive(Debug, Clone)]
    enum Want {
        Texts(Vec<String>),
        Statuses(Vec<Status>),
        Bool(bool),
        /// Microseconds, and how to send them: 0 ext, 1 ISO string, 2 epoch float.
        Instant(i64, u8),
        Number(f64),
    }

    #[derive(Debug, Clone, Default)]
    struct Model(Vec<(&'static str, Want)>);

    impl Model {
        fn matches(&self, s: &Summary) -> bool {
            self.0.iter().all(|(name, want)| match (*name, want) {
                ("agent_name", Want::Texts(v)) => v.contains(&s.agent_name),
                ("framework", Want::Texts(v)) => {
                    s.framework.as_ref().is_some_and(|x| v.contains(x))
                }
                ("run_id", Want::Texts(v)) => s.run_id.as_ref().is_some_and(|x| v.contains(x)),
                ("request_id", Want::Texts(v)) => {
                    s.request_id.as_ref().is_some_and(|x| v.contains(x))
                }
                ("session_id", Want::Texts(v)) => {
                    s.session_id.as_ref().is_some_and(|x| v.contains(x))
                }
                ("tag", Want::Texts(v)) => s.tags.iter().any(|t| v.contains(t)),
                ("status", Want::Statuses(v)) => s.numbers.status.is_some_and(|x| v.contains(&x)),
                ("has_errors", Want::Bool(b)) => s.has_errors() == *b,
                ("since", Want::Instant(us, _)) => s.numbers.timestamp_us >= *us,
                ("until", Want::Instant(us, _)) => s.numbers.timestamp_us < *us,
                ("min_cost_usd", Want::Number(x)) => s.numbers.cost_usd.is_some_and(|c| c >= *x),
                ("max_cost_usd", Want::Number(x)) => s.numbers.cost_usd.is_some_and(|c| c <= *x),
                ("min_latency_ms", Want::Number(x)) => {
                    s.numbers.latency_ms.is_some_and(|c| c >= *x)
                }
                ("max_latency_ms", Want::Number(x)) => {
                    s.numbers.latency_ms.is_some_and(|c| c <= *x)
                }
                other => panic!("model cannot check {other:?}"),
            })
        }

        fn encode(&self, rng: &mut Rng) -> Vec<u8> {
            let entries: Vec<(&str, Vec<u8>)> = self
                .0
                .iter()
                .map(|(name, want)| {
                    let value = match want {
                        Want::Texts(v) if v.len() == 1 && rng.chance(50) => mp_str(&v[0]),
                        Want::Texts(v) => {
                            mp_array(&v.iter().map(|s| mp_str(s)).collect::<Vec<_>>())
                        }
                        Want::Statuses(v) if v.len() == 1 && rng.chance(50) => mp_str(v[0].name()),
                        Want::Statuses(v) => {
                            mp_array(&v.iter().map(|s| mp_str(s.name())).collect::<Vec<_>>())
                        }
                        Want::Bool(b) => mp_bool(*b),
                        Want::Instant(us, 0) => mp_micros(*us),
                        Want::Instant(us, 1) => mp_str(&iso(*us)),
                        Want::Instant(us, _) => mp_float(*us as f64 / 1e6),
                        Want::Number(x) if x.fract() == 0.0 => mp_int(*x as i64),
                        Want::Number(x) => mp_float(*x),
                    };
                    (*name, value)
                })
                .collect();
            mp_map(&entries)
        }
    }

    fn some_of(rng: &mut Rng, pool: &[String]) -> Vec<String> {
        (0..1 + rng.below(3)).map(|_| rng.pick(pool).clone()).collect()
    }

    fn random_model(rng: &mut Rng, traces: &[(TraceId, Summary)]) -> Model {
        let mut model = Model::default();
        let mut texts = |rng: &mut Rng, name, percent, pool: Vec<String>| {
            if rng.chance(percent) {
                model.0.push((name, Want::Texts(some_of(rng, &pool))));
            }
        };
        let with_unknown = |mut pool: Vec<String>| {
            pool.push("nobody".into());
            pool
        };
        texts(rng, "agent_name", 25, with_unknown(agent_pool()));
        texts(
            rng,
            "framework",
            15,
            with_unknown(FRAMEWORKS.iter().map(|s| s.to_string()).collect()),
        );
        texts(rng, "run_id", 12, with_unknown(run_pool()));
        texts(rng, "request_id", 8, (0..32).map(|i| format!("req-{i}")).collect());
        texts(rng, "session_id", 10, (0..7).map(|i| format!("s-{i}")).collect());
        texts(rng, "tag", 20, with_unknown(tag_pool()));
        if rng.chance(15) {
            let all = [Status::Running, Status::Succeeded, Status::Failed];
            let mut picked: Vec<Status> = (0..1 + rng.below(2)).map(|_| *rng.pick(&all)).collect();
            picked.dedup();
            model.0.push(("status", Want::Statuses(picked)));
        }
        if rng.chance(15) {
            model.0.push(("has_errors", Want::Bool(rng.chance(50))));
        }
        for name in ["since", "until"] {
            if rng.chance(20) {
                let at = rng.pick(traces).1.numbers.timestamp_us + rng.below(3) as i64 - 1;
                let form = rng.below(3) as u8;
                model.0.push((name, Want::Instant(at, form)));
            }
        }
        for (name, grid) in [
            ("min_cost_usd", 1.0 / 1024.0),
            ("max_cost_usd", 1.0 / 1024.0),
            ("min_latency_ms", 2.5),
            ("max_latency_ms", 2.5),
        ] {
            if rng.chance(8) {
                let steps = if grid < 1.0 { 2048 } else { 300 };
                model.0.push((name, Want::Number(rng.below(steps) as f64 * grid)));
            }
        }
        model
    }

    fn by_time_order(matches: &[(TraceId, Summary)], descending: bool) -> Vec<TraceId> {
        let mut keys: Vec<(TimeKey, TraceId)> =
            matches.iter().map(|(id, s)| (time_key(s.numbers.timestamp_us, id), *id)).collect();
        keys.sort();
        if descending {
            keys.reverse();
        }
        keys.into_iter().map(|(_, id)| id).collect()
    }

    fn by_value_order(
        matches: &[(TraceId, Summary)],
        value: fn(&Summary) -> Option<f64>,
        descending: bool,
    ) -> Vec<TraceId> {
        let mut present: Vec<(f64, TimeKey, TraceId)> = Vec::new();
        let mut absent: Vec<(TimeKey, TraceId)> = Vec::new();
        for (id, s) in matches {
            let key = time_key(s.numbers.timestamp_us, id);
            match value(s) {
                Some(v) => present.push((v, key, *id)),
                None => absent.push((key, *id)),
            }
        }
        present.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        absent.sort();
        if descending {
            present.reverse();
            absent.reverse();
        }
        present.into_iter().map(|p| p.2).chain(absent.into_iter().map(|a| a.1)).collect()
    }

    fn model_stats(matches: &[&Summary], group_by: Option<&str>) -> V {
        let count = matches.len() as u64;
        let errors = matches.iter().filter(|s| s.has_errors()).count() as u64;
        let sum =
            |f: fn(&Summary) -> Option<u64>| V::Int(matches.iter().filter_map(|s| f(s)).sum());
        let costs: Vec<f64> = matches.iter().filter_map(|s| s.numbers.cost_usd).collect();
        let cost_sum: f64 = costs.iter().sum();
        let mut latencies: Vec<f64> = matches.iter().filter_map(|s| s.numbers.latency_ms).collect();
        latencies.sort_by(f64::total_cmp);
        let percentile = |p: usize| {
            if latencies.is_empty() {
                V::Nil
            } else {
                V::Float(latencies[(p * latencies.len()).div_ceil(100) - 1])
            }
        };
        let mut hours: BTreeMap<i64, u64> = BTreeMap::new();
        let mut agents: BTreeMap<&str, u64> = BTreeMap::new();
        for s in matches {
            *hours.entry(s.numbers.timestamp_us.div_euclid(MICROS_PER_HOUR)).or_default() += 1;
            *agents.entry(&s.agent_name).or_default() += 1;
        }
        let mut top: Vec<(&str, u64)> = agents.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        top.truncate(10);
        let mut groups: BTreeMap<String, Vec<&Summary>> = BTreeMap::new();
        for s in matches {
            let value = match group_by {
                None => None,
                Some("agent_name") => Some(s.agent_name.clone()),
                Some("framework") => s.framework.clone(),
                Some("status") => s.numbers.status.map(|x| x.name().to_string()),
                Some("run_id") => s.run_id.clone(),
                Some("request_id") => s.request_id.clone(),
                Some("session_id") => s.session_id.clone(),
                Some(other) => panic!("{other}"),
            };
            if let Some(value) = value {
                groups.entry(value).or_default().push(s);
            }
        }
        V::Map(vec![
            ("count".into(), V::Int(count)),
            ("error_count".into(), V::Int(errors)),
            (
                "error_rate".into(),
                V::Float(if count == 0 { 0.0 } else { errors as f64 / count as f64 }),
            ),
            ("prompt_tokens".into(), sum(|s| s.numbers.prompt_tokens)),
            ("completion_tokens".into(), sum(|s| s.numbers.completion_tokens)),
            ("total_tokens".into(), sum(|s| s.numbers.total_tokens)),
            ("cost_usd".into(), V::Float(cost_sum)),
            (
                "mean_cost_usd".into(),
                if costs.is_empty() { V::Nil } else { V::Float(cost_sum / costs.len() as f64) },
            ),
            ("latency_p50_ms".into(), percentile(50)),
            ("latency_p95_ms".into(), percentile(95)),
            ("latency_p99_ms".into(), percentile(99)),
            (
                "per_hour".into(),
                V::Map(hours.into_iter().map(|(h, n)| (hour_label(h), V::Int(n))).collect()),
            ),
            (
                "top_agents".into(),
                V::Array(
                    top.into_iter()
                        .map(|(name, n)| V::Array(vec![V::Str(name.into()), V::Int(n)]))
                        .collect(),
                ),
            ),
            (
                "groups".into(),
                V::Map(
                    groups
                        .into_iter()
                        .map(|(k, members)| (k, model_stats(&members, None)))
                        .collect(),
                ),
            ),
        ])
    }

    fn sorted(mut ids: Vec<TraceId>) -> Vec<TraceId> {
        ids.sort();
        ids
    }

    /// Everything the store answers for one filter set agrees with the model.
    fn compare(store: &Store, traces: &[(TraceId, Summary)], model: &Model, rng: &mut Rng) {
        let encoded = model.encode(rng);
        let filters = Filters::parse(&encoded).unwrap_or_else(|e| panic!("{model:?}: {e:?}"));
        let expected: Vec<(TraceId, Summary)> =
            traces.iter().filter(|(_, s)| model.matches(s)).cloned().collect();
        let context = format!("{model:?} ({} matches)", expected.len());

        let counted = read(store, |txn, dbs| count(txn, dbs, &filters)).unwrap();
        assert_eq!(counted, expected.len() as u64, "count for {context}");
        let all = read(store, |txn, dbs| matching(txn, dbs, &filters)).unwrap();
        assert_eq!(sorted(all), sorted(expected.iter().map(|(id, _)| *id).collect()), "{context}");

        let limit = 1 + rng.below(9) as i64;
        for descending in [true, false] {
            let walked = walk_pages(store, &filters, "timestamp", descending, limit);
            assert_eq!(
                walked,
                by_time_order(&expected, descending),
                "timestamp {descending} {context}"
            );
            let latency = walk_pages(store, &filters, "latency_ms", descending, limit);
            assert_eq!(
                latency,
                by_value_order(&expected, |s| s.numbers.latency_ms, descending),
                "{context}"
            );
            let cost = walk_pages(store, &filters, "cost_usd", descending, limit);
            assert_eq!(
                cost,
                by_value_order(&expected, |s| s.numbers.cost_usd, descending),
                "{context}"
            );
        }

        let group_by = *rng.pick(&[
            None,
            Some("agent_name"),
            Some("framework"),
            Some("status"),
            Some("run_id"),
            Some("request_id"),
            Some("session_id"),
        ]);
        let out = read(store, |txn, dbs| stats(txn, dbs, &filters, group_by)).unwrap();
        let members: Vec<&Summary> = expected.iter().map(|(_, s)| s).collect();
        assert_eq!(
            decode(&out),
            model_stats(&members, group_by),
            "stats by {group_by:?} {context}"
        );
    }

    #[test]
    fn every_answer_matches_a_brute_force_model() {
        let mut rng = Rng(0x5eed_f11e_1065_0001);
        let traces = random_traces(&mut rng, 400);
        let (_dir, store) = open_store();
        put(&store, &traces);
        compare(&store, &traces, &Model::default(), &mut rng);
        let mut driven = 0;
        for _ in 0..300 {
            let model = random_model(&mut rng, &traces);
            let drivers = ["agent_name", "framework", "tag", "status", "has_errors"];
            driven += usize::from(
                model.0.iter().any(|(name, _)| name.ends_with("_id") || drivers.contains(name)),
            );
            compare(&store, &traces, &model, &mut rng);
        }
        assert!(driven > 100, "most filter sets use an index");
    }

    #[test]
    fn one_filter_at_a_time_matches_the_model() {
        let mut rng = Rng(0x0bad_cafe);
        let traces = random_traces(&mut rng, 300);
        let (_dir, store) = open_store();
        put(&store, &traces);
        let status = |v: &[Status]| Want::Statuses(v.to_vec());
        let long_run = run_pool()[8].clone();
        let singles: Vec<(&'static str, Want)> = vec![
            ("agent_name", Want::Texts(vec![AGENTS[0].into()])),
            ("agent_name", Want::Texts(vec![long('a', '1'), long('a', '2')])),
            ("framework", Want::Texts(vec![FRAMEWORKS[1].into()])),
            ("run_id", Want::Texts(vec![long_run])),
            ("request_id", Want::Texts(vec!["req-3".into(), "req-4".into()])),
            ("session_id", Want::Texts(vec!["s-2".into()])),
            ("tag", Want::Texts(vec!["prod".into(), "eu".into(), long('t', '1')])),
            ("status", status(&[Status::Failed])),
            ("status", status(&[Status::Running, Status::Succeeded])),
            ("has_errors", Want::Bool(true)),
            ("has_errors", Want::Bool(false)),
            ("since", Want::Instant(BASE_US + 3_600_000_000, 0)),
            ("until", Want::Instant(BASE_US + 3_600_000_000, 1)),
            ("min_cost_usd", Want::Number(1.0)),
            ("max_latency_ms", Want::Number(100.0)),
        ];
        for single in singles {
            compare(&store, &traces, &Model(vec![single]), &mut rng);
        }
    }

    #[test]
    fn since_is_inclusive_and_until_exclusive_to_the_microsecond() {
        let (_dir, store) = open_store();
        let t = BASE_US + 123_456;
        let ids: Vec<TraceId> = (1..=5u8).map(|i| [i; 16]).collect();
        let at = [t - 1, t, t, t + 1, t + 2];
        let traces: Vec<(TraceId, Summary)> = ids
            .iter()
            .zip(at)
            .map(|(id, us)| {
                (
                    *id,
                    Summary {
                        numbers: Numbers { timestamp_us: us, ..Numbers::default() },
                        agent_name: "a".into(),
                        ..Summary::default()
                    },
                )
            })
            .collect();
        put(&store, &traces);
        let found = |entries: &[(&str, Vec<u8>)]| {
            let filters = filters(entries);
            sorted(read(&store, |txn, dbs| matching(txn, dbs, &filters)).unwrap())
        };
        assert_eq!(found(&[("since", mp_micros(t))]), ids[1..]);
        assert_eq!(found(&[("until", mp_micros(t))]), ids[..1]);
        assert_eq!(found(&[("since", mp_micros(t)), ("until", mp_micros(t + 1))]), ids[1..3]);
        assert_eq!(found(&[("since", mp_str(&iso(t))), ("agent_name", mp_str("a"))]), ids[1..]);
        assert_eq!(found(&[("until", mp_float(t as f64 / 1e6))]), ids[..1]);
        // A nanosecond past t: since excludes t, until includes it.
        let mut ext = vec![0xc7, 12, 0xff];
        ext.extend_from_slice(&(((t % 1_000_000) * 1000 + 1) as u32).to_be_bytes());
        ext.extend_from_slice(&(t / 1_000_000).to_be_bytes());
        assert_eq!(found(&[("since", ext.clone())]), ids[3..]);
        assert_eq!(found(&[("until", ext)]), ids[..3]);
        assert_eq!(
            found(&[("since", mp_micros(t + 1)), ("until", mp_micros(t))]),
            Vec::<TraceId>::new()
        );
    }

    #[test]
    fn filter_problems_are_reported_at_their_paths() {
        let errors = |entries: &[(&str, Vec<u8>)]| Filters::parse(&mp_map(entries)).unwrap_err();
        let paths = |entries: &[(&str, Vec<u8>)]| -> Vec<(String, String)> {
            errors(entries).into_iter().map(|e| (e.path, e.message)).collect()
        };
        assert_eq!(
            paths(&[("agent_name", mp_array(&[mp_str("a"), mp_int(1), mp_str("b")]))]),
            [("agent_name[1]".into(), "expected a string, got int".into())]
        );
        let unknown = errors(&[("agent", mp_str("a"))]);
        assert_eq!(unknown[0].path, "agent");
        assert!(
            unknown[0].message.contains("agent_name, framework")
                && unknown[0].message.contains("max_latency_ms")
        );
        for bad in [mp_str("not-a-date"), mp_bool(true), mp_array(&[mp_int(1)]), mp_float(f64::NAN)]
        {
            let found = errors(&[("since", bad)]);
            assert_eq!(found[0].path, "since");
            assert!(found[0].message.contains("ISO-8601"), "{found:?}");
        }
        assert!(errors(&[("until", mp_str("2024-02-30"))])[0].message.contains("\"2024-02-30\""));
        assert_eq!(
            errors(&[("until", mp_int(1 << 40))])[0].message,
            "the instant is outside years 1 to 9999"
        );
        let many = paths(&[
            ("status", mp_array(&[mp_str("failed"), mp_str("done")])),
            ("has_errors", mp_str("yes")),
            ("min_cost_usd", mp_float(f64::INFINITY)),
            ("max_latency_ms", mp_bool(false)),
            ("tag", mp_array(&[])),
            ("framework", mp_map(&[("x", mp_int(1))])),
            ("run_id", mp_str("ok")),
            ("run_id", mp_str("again")),
        ]);
        let got: Vec<&str> = many.iter().map(|(path, _)| path.as_str()).collect();
        assert_eq!(
            got,
            [
                "status[1]",
                "has_errors",
                "min_cost_usd",
                "max_latency_ms",
                "tag",
                "framework",
                "run_id"
            ]
        );
        assert!(many[0].1.contains("'running', 'succeeded', 'failed'"), "{many:?}");
        assert_eq!(many[1].1, "expected a bool, got string");
        assert_eq!(many[2].1, "expected a finite number, got inf");
        assert_eq!(many[3].1, "expected a number, got bool");
        assert_eq!(many[5].1, "expected a string, got map");
        assert_eq!(many[6].1, "given more than once");
        assert_eq!(
            Filters::parse(&mp_str("x")).unwrap_err()[0].message,
            "expected a map of filters, got string"
        );
        assert!(Filters::parse(&[0x81, 0xa1]).is_err(), "truncated msgpack");
        assert!(Filters::parse(&[0x80, 0xc0]).is_err(), "trailing bytes");
    }

    #[test]
    fn nil_filters_are_absent_and_values_parse() {
        let none = filters(&[
            ("agent_name", vec![0xc0]),
            ("since", vec![0xc0]),
            ("has_errors", vec![0xc0]),
        ]);
        assert!(none.is_empty());
        let some = filters(&[
            ("agent_name", mp_array(&[mp_str("a"), mp_str("a")])),
            ("status", mp_str("failed")),
            ("since", mp_int(-1)),
            ("min_latency_ms", mp_int(3)),
        ]);
        assert!(!some.is_empty());
        assert_eq!(some.agent_name, ["a"], "duplicates are dropped");
        assert_eq!(some.status, [Status::Failed]);
        assert_eq!(some.since_us, Some(-1_000_000));
        assert_eq!(some.latency_ms.min, Some(3.0));
    }

    #[test]
    fn paging_arguments_are_validated() {
        let paths = |r: std::result::Result<PageRequest, Vec<FieldError>>| -> Vec<String> {
            r.unwrap_err().into_iter().map(|e| e.path).collect()
        };
        assert_eq!(paths(PageRequest::new("timestamp", true, 0, None)), ["limit"]);
        assert_eq!(paths(PageRequest::new("timestamp", true, 1001, None)), ["limit"]);
        assert_eq!(paths(PageRequest::new("name", true, -5, None)), ["order_by", "limit"]);
        assert!(PageRequest::new("timestamp", true, 1, None).is_ok());
        assert!(PageRequest::new("cost_usd", false, 1000, None).is_ok());

        let (_dir, store) = open_store();
        let mut rng = Rng(7);
        put(&store, &random_traces(&mut rng, 20));
        let first = PageRequest::new("timestamp", true, 3, None).unwrap();
        let out = read(&store, |txn, dbs| query(txn, dbs, &Filters::default(), &first)).unwrap();
        let cursor = page_ids(&out).1.unwrap();
        assert!(PageRequest::new("timestamp", true, 3, Some(cursor.clone())).is_ok());
        let upper = cursor.to_uppercase();
        for (order, descending, bad) in [
            ("timestamp", false, cursor.clone()),
            ("latency_ms", true, cursor.clone()),
            ("timestamp", true, upper),
            ("timestamp", true, "zz".into()),
            ("timestamp", true, "".into()),
            ("timestamp", true, cursor[..cursor.len() - 2].into()),
            ("timestamp", true, format!("02{}", &cursor[2..])),
        ] {
            assert_eq!(
                paths(PageRequest::new(order, descending, 3, Some(bad.clone()))),
                ["cursor"],
                "{bad}"
            );
            let direct = PageRequest {
                order_by: OrderBy::parse(order).unwrap(),
                descending,
                limit: 3,
                cursor: Some(bad),
            };
            let refused = read(&store, |txn, dbs| query(txn, dbs, &Filters::default(), &direct));
            assert!(matches!(refused, Err(Error::Validation(e)) if e[0].path == "cursor"));
        }
        let cost = PageRequest::new("cost_usd", true, 3, None).unwrap();
        let out = read(&store, |txn, dbs| query(txn, dbs, &Filters::default(), &cost)).unwrap();
        let cost_cursor = page_ids(&out).1.unwrap();
        assert!(PageRequest::new("cost_usd", true, 3, Some(cost_cursor.clone())).is_ok());
        assert!(PageRequest::new("cost_usd", false, 3, Some(cost_cursor)).is_err());
        let group = read(&store, |txn, dbs| stats(txn, dbs, &Filters::default(), Some("tag")));
        assert!(matches!(group, Err(Error::Validation(e)) if e[0].path == "group_by"));
    }

    #[test]
    fn pages_stay_exact_while_new_traces_arrive() {
        let mut rng = Rng(0xfeed);
        let traces = random_traces(&mut rng, 150);
        let (_dir, store) = open_store();
        put(&store, &traces);
        let agent = filters(&[("agent_name", mp_str(AGENTS[0]))]);
        for (filters, order, descending) in [
            (Filters::default(), "timestamp", true),
            (Filters::default(), "timestamp", false),
            (agent.clone(), "timestamp", true),
            (agent.clone(), "latency_ms", true),
            (Filters::default(), "cost_usd", false),
        ] {
            let before: HashSet<TraceId> = read(&store, |txn, dbs| matching(txn, dbs, &filters))
                .unwrap()
                .into_iter()
                .collect();
            let (mut seen, mut cursor) = (Vec::new(), None);
            loop {
                let page = PageRequest::new(order, descending, 4, cursor.take()).unwrap();
                let out = read(&store, |txn, dbs| query(txn, dbs, &filters, &page)).unwrap();
                let (ids, next) = page_ids(&out);
                seen.extend(ids);
                // Newer, older and interleaved traces, some of them matching.
                let fresh: Vec<(TraceId, Summary)> = (0..3)
                    .map(|i| {
                        let mut s = random_summary(&mut rng, BASE_US);
                        s.agent_name = AGENTS[0].into();
                        s.numbers.timestamp_us = match i {
                            0 => BASE_US + SPREAD_US as i64 + rng.below(1 << 30) as i64,
                            1 => BASE_US - rng.below(1 << 30) as i64,
                            _ => BASE_US + rng.below(SPREAD_US) as i64,
                        };
                        (rng.id(), s)
                    })
                    .collect();
                put(&store, &fresh);
                match next {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            let unique: HashSet<TraceId> = seen.iter().copied().collect();
            assert_eq!(unique.len(), seen.len(), "no trace twice ({order}, {descending})");
            assert!(before.is_subset(&unique), "every earlier match once ({order}, {descending})");
        }
    }

    #[test]
    fn hashed_values_are_verified_against_the_summary() {
        let (_dir, store) = open_store();
        let (one, two) = (long('r', '1'), long('r', '2'));
        let trace = |id: u8, run: &str| {
            (
                [id; 16],
                Summary {
                    numbers: Numbers { timestamp_us: i64::from(id), ..Numbers::default() },
                    agent_name: "a".into(),
                    run_id: Some(run.into()),
                    ..Summary::default()
                },
            )
        };
        put(&store, &[trace(1, &one), trace(2, &two)]);
        // Pretend trace 2's entry also landed under run `one`'s hash (a collision).
        let core = store.core();
        let mut txn = core.env().write_txn().unwrap();
        core.dbs
            .index
            .put(&mut txn, &index_key(Field::RunId, one.as_bytes(), 2, &[2; 16]), &[])
            .unwrap();
        txn.commit().unwrap();
        let by_one = filters(&[("run_id", mp_str(&one))]);
        assert_eq!(read(&store, |txn, dbs| matching(txn, dbs, &by_one)).unwrap(), [[1; 16]]);
        assert_eq!(read(&store, |txn, dbs| count(txn, dbs, &by_one)).unwrap(), 1);
        assert_eq!(walk_pages(&store, &by_one, "timestamp", true, 1), [[1; 16]]);
        let by_two = filters(&[("run_id", mp_str(&two))]);
        assert_eq!(read(&store, |txn, dbs| matching(txn, dbs, &by_two)).unwrap(), [[2; 16]]);
    }

    #[test]
    fn trace_summaries_carry_what_was_reported_and_nothing_else() {
        let (_dir, store) = open_store();
        let full = Summary {
            numbers: Numbers {
                timestamp_us: 1_704_164_645_678_901,
                status: Some(Status::Succeeded),
                errors_logged: true,
                latency_ms: Some(812.5),
                cost_usd: Some(0.0031),
                prompt_tokens: Some(1200),
                completion_tokens: None,
                total_tokens: Some(1300),
                span_count: 6,
            },
            agent_name: "support-bot".into(),
            framework: Some("langgraph".into()),
            run_id: Some("run-1".into()),
            request_id: Some("req-1".into()),
            session_id: Some("s".into()),
            tags: vec!["prod".into(), "eu".into()],
        };
        let bare = Summary {
            numbers: Numbers { timestamp_us: -1, ..Numbers::default() },
            agent_name: "b".into(),
            ..Summary::default()
        };
        put(&store, &[([1; 16], full), ([2; 16], bare)]);
        let page = PageRequest::new("timestamp", true, 10, None).unwrap();
        let out = read(&store, |txn, dbs| query(txn, dbs, &Filters::default(), &page)).unwrap();
        let s = |text: &str| V::Str(text.into());
        let expected = V::Map(vec![
            (
                "items".into(),
                V::Array(vec![
                    V::Map(vec![
                        ("trace_id".into(), s("01010101010101010101010101010101")),
                        ("agent_name".into(), s("support-bot")),
                        ("framework".into(), s("langgraph")),
                        ("timestamp".into(), V::Micros(1_704_164_645_678_901)),
                        ("status".into(), s("succeeded")),
                        ("has_errors".into(), V::Bool(true)),
                        ("latency_ms".into(), V::Float(812.5)),
                        (
                            "token_usage".into(),
                            V::Map(vec![
                                ("prompt_tokens".into(), V::Int(1200)),
                                ("total_tokens".into(), V::Int(1300)),
                            ]),
                        ),
                        ("cost_usd".into(), V::Float(0.0031)),
                        ("run_id".into(), s("run-1")),
                        ("request_id".into(), s("req-1")),
                        ("session_id".into(), s("s")),
                        ("span_count".into(), V::Int(6)),
                        ("tags".into(), V::Array(vec![s("prod"), s("eu")])),
                    ]),
                    V::Map(vec![
                        ("trace_id".into(), s("02020202020202020202020202020202")),
                        ("agent_name".into(), s("b")),
                        ("timestamp".into(), V::Micros(-1)),
                        ("has_errors".into(), V::Bool(false)),
                        ("span_count".into(), V::Int(0)),
                    ]),
                ]),
            ),
            ("next_cursor".into(), V::Nil),
        ]);
        assert_eq!(decode(&out), expected);
    }

    #[test]
    fn stats_of_nothing_are_zero_and_nil() {
        let (_dir, store) = open_store();
        let out =
            read(&store, |txn, dbs| stats(txn, dbs, &Filters::default(), Some("status"))).unwrap();
        assert_eq!(decode(&out), model_stats(&[], None));
        assert_eq!(decode(&out).get("error_rate"), Some(&V::Float(0.0)));
        assert_eq!(decode(&out).get("latency_p99_ms"), Some(&V::Nil));
    }

    #[test]
    fn corrupt_stored_bytes_are_errors_not_panics() {
        let (_dir, store) = open_store();
        let good = Summary {
            numbers: Numbers { timestamp_us: 5, ..Numbers::default() },
            agent_name: "a".into(),
            run_id: Some("r".into()),
            tags: vec!["x".into()],
            ..Summary::default()
        };
        put(&store, &[([1; 16], good.clone()), ([2; 16], good.clone())]);
        let core = store.core();
        let mut txn = core.env().write_txn().unwrap();
        let mut truncated = good.encode();
        truncated.truncate(truncated.len() - 1);
        core.dbs.summaries.put(&mut txn, &[2; 16], &truncated).unwrap();
        txn.commit().unwrap();
        let by_agent = filters(&[("agent_name", mp_str("a"))]);
        assert_eq!(read(&store, |txn, dbs| count(txn, dbs, &by_agent)).unwrap(), 2, "keys alone");
        // The run drives, so the truncated tags must be read.
        let by_tag = filters(&[("tag", mp_str("x")), ("run_id", mp_str("r"))]);
        let found = read(&store, |txn, dbs| count(txn, dbs, &by_tag));
        assert!(
            matches!(&found, Err(Error::Corrupt(m)) if m.contains(&"02".repeat(16))),
            "{found:?}"
        );
        let page = PageRequest::new("timestamp", true, 5, None).unwrap();
        let found = read(&store, |txn, dbs| query(txn, dbs, &Filters::default(), &page));
        assert!(matches!(found, Err(Error::Corrupt(_))));
        let mut txn = core.env().write_txn().unwrap();
        core.dbs.summaries.put(&mut txn, &[2; 16], b"junk").unwrap();
        let mut short = index_prefix(Field::AgentName, b"a");
        short.extend_from_slice(&[0xff; 3]);
        core.dbs.index.put(&mut txn, &short, &[]).unwrap();
        txn.commit().unwrap();
        assert!(matches!(
            read(&store, |txn, dbs| stats(txn, dbs, &Filters::default(), None)),
            Err(Error::Corrupt(_))
        ));
        let found = read(&store, |txn, dbs| count(txn, dbs, &by_agent));
        assert!(
            matches!(&found, Err(Error::Corrupt(m)) if m.contains("has no time key")),
            "{found:?}"
        );
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut values: Vec<f64> = (1..=200).rev().map(f64::from).collect();
        assert_eq!(percentiles(&mut values, [50, 95, 99]), [Some(100.0), Some(190.0), Some(198.0)]);
        assert_eq!(percentiles(&mut [7.0], [50, 95, 99]), [Some(7.0); 3]);
        assert_eq!(percentiles(&mut [2.0, 1.0], [50, 95, 99]), [Some(1.0), Some(2.0), Some(2.0)]);
        assert_eq!(percentiles(&mut [], [50, 95, 99]), [None; 3]);
    }

    #[test]
    fn hour_labels_round_trip_through_the_iso_parser() {
        let mut rng = Rng(99);
        for hour in [0, -1, 1, 24, -24 * 365 * 1969]
            .into_iter()
            .chain((0..2000).map(|_| rng.below(24 * 365 * 9000) as i64 - 24 * 365 * 1969))
        {
            let label = hour_label(hour);
            let parsed = Timestamp::parse_iso8601(&label).unwrap_or_else(|| panic!("{label}"));
            assert_eq!(parsed.secs, hour * 3600, "{label}");
        }
        assert_eq!(hour_label(0), "1970-01-01T00:00:00Z");
        assert_eq!(hour_label(475_129), "2024-03-15T01:00:00Z");
    }

    /// Figures for the report (run with `--ignored --nocapture` in release).
    #[test]
    #[ignore]
    fn timing_with_a_million_summaries() {
        use std::time::Instant;
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open(dir.path(), Options { map_size: 16 << 30, ..Options::default() }).unwrap();
        let mut rng = Rng(1);
        let started = Instant::now();
        let total = 1_000_000u64;
        for batch in 0..10 {
            let traces: Vec<(TraceId, Summary)> = (0..total / 10)
                .map(|i| {
                    let n = batch * total / 10 + i;
                    let timestamp_us = BASE_US + (n * 2_592_000) as i64; // 30 days
                                                                         // Time-ordered ids, like the UUIDv7 ids the store mints.
                    let mut id = [0u8; 16];
                    id[..8].copy_from_slice(&(timestamp_us as u64).to_be_bytes());
                    id[8..].copy_from_slice(&rng.next().to_be_bytes());
                    let mut s = random_summary(&mut rng, timestamp_us);
                    s.numbers.timestamp_us = timestamp_us;
                    s.agent_name = format!("agent-{:02}", n % 20);
                    s.run_id = None;
                    (id, s)
                })
                .collect();
            put(&store, &traces);
        }
        println!("loaded {total} summaries in {:.1?}", started.elapsed());
        let agent = filters(&[("agent_name", mp_str("agent-07"))]);
        let page = PageRequest::new("timestamp", true, 50, None).unwrap();
        let cost_page = PageRequest::new("cost_usd", true, 50, None).unwrap();
        let time = |name: &str, runs: usize, f: &mut dyn FnMut() -> usize| {
            let mut times = Vec::new();
            let mut size = 0;
            for _ in 0..runs {
                let t = Instant::now();
                size = f();
                times.push(t.elapsed());
            }
            let first = times[0];
            times.sort();
            println!(
                "{name:<40} first {first:>10.2?}  median {:>10.2?}  ({size})",
                times[runs / 2]
            );
        };
        time("query(agent_name, limit 50)", 21, &mut || {
            let out = read(&store, |txn, dbs| query(txn, dbs, &agent, &page)).unwrap();
            page_ids(&out).0.len()
        });
        time("count(agent_name)", 11, &mut || {
            read(&store, |txn, dbs| count(txn, dbs, &agent)).unwrap() as usize
        });
        time("stats()", 5, &mut || {
            read(&store, |txn, dbs| stats(txn, dbs, &Filters::default(), None)).unwrap().len()
        });
        time("count()", 5, &mut || {
            read(&store, |txn, dbs| count(txn, dbs, &Filters::default())).unwrap() as usize
        });
        time("stats(agent_name)", 5, &mut || {
            read(&store, |txn, dbs| stats(txn, dbs, &agent, None)).unwrap().len()
        });
        time("stats(group_by=agent_name)", 3, &mut || {
            read(&store, |txn, dbs| stats(txn, dbs, &Filters::default(), Some("agent_name")))
                .unwrap()
                .len()
        });
        time("query(agent_name, cost_usd desc, limit 50)", 5, &mut || {
            let out = read(&store, |txn, dbs| query(txn, dbs, &agent, &cost_page)).unwrap();
            page_ids(&out).0.len()
        });
    }
}
