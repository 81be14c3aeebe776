//! The record schema: validates one trace (msgpack from the Python layer) and rewrites it
//! as canonical msgpack in a single streaming pass.
//!
//! This runs on every `log()`, so it never builds a tree. A [`Reader`] yields tokens and a
//! `Walker` writes the output into one `Vec` as it goes: values that need no change
//! (strings once their UTF-8 is checked, whole "any" values once validated) are copied as
//! raw byte ranges; record maps reserve their header and fix the count at the end, because
//! nil fields are dropped and defaults appended. A few defaults depend on the trace's
//! `timestamp`, which may come after the spans in the map: those are written as holes and
//! filled in once the whole trace has been read.

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::error::FieldError;
use crate::ids::{self, SpanId, TraceId};
use crate::msgpack::{self, DecodeError, Reader, Token, TIMESTAMP_EXT};
use crate::redact::{self, Mode, Redaction, Scan};
use crate::time::Timestamp;

/// Bounds on what one trace may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Encoded size of one trace, checked before parsing.
    pub max_trace_bytes: usize,
    /// Container nesting of the whole trace document; the top-level map is depth 1.
    pub max_depth: usize,
    /// Entries of `spans` in one trace.
    pub max_spans: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_trace_bytes: 16 << 20, max_depth: 64, max_spans: 100_000 }
    }
}

/// One validated trace (or fragment of one) in canonical msgpack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canonical {
    /// The trace's id, as given or as minted for it.
    pub trace_id: TraceId,
    pub bytes: Vec<u8>,
    /// When the caller named the trace (only then can a fragment be sent again): a 128-bit
    /// hash of the bytes it sent for this trace, by which the writer drops exact re-sends.
    pub resend_key: Option<u128>,
}

/// Validates and canonicalizes one trace, redacting its secrets; the input must be a
/// msgpack map.
///
/// On failure returns up to 100 errors with field paths; malformed msgpack yields exactly
/// one error. A valid trace refused for its secrets (`redaction="reject"`) yields only
/// secret errors (with their `kind`). `now` is the default `timestamp` (injected so tests
/// are deterministic).
pub fn canonicalize(
    input: &[u8],
    limits: &Limits,
    redaction: &Redaction,
    now: Timestamp,
) -> Result<Canonical, Vec<FieldError>> {
    if input.len() > limits.max_trace_bytes {
        return Err(vec![too_large(String::new(), input.len(), limits)]);
    }
    let mut errors = Vec::new();
    let mut secrets = Vec::new();
    let policy = Policy { limits, redaction, now };
    match walk(input, &policy, Path::ROOT, &mut errors, &mut secrets) {
        Ok(Some(_)) if !secrets.is_empty() => Err(secrets),
        Ok(Some(trace)) => Ok(trace),
        _ => Err(errors),
    }
}

/// Validates and canonicalizes a msgpack array of traces, all or nothing. Error paths are
/// prefixed with the element's index (`[3].spans[0].name`); `max_trace_bytes` applies to
/// each element.
pub fn canonicalize_many(
    input: &[u8],
    limits: &Limits,
    redaction: &Redaction,
    now: Timestamp,
) -> Result<Vec<Canonical>, Vec<FieldError>> {
    let one = |path: String, message: String| Err(vec![FieldError::new(path, message)]);
    let mut r = Reader::new(input);
    let count = match r.read_token() {
        Ok(Token::Array(count)) => count as usize,
        Ok(other) => {
            return one(String::new(), format!("expected an array of traces, got {}", other.kind()))
        }
        Err(e) => return one(String::new(), e.to_string()),
    };
    // `count` is bounded only by the input's length: do not allocate by it.
    let mut traces = Vec::with_capacity(count.min(64));
    let mut errors = Vec::new();
    let mut secrets = Vec::new();
    let policy = Policy { limits, redaction, now };
    for i in 0..count {
        let root = Path { parent: None, seg: Seg::Index(i) };
        // Find the element's extent first: its size is checked before it is parsed.
        let start = r.position();
        if let Err(e) = r.skip_value() {
            return one(root.render(), e.to_string());
        }
        let element = r.since(start);
        if element.len() > limits.max_trace_bytes {
            errors.push(too_large(root.render(), element.len(), limits));
            if errors.len() >= MAX_ERRORS {
                break;
            }
            continue;
        }
        match walk(element, &policy, root, &mut errors, &mut secrets) {
            Ok(Some(trace)) => traces.push(trace),
            Ok(None) => {}
            Err(Stop) => break,
        }
    }
    if errors.is_empty() {
        if let Err(e) = r.expect_end() {
            return one(String::new(), e.to_string());
        }
    }
    if !errors.is_empty() {
        Err(errors)
    } else if !secrets.is_empty() {
        Err(secrets)
    } else {
        Ok(traces)
    }
}

/// What a walk applies to each trace.
struct Policy<'p> {
    limits: &'p Limits,
    redaction: &'p Redaction,
    now: Timestamp,
}

fn too_large(path: String, len: usize, limits: &Limits) -> FieldError {
    let max = limits.max_trace_bytes;
    FieldError::new(path, format!("trace is {len} bytes; the limit (max_trace_bytes) is {max}"))
}

/// Walking stops after this many errors: enough to fix a record, bounded work for garbage.
const MAX_ERRORS: usize = 100;

const TRACE_STATUSES: &[&str] = &["running", "succeeded", "failed"];
const SPAN_KINDS: &[&str] = &[
    "INTERNAL",
    "SERVER",
    "CLIENT",
    "PRODUCER",
    "CONSUMER",
    "LLM",
    "TOOL",
    "AGENT",
    "RETRIEVER",
    "EMBEDDING",
    "GUARDRAIL",
];
const STATUS_CODES: &[&str] = &["UNSET", "OK", "ERROR"];
const EVENT_STATUSES: &[&str] =
    &["started", "proposed", "pending", "succeeded", "failed", "blocked"];
/// The only keys a decision summary may have: summaries, never raw prompts or outputs.
const DECISION_KEYS: &[&str] = &[
    "proposal_summary",
    "changed_fields",
    "change_summary",
    "change_type",
    "final_action",
    "outcome_label",
    "outcome_score",
    "reason_summary",
    "redaction_version",
];
const OUT_OF_RANGE: &str = "timestamp out of range (years 1..9999)";

/// Allowed length of a string, in characters.
#[derive(Clone, Copy)]
struct Chars {
    min: usize,
    max: usize,
}

const ANY_LENGTH: Chars = Chars { min: 0, max: usize::MAX };
const NAME: Chars = Chars { min: 1, max: 256 };
const SPAN_NAME: Chars = Chars { min: 1, max: 1024 };
/// Tags, event ids and event parent ids.
const SHORT: Chars = Chars { min: 1, max: 128 };
const SUMMARY_TEXT: Chars = Chars { min: 0, max: 500 };

impl Chars {
    /// `Err(count)` when outside the range. A string has at most as many characters as
    /// bytes, and at least one if non-empty, so most strings need no counting.
    fn check(self, text: &str) -> Result<(), usize> {
        let fits = text.len() <= self.max && (self.min == 0 || (self.min == 1 && !text.is_empty()));
        if fits {
            return Ok(());
        }
        let count = text.chars().count();
        if (self.min..=self.max).contains(&count) {
            Ok(())
        } else {
            Err(count)
        }
    }
}

/// The known fields of one record type: a closed set of keys, each with a bit in a `u32`.
trait RecordField: Copy {
    const NAMES: &'static [&'static str];
    const REQUIRED: u32;
    fn from_key(key: &str) -> Option<Self>;
    fn name(self) -> &'static str;
    fn bit(self) -> u32;
}

macro_rules! record_fields {
    ($(#[$meta:meta])* $name:ident, required: [$($required:ident),*],
     { $($field:ident = $key:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum $name {
            $($field,)*
        }

        impl RecordField for $name {
            const NAMES: &'static [&'static str] = &[$($key,)*];
            const REQUIRED: u32 = 0 $(| 1 << $name::$required as u32)*;

            fn from_key(key: &str) -> Option<Self> {
                match key {
                    $($key => Some($name::$field),)*
                    _ => None,
                }
            }

            fn name(self) -> &'static str {
                match self {
                    $($name::$field => $key,)*
                }
            }

            fn bit(self) -> u32 {
                1 << self as u32
            }
        }
    };
}

record_fields! {
    /// Keys of the top-level trace map.
    TraceField, required: [AgentName], {
        TraceId = "trace_id",
        AgentName = "agent_name",
        Framework = "framework",
        RunId = "run_id",
        RequestId = "request_id",
        SessionId = "session_id",
        Input = "input",
        Output = "output",
        ToolCalls = "tool_calls",
        LatencyMs = "latency_ms",
        CostUsd = "cost_usd",
        TokenUsage = "token_usage",
        Metadata = "metadata",
        Spans = "spans",
        Events = "events",
        Timestamp = "timestamp",
        EndedAt = "ended_at",
        Status = "status",
        Tags = "tags",
        Redactions = "redactions",
    }
}

record_fields! {
    ToolField, required: [ToolName], {
        ToolName = "tool_name",
        Input = "input",
        Output = "output",
        LatencyMs = "latency_ms",
        Error = "error",
    }
}

record_fields! {
    TokenField, required: [], {
        Prompt = "prompt_tokens",
        Completion = "completion_tokens",
        Total = "total_tokens",
    }
}

record_fields! {
    SpanField, required: [Name], {
        SpanId = "span_id",
        ParentSpanId = "parent_span_id",
        Name = "name",
        Kind = "kind",
        StatusCode = "status_code",
        StatusMessage = "status_message",
        StartTime = "start_time",
        EndTime = "end_time",
        DurationMs = "duration_ms",
        Attributes = "attributes",
        Events = "events",
    }
}

record_fields! {
    SpanEventField, required: [Name], {
        Name = "name",
        Timestamp = "timestamp",
        Attributes = "attributes",
    }
}

record_fields! {
    /// Trace-level events ("Tuning Engines" shape).
    EventField, required: [], {
        EventId = "event_id",
        Type = "type",
        Status = "status",
        At = "at",
        ParentId = "parent_id",
        Metadata = "metadata",
    }
}

/// The canonical event type for a given one: a canonical name or a known alias (any case,
/// `_` or `-` for `.`), else `custom.<lowercased>`; empty means `custom.event`.
fn normalize_event_type(given: &str) -> Cow<'_, str> {
    if given.is_empty() {
        return Cow::Borrowed("custom.event");
    }
    let mut buf = [0u8; 24]; // longer than every name and alias
    if let Some(folded) = buf.get_mut(..given.len()) {
        for (out, &b) in folded.iter_mut().zip(given.as_bytes()) {
            *out = if b == b'_' || b == b'-' { b'.' } else { b.to_ascii_lowercase() };
        }
        if let Some(name) = std::str::from_utf8(folded).ok().and_then(event_type_alias) {
            return Cow::Borrowed(name);
        }
    }
    match given.get(..7) {
        Some("custom.") => Cow::Borrowed(given),
        Some(prefix) if prefix.eq_ignore_ascii_case("custom.") => {
            Cow::Owned(format!("custom.{}", &given[7..]))
        }
        _ => Cow::Owned(format!("custom.{}", given.to_lowercase())),
    }
}

/// Canonical event type for a lowercased name whose `_` and `-` became `.`.
fn event_type_alias(folded: &str) -> Option<&'static str> {
    Some(match folded {
        "model.call" | "llm" | "model" | "chat" | "completion" | "llm.call" => "model.call",
        "model.embedding" | "embedding" | "embed" => "model.embedding",
        "mcp.tool.call" | "tool" | "mcp" | "tool.call" | "function.call" => "mcp.tool_call",
        "skill.invoke" | "skill" => "skill.invoke",
        "agent.message" | "message" | "agent.msg" => "agent.message",
        "workflow.step" | "step" | "workflow" => "workflow.step",
        "policy.decision" | "policy" | "decision" => "policy.decision",
        "approval.requested" | "approval" => "approval.requested",
        "approval.approved" | "approved" => "approval.approved",
        "approval.denied" | "denied" | "rejected" => "approval.denied",
        "human.edit" | "edit" => "human.edit",
        "action.finalized" | "action" | "final" => "action.finalized",
        "outcome.recorded" | "outcome" => "outcome.recorded",
        "state.reference" | "state" => "state.reference",
        _ => return None,
    })
}

/// A field path built on the stack as the walk descends; rendered only for errors.
#[derive(Clone, Copy)]
struct Path<'p> {
    parent: Option<&'p Path<'p>>,
    seg: Seg<'p>,
}

#[derive(Clone, Copy)]
enum Seg<'p> {
    Root,
    Field(&'p str),
    Index(usize),
}

impl Path<'_> {
    const ROOT: Path<'static> = Path { parent: None, seg: Seg::Root };

    fn field<'q>(&'q self, name: &'q str) -> Path<'q> {
        Path { parent: Some(self), seg: Seg::Field(name) }
    }

    fn index(&self, i: usize) -> Path<'_> {
        Path { parent: Some(self), seg: Seg::Index(i) }
    }
}

fn push_seg(out: &mut String, seg: Seg<'_>) {
    match seg {
        Seg::Root => {}
        Seg::Field(name) => {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(name);
        }
        Seg::Index(i) => {
            let _ = write!(out, "[{i}]");
        }
    }
}

/// Where an error is, rendered to a path string only when one is reported.
trait Locate {
    fn render(&self) -> String;
}

impl Locate for Path<'_> {
    fn render(&self) -> String {
        let mut segs = Vec::new();
        let mut next = Some(self);
        while let Some(path) = next {
            segs.push(path.seg);
            next = path.parent;
        }
        let mut out = String::new();
        for seg in segs.into_iter().rev() {
            push_seg(&mut out, seg);
        }
        out
    }
}

/// An open container inside an "any" value (which is walked with an explicit stack).
struct Frame<'a> {
    /// Elements (or entries) not yet started.
    left: u32,
    /// Elements (or entries) started so far; the current one's index is `started - 1`.
    started: u32,
    map: bool,
    /// The current entry's key, for maps.
    key: &'a str,
}

/// A place inside an "any" value: the value's path plus the open containers below it.
struct Nested<'p, 'a> {
    base: &'p Path<'p>,
    frames: &'p [Frame<'a>],
}

impl Locate for Nested<'_, '_> {
    fn render(&self) -> String {
        let mut out = self.base.render();
        for frame in self.frames {
            if frame.map {
                push_seg(&mut out, Seg::Field(frame.key));
            } else {
                push_seg(&mut out, Seg::Index(frame.started.saturating_sub(1) as usize));
            }
        }
        out
    }
}

/// Stop walking: the input is malformed or the error budget is spent.
#[derive(Debug)]
struct Stop;

type Step<T> = Result<T, Stop>;

/// What reading an optional value found.
enum Got<T> {
    /// Nil: "not set".
    Absent,
    /// Wrong; already reported.
    Invalid,
    Value(T),
}

impl<T> Got<T> {
    fn entry(&self) -> Entry {
        match self {
            Got::Absent => Entry::Absent,
            Got::Invalid => Entry::Invalid,
            Got::Value(_) => Entry::Written,
        }
    }
}

/// What a field handler did with one entry of a record map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Written,
    /// Valid, but written later (or replaced) by the record's defaults.
    Held,
    Invalid,
    /// Nil: the key is dropped as if absent.
    Absent,
}

/// What the whole-trace checks and deferred defaults need to know about a span.
#[derive(Default)]
struct SpanInfo {
    id: Option<SpanId>,
    parent: Option<SpanId>,
    start: Option<Timestamp>,
    end: Option<Timestamp>,
    duration: Option<f64>,
}

/// An output position whose value depends on the trace's timestamp, not known yet.
struct Hole {
    at: usize,
    value: Deferred,
}

enum Deferred {
    TraceTimestamp,
    /// The span's `start_time`, or the trace's timestamp if it has none.
    SpanStart(usize),
    /// Milliseconds from the span's (default) start to its `end_time`.
    SpanDuration(usize),
}

/// A string (or a value under a secret key) of the input to replace when it is copied out.
struct Patch {
    /// Input offsets of the whole token or value, header included.
    from: usize,
    to: usize,
    /// The replacement, encoded.
    bytes: Vec<u8>,
}

struct Walker<'a, 'e> {
    input: &'a [u8],
    r: Reader<'a>,
    out: Vec<u8>,
    limits: &'e Limits,
    now: Timestamp,
    /// The root of every path: empty, or `[i]` in `canonicalize_many`.
    root: Path<'static>,
    /// Shared by all traces of one `canonicalize_many` call.
    errors: &'e mut Vec<FieldError>,
    /// `errors.len()` when this trace started.
    first_error: usize,
    trace_id: Option<TraceId>,
    /// Whether `trace_id` was minted here rather than given by the caller.
    minted_id: bool,
    /// The trace's `timestamp` once read.
    trace_ts: Option<Timestamp>,
    /// Secrets redacted from this trace: the one source of the `redactions` field.
    redactions: u64,
    /// Finds the secrets; `None` when redaction is off.
    scan: Option<Scan<'e>>,
    /// Refuse secrets rather than redact them.
    reject: bool,
    /// Secrets found in `reject` mode; shared like `errors`.
    secrets: &'e mut Vec<FieldError>,
    /// Where the last token read starts.
    token_at: usize,
    /// The input up to here is inside a value redacted whole: nothing in it is scanned.
    quiet_until: usize,
    /// By position; applied by `copy_raw`.
    patches: Vec<Patch>,
    next_patch: usize,
    spans: Vec<SpanInfo>,
    event_ids: Vec<(&'a str, usize)>,
    holes: Vec<Hole>,
    /// Reused by every "any" value.
    any_stack: Vec<Frame<'a>>,
}

/// Walks one trace. `Ok(None)`: it has errors (in `errors`); `Err(Stop)`: stop everything.
/// Secrets found in `reject` mode go to `secrets`; the trace is still returned.
fn walk<'e>(
    input: &[u8],
    policy: &Policy<'e>,
    root: Path<'static>,
    errors: &mut Vec<FieldError>,
    secrets: &mut Vec<FieldError>,
) -> Step<Option<Canonical>> {
    let first_error = errors.len();
    let mut w = Walker {
        input,
        r: Reader::new(input),
        // Room for the appended defaults too (about 60 bytes per span), so that the
        // output is allocated once.
        out: Vec::with_capacity(input.len() + input.len() / 4 + 256),
        limits: policy.limits,
        now: policy.now.whole_micros(),
        root,
        errors,
        first_error,
        trace_id: None,
        minted_id: false,
        trace_ts: None,
        redactions: 0,
        scan: policy.redaction.scan(input),
        reject: policy.redaction.mode() == Mode::Reject,
        secrets,
        token_at: 0,
        quiet_until: 0,
        patches: Vec::new(),
        next_patch: 0,
        spans: Vec::new(),
        event_ids: Vec::new(),
        holes: Vec::new(),
        any_stack: Vec::new(),
    };
    w.trace()?;
    if let Err(e) = w.r.expect_end() {
        return Err(w.malformed(&root, e));
    }
    Ok(match w.trace_id {
        Some(trace_id) if w.errors.len() == first_error => {
            let resend_key = (!w.minted_id).then(|| xxhash_rust::xxh3::xxh3_128(input));
            Some(Canonical { trace_id, bytes: w.out, resend_key })
        }
        _ => None,
    })
}

impl<'a> Walker<'a, '_> {
    // ---- errors and reading ----

    #[cold]
    fn error(&mut self, at: &impl Locate, message: impl Into<String>) -> Step<()> {
        self.errors.push(FieldError::new(at.render(), message));
        if self.errors.len() >= MAX_ERRORS {
            Err(Stop)
        } else {
            Ok(())
        }
    }

    /// Malformed msgpack ends the walk with this one error: nothing after it can be trusted.
    #[cold]
    fn malformed(&mut self, at: &impl Locate, e: DecodeError) -> Stop {
        self.errors.clear();
        self.errors.push(FieldError::new(at.render(), e.to_string()));
        Stop
    }

    #[inline(always)]
    fn read(&mut self, at: &impl Locate) -> Step<Token<'a>> {
        self.token_at = self.r.position();
        self.r.read_token().map_err(|e| self.malformed(at, e))
    }

    fn skip_contents(&mut self, at: &impl Locate, token: &Token<'a>) -> Step<()> {
        self.r.skip_contents(token).map_err(|e| self.malformed(at, e))
    }

    fn skip_value(&mut self, at: &impl Locate) -> Step<()> {
        self.r.skip_value().map_err(|e| self.malformed(at, e))
    }

    /// Reports a value of the wrong type and skips the rest of it.
    #[cold]
    fn wrong_type(&mut self, at: &impl Locate, expected: &str, got: Token<'a>) -> Step<()> {
        self.error(at, format!("expected {expected}, got {}", got.kind()))?;
        self.skip_contents(at, &got)
    }

    /// Whether a container may be entered at `level` (the trace map is level 1); past the
    /// depth limit it is reported and skipped.
    fn open(&mut self, at: &impl Locate, level: usize, container: &Token<'a>) -> Step<bool> {
        let max = self.limits.max_depth;
        if level <= max {
            return Ok(true);
        }
        self.error(at, format!("nested deeper than the limit of {max} levels"))?;
        self.skip_contents(at, container)?;
        Ok(false)
    }

    /// The entry count of a record map, or `None` (reported and skipped) for anything else.
    fn expect_map(
        &mut self,
        token: Token<'a>,
        at: &impl Locate,
        level: usize,
    ) -> Step<Option<u32>> {
        match token {
            Token::Map(n) => Ok(self.open(at, level, &token)?.then_some(n)),
            other => {
                self.wrong_type(at, "a map", other)?;
                Ok(None)
            }
        }
    }

    /// Reads a map key, which must be a UTF-8 string; otherwise reports it at the map's
    /// path and skips its value.
    #[inline(always)]
    fn map_key(&mut self, map: &impl Locate) -> Step<Option<&'a str>> {
        let problem = match self.read(map)? {
            Token::Str(bytes) => match utf8(bytes) {
                Some(key) => return Ok(Some(key)),
                None => Cow::Borrowed("invalid UTF-8 in a map key"),
            },
            other => {
                self.skip_contents(map, &other)?;
                Cow::Owned(format!("map keys must be strings, got {}", other.kind()))
            }
        };
        self.error(map, problem)?;
        self.skip_value(map)?;
        Ok(None)
    }

    /// Appended defaults make the output larger than the input: for a plausible trace by
    /// a few percent, but an array of empty events (1 byte each, ~60 bytes canonical) would
    /// multiply it. Past twice `max_trace_bytes` (plus 64 KiB) the walk stops.
    fn check_growth(&mut self, path: &Path<'_>) -> Step<()> {
        let max = self.limits.max_trace_bytes.saturating_mul(2).saturating_add(64 << 10);
        if self.out.len() > max {
            return self.too_much_growth(path, max);
        }
        Ok(())
    }

    #[cold]
    fn too_much_growth(&mut self, path: &Path<'_>, max: usize) -> Step<()> {
        self.error(path, format!("the canonical trace grows past {max} bytes"))?;
        Err(Stop)
    }

    // ---- writing ----

    /// Writes one of our own field names (all shorter than 32 bytes: a one-byte header).
    fn write_key(&mut self, key: &'static str) {
        debug_assert!(key.len() < 32);
        self.out.push(0xa0 | key.len() as u8);
        self.out.extend_from_slice(key.as_bytes());
    }

    /// Copies the raw bytes of the value read since `start`, with its redactions.
    #[inline]
    fn copy_raw(&mut self, start: usize) {
        if self.next_patch == self.patches.len() {
            self.out.extend_from_slice(self.r.since(start));
        } else {
            self.copy_patched(start);
        }
    }

    #[cold]
    fn copy_patched(&mut self, start: usize) {
        let end = self.r.position();
        let mut from = start;
        while let Some(patch) = self.patches.get(self.next_patch).filter(|p| p.from < end) {
            debug_assert!(from <= patch.from, "patches are applied in input order");
            self.out.extend_from_slice(&self.input[from..patch.from]);
            self.out.extend_from_slice(&patch.bytes);
            from = patch.to;
            self.next_patch += 1;
        }
        self.out.extend_from_slice(&self.input[from..end]);
    }

    // ---- secrets ----

    /// Redacts (or, rejecting, reports) the secrets in `text`, the string just read.
    #[inline]
    fn scan_text(&mut self, text: &str, at: &impl Locate) {
        let token_at = self.token_at;
        let Some(scan) = self.scan.as_mut() else { return };
        if token_at < self.quiet_until {
            return;
        }
        let end = self.r.position();
        if let Some(found) = scan.text(end - text.len(), text) {
            if self.reject {
                for kind in found.kinds {
                    Self::report_secret(self.secrets, at, kind);
                }
            } else {
                let mut bytes = Vec::with_capacity(found.text.len() + 5);
                msgpack::write_str(&mut bytes, &found.text);
                self.patch(token_at, end, bytes);
            }
        }
    }

    /// Whether the value under this key of an "any" map is to be redacted whole.
    #[inline]
    fn is_secret_key(&self, key: &str) -> bool {
        self.scan.as_ref().is_some_and(|scan| scan.is_secret_key(key))
            && self.r.position() >= self.quiet_until
    }

    /// Redacts (or reports) the whole value under a secret-looking key, whose first token
    /// (at `from`) was just read. Nil, empty and already redacted strings stay.
    fn redact_value(&mut self, from: usize, first: &Token<'a>, at: &impl Locate) {
        match first {
            Token::Nil => return,
            Token::Str(b) if b.is_empty() || *b == redact::REDACTED.as_bytes() => return,
            _ => {}
        }
        // Its end; were the rest malformed, the walk that follows reports it.
        let mut rest = self.r.clone();
        if rest.skip_contents(first).is_err() {
            return;
        }
        let to = rest.position();
        if self.reject {
            Self::report_secret(self.secrets, at, redact::KEY_NAME);
        } else {
            let mut bytes = Vec::with_capacity(redact::REDACTED.len() + 1);
            msgpack::write_str(&mut bytes, redact::REDACTED);
            self.patch(from, to, bytes);
        }
        self.quiet_until = to;
    }

    fn patch(&mut self, from: usize, to: usize, bytes: Vec<u8>) {
        self.patches.push(Patch { from, to, bytes });
        self.redactions += 1;
    }

    #[cold]
    fn report_secret(secrets: &mut Vec<FieldError>, at: &impl Locate, kind: &str) {
        if secrets.len() < MAX_ERRORS {
            secrets.push(FieldError::secret(at.render(), kind));
        }
    }

    fn defer(&mut self, value: Deferred) {
        self.holes.push(Hole { at: self.out.len(), value });
    }

    fn write_trace_timestamp(&mut self) {
        match self.trace_ts {
            Some(ts) => ts.write_ext(&mut self.out),
            None => self.defer(Deferred::TraceTimestamp),
        }
    }

    fn write_minted_id(&mut self, key: &'static str, id: &[u8]) {
        self.write_key(key);
        msgpack::write_str(&mut self.out, &ids::to_hex(id));
    }

    // ---- records ----

    /// Walks the `n` entries of a record map, handing each known field to `handle`, then
    /// reports missing required fields. Returns the bits of the fields written.
    ///
    /// Writes each field's key itself, before `handle` writes the value, and takes it back
    /// unless the value was written: handlers deal in values only.
    fn entries<F: RecordField>(
        &mut self,
        n: u32,
        path: &Path<'_>,
        mut handle: impl FnMut(&mut Self, F, &Path<'_>) -> Step<Entry>,
    ) -> Step<u32> {
        let (mut seen, mut present, mut written) = (0, 0, 0);
        for _ in 0..n {
            let Some(field) = self.record_key::<F>(path, seen)? else { continue };
            seen |= field.bit();
            let key_at = self.out.len();
            self.write_key(field.name());
            let entry = handle(self, field, &path.field(field.name()))?;
            if entry != Entry::Written {
                self.out.truncate(key_at);
            }
            match entry {
                Entry::Written => written |= field.bit(),
                Entry::Held | Entry::Invalid => present |= field.bit(),
                Entry::Absent => {}
            }
        }
        let missing = F::REQUIRED & !(present | written);
        if missing != 0 {
            for (i, name) in F::NAMES.iter().enumerate() {
                if missing & (1 << i) != 0 {
                    self.error(&path.field(name), "required field is missing")?;
                }
            }
        }
        Ok(written)
    }

    /// Reads a record map's key as a known field, reporting (and skipping the value of)
    /// keys that are not strings, unknown, or repeated.
    fn record_key<F: RecordField>(&mut self, path: &Path<'_>, seen: u32) -> Step<Option<F>> {
        let Some(key) = self.map_key(path)? else { return Ok(None) };
        let problem = match F::from_key(key) {
            Some(field) if seen & field.bit() == 0 => return Ok(Some(field)),
            Some(_) => Cow::Borrowed("duplicate field"),
            None => Cow::Owned(format!("unknown field; expected one of: {}", F::NAMES.join(", "))),
        };
        let at = path.field(key);
        self.error(&at, problem)?;
        self.skip_value(&at)?;
        Ok(None)
    }

    /// An array field whose elements `each` reads (with their path, level and index).
    fn array_field(
        &mut self,
        path: &Path<'_>,
        level: usize,
        max_items: usize,
        mut each: impl FnMut(&mut Self, &Path<'_>, usize, usize) -> Step<()>,
    ) -> Step<Entry> {
        let token = self.read(path)?;
        let n = match token {
            Token::Nil => return Ok(Entry::Absent),
            Token::Array(n) => n,
            other => {
                self.wrong_type(path, "an array", other)?;
                return Ok(Entry::Invalid);
            }
        };
        if !self.open(path, level, &token)? {
            return Ok(Entry::Invalid);
        }
        if n as usize > max_items {
            self.error(path, format!("at most {max_items} entries allowed, got {n}"))?;
            self.skip_contents(path, &token)?;
            return Ok(Entry::Invalid);
        }
        msgpack::write_array_header(&mut self.out, n);
        for i in 0..n as usize {
            each(self, &path.index(i), level + 1, i)?;
            self.check_growth(path)?;
        }
        Ok(Entry::Written)
    }

    fn trace(&mut self) -> Step<()> {
        let root = self.root;
        let token = self.read(&root)?;
        let Some(n) = self.expect_map(token, &root, 1)? else { return Ok(()) };
        // Entries written: those given (minus nils) plus up to three appended defaults.
        let most = (n as usize).saturating_add(3).min(TraceField::NAMES.len());
        let header = msgpack::begin_map(&mut self.out, most);
        let written = self.entries(n, &root, Self::trace_field)?;
        let mut count = written.count_ones() as usize;
        if written & TraceField::TraceId.bit() == 0 {
            let id = ids::new_trace_id();
            self.trace_id = Some(id);
            self.minted_id = true;
            self.write_minted_id("trace_id", &id);
            count += 1;
        }
        let trace_ts = match self.trace_ts {
            Some(ts) => ts,
            None => {
                self.write_key("timestamp");
                self.now.write_ext(&mut self.out);
                count += 1;
                self.now
            }
        };
        self.trace_ts = Some(trace_ts);
        self.write_key("redactions");
        msgpack::write_uint(&mut self.out, self.redactions);
        count += 1;

        self.check_spans(trace_ts)?;
        self.check_event_ids()?;
        // Hole positions assume the map header keeps its reserved width: fill them first.
        if self.errors.len() == self.first_error {
            self.fill_holes(trace_ts);
        }
        msgpack::finish_map(&mut self.out, header, count);
        Ok(())
    }

    fn trace_field(&mut self, field: TraceField, path: &Path<'_>) -> Step<Entry> {
        use TraceField as F;
        const LEVEL: usize = 2;
        Ok(match field {
            F::TraceId => {
                let got = self.hex_id::<16>(path)?;
                if let Got::Value(id) = got {
                    self.trace_id = Some(id);
                }
                got.entry()
            }
            F::AgentName | F::Framework | F::RunId | F::RequestId | F::SessionId => {
                self.copy_str(path, NAME)?.entry()
            }
            F::Input | F::Output => self.copy_text(path, ANY_LENGTH)?.entry(),
            F::ToolCalls => {
                self.array_field(path, LEVEL, usize::MAX, |w, p, level, _| w.tool_call(p, level))?
            }
            F::LatencyMs | F::CostUsd => self.number_field(path)?.entry(),
            F::TokenUsage => self.token_usage(path, LEVEL)?,
            F::Metadata => self.any_map(path, LEVEL)?,
            F::Spans => {
                let max = self.limits.max_spans;
                // Peek at the length to size the per-span records once (for typical traces).
                if let Ok(Token::Array(n)) = self.r.clone().read_token() {
                    self.spans.reserve((n as usize).min(max).min(1024));
                }
                self.array_field(path, LEVEL, max, Self::span)?
            }
            F::Events => self.array_field(path, LEVEL, usize::MAX, Self::event)?,
            F::Timestamp => {
                let got = self.timestamp_field(path)?;
                if let Got::Value(ts) = got {
                    self.trace_ts = Some(ts);
                }
                got.entry()
            }
            F::EndedAt => self.timestamp_field(path)?.entry(),
            F::Status => self.choice(path, TRACE_STATUSES, false)?,
            F::Tags => self.array_field(path, LEVEL, usize::MAX, |w, p, _, _| w.tag(p))?,
            // Set by the store, never by the caller: checked, then replaced.
            F::Redactions => match self.count(path)? {
                Got::Value(_) => Entry::Held,
                got => got.entry(),
            },
        })
    }

    fn tag(&mut self, path: &Path<'_>) -> Step<()> {
        let start = self.r.position();
        match self.string(path, SHORT)? {
            Got::Value(_) => self.out.extend_from_slice(self.r.since(start)),
            Got::Absent => self.error(path, "expected a string, got nil")?,
            Got::Invalid => {}
        }
        Ok(())
    }

    fn tool_call(&mut self, path: &Path<'_>, level: usize) -> Step<()> {
        let token = self.read(path)?;
        let Some(n) = self.expect_map(token, path, level)? else { return Ok(()) };
        let header = msgpack::begin_map(&mut self.out, ToolField::NAMES.len());
        let written = self.entries::<ToolField>(n, path, |w, field, p| {
            Ok(match field {
                ToolField::ToolName => w.copy_str(p, NAME)?.entry(),
                ToolField::Input | ToolField::Output => w.any_field(p, level + 1)?,
                ToolField::LatencyMs => w.number_field(p)?.entry(),
                ToolField::Error => w.copy_text(p, ANY_LENGTH)?.entry(),
            })
        })?;
        msgpack::finish_map(&mut self.out, header, written.count_ones() as usize);
        Ok(())
    }

    /// Token counts; `total_tokens`, when absent, is the sum of the counts given.
    fn token_usage(&mut self, path: &Path<'_>, level: usize) -> Step<Entry> {
        let token = self.read(path)?;
        if token == Token::Nil {
            return Ok(Entry::Absent);
        }
        let Some(n) = self.expect_map(token, path, level)? else { return Ok(Entry::Invalid) };
        let header = msgpack::begin_map(&mut self.out, TokenField::NAMES.len());
        let mut sum = Some(0u64);
        let written = self.entries::<TokenField>(n, path, |w, field, p| {
            Ok(match w.count(p)? {
                Got::Value(count) => {
                    msgpack::write_uint(&mut w.out, count);
                    if field != TokenField::Total {
                        sum = sum.and_then(|s| s.checked_add(count));
                    }
                    Entry::Written
                }
                got => got.entry(),
            })
        })?;
        let mut count = written.count_ones() as usize;
        let parts = TokenField::Prompt.bit() | TokenField::Completion.bit();
        if written & TokenField::Total.bit() == 0 && written & parts != 0 {
            match sum {
                Some(total) => {
                    self.write_key("total_tokens");
                    msgpack::write_uint(&mut self.out, total);
                    count += 1;
                }
                None => {
                    self.error(&path.field("total_tokens"), "the sum of the counts overflows")?
                }
            }
        }
        msgpack::finish_map(&mut self.out, header, count);
        Ok(Entry::Written)
    }

    fn span(&mut self, path: &Path<'_>, level: usize, index: usize) -> Step<()> {
        let mut info = SpanInfo::default();
        let token = self.read(path)?;
        if let Some(n) = self.expect_map(token, path, level)? {
            let header = msgpack::begin_map(&mut self.out, SpanField::NAMES.len());
            let written = self.entries(n, path, |w, field, p| {
                w.span_field(field, p, level + 1, index, &mut info)
            })?;
            let appended = self.span_defaults(written, index, &mut info);
            msgpack::finish_map(&mut self.out, header, written.count_ones() as usize + appended);
        }
        // One entry per element, even invalid ones, so `spans[i]` stays span `i`.
        self.spans.push(info);
        Ok(())
    }

    fn span_field(
        &mut self,
        field: SpanField,
        path: &Path<'_>,
        level: usize,
        index: usize,
        info: &mut SpanInfo,
    ) -> Step<Entry> {
        use SpanField as F;
        Ok(match field {
            F::SpanId => {
                let got = self.hex_id::<8>(path)?;
                if let Got::Value(id) = got {
                    info.id = Some(id);
                }
                got.entry()
            }
            F::ParentSpanId => {
                let got = self.hex_id::<8>(path)?;
                if let Got::Value(id) = got {
                    info.parent = Some(id);
                }
                got.entry()
            }
            F::Name => self.copy_text(path, SPAN_NAME)?.entry(),
            F::Kind => self.choice(path, SPAN_KINDS, true)?,
            F::StatusCode => self.choice(path, STATUS_CODES, true)?,
            F::StatusMessage => self.copy_text(path, ANY_LENGTH)?.entry(),
            F::StartTime => {
                let got = self.timestamp_field(path)?;
                if let Got::Value(ts) = got {
                    info.start = Some(ts);
                }
                got.entry()
            }
            F::EndTime => {
                let got = self.timestamp_field(path)?;
                if let Got::Value(ts) = got {
                    info.end = Some(ts);
                }
                got.entry()
            }
            // Written with the defaults: derived from start and end when both are known.
            F::DurationMs => match self.number(path)? {
                Got::Value(ms) => {
                    info.duration = Some(ms);
                    Entry::Held
                }
                got => got.entry(),
            },
            F::Attributes => self.any_map(path, level)?,
            F::Events => {
                let start = info.start;
                self.array_field(path, level, usize::MAX, |w, p, level, _| {
                    w.span_event(p, level, index, start)
                })?
            }
        })
    }

    /// Appends the defaults of a span's unset fields; returns how many entries it wrote.
    fn span_defaults(&mut self, written: u32, index: usize, info: &mut SpanInfo) -> usize {
        let unset = |field: SpanField| written & field.bit() == 0;
        let mut appended = 0;
        if unset(SpanField::SpanId) {
            let id = ids::new_span_id();
            info.id = Some(id);
            self.write_minted_id("span_id", &id);
            appended += 1;
        }
        for (field, default) in [(SpanField::Kind, "INTERNAL"), (SpanField::StatusCode, "UNSET")] {
            if unset(field) {
                self.write_key(field.name());
                msgpack::write_str(&mut self.out, default);
                appended += 1;
            }
        }
        if unset(SpanField::StartTime) {
            self.write_key("start_time");
            self.write_trace_timestamp();
            appended += 1;
        }
        let duration_key = SpanField::DurationMs.name();
        match (info.start.or(self.trace_ts), info.end) {
            (Some(start), Some(end)) => {
                self.write_key(duration_key);
                msgpack::write_f64(&mut self.out, Timestamp::millis_between(start, end));
                appended += 1;
            }
            (None, Some(_)) => {
                self.write_key(duration_key);
                self.defer(Deferred::SpanDuration(index));
                appended += 1;
            }
            (_, None) => {
                if let Some(ms) = info.duration {
                    self.write_key(duration_key);
                    msgpack::write_f64(&mut self.out, ms);
                    appended += 1;
                }
            }
        }
        appended
    }

    fn span_event(
        &mut self,
        path: &Path<'_>,
        level: usize,
        span: usize,
        span_start: Option<Timestamp>,
    ) -> Step<()> {
        let token = self.read(path)?;
        let Some(n) = self.expect_map(token, path, level)? else { return Ok(()) };
        let header = msgpack::begin_map(&mut self.out, SpanEventField::NAMES.len());
        let written = self.entries::<SpanEventField>(n, path, |w, field, p| {
            Ok(match field {
                SpanEventField::Name => w.copy_text(p, SPAN_NAME)?.entry(),
                SpanEventField::Timestamp => w.timestamp_field(p)?.entry(),
                SpanEventField::Attributes => w.any_map(p, level + 1)?,
            })
        })?;
        let mut count = written.count_ones() as usize;
        if written & SpanEventField::Timestamp.bit() == 0 {
            self.write_key("timestamp");
            match span_start {
                Some(ts) => ts.write_ext(&mut self.out),
                // The span's start_time may still come later in its map.
                None => self.defer(Deferred::SpanStart(span)),
            }
            count += 1;
        }
        msgpack::finish_map(&mut self.out, header, count);
        Ok(())
    }

    fn event(&mut self, path: &Path<'_>, level: usize, index: usize) -> Step<()> {
        let token = self.read(path)?;
        let Some(n) = self.expect_map(token, path, level)? else { return Ok(()) };
        let header = msgpack::begin_map(&mut self.out, EventField::NAMES.len());
        let written =
            self.entries(n, path, |w, field, p| w.event_field(field, p, level + 1, index))?;
        let unset = |field: EventField| written & field.bit() == 0;
        let mut count = written.count_ones() as usize;
        if unset(EventField::EventId) {
            self.write_minted_id("event_id", &ids::new_span_id());
            count += 1;
        }
        if unset(EventField::Type) {
            self.write_key("type");
            msgpack::write_str(&mut self.out, "custom.event");
            count += 1;
        }
        if unset(EventField::At) {
            self.write_key("at");
            self.write_trace_timestamp();
            count += 1;
        }
        msgpack::finish_map(&mut self.out, header, count);
        Ok(())
    }

    fn event_field(
        &mut self,
        field: EventField,
        path: &Path<'_>,
        level: usize,
        index: usize,
    ) -> Step<Entry> {
        use EventField as F;
        Ok(match field {
            F::EventId => {
                let got = self.copy_str(path, SHORT)?;
                if let Got::Value(id) = got {
                    self.event_ids.push((id, index));
                }
                got.entry()
            }
            F::Type => match self.string(path, ANY_LENGTH)? {
                Got::Value(given) => {
                    msgpack::write_str(&mut self.out, &normalize_event_type(given));
                    Entry::Written
                }
                got => got.entry(),
            },
            F::Status => self.choice(path, EVENT_STATUSES, false)?,
            F::At => self.timestamp_field(path)?.entry(),
            F::ParentId => self.copy_str(path, SHORT)?.entry(),
            F::Metadata => self.event_metadata(path, level)?,
        })
    }

    /// Event metadata: any map, except that `decision` must be a decision summary.
    fn event_metadata(&mut self, path: &Path<'_>, level: usize) -> Step<Entry> {
        let start = self.r.position();
        let token = self.read(path)?;
        if token == Token::Nil {
            return Ok(Entry::Absent);
        }
        let Some(n) = self.expect_map(token, path, level)? else { return Ok(Entry::Invalid) };
        for _ in 0..n {
            let Some(key) = self.map_key(path)? else { continue };
            let at = path.field(key);
            let secret = key != "decision" && self.is_secret_key(key);
            let from = self.r.position();
            let value = self.read(&at)?;
            if secret {
                self.redact_value(from, &value, &at);
            }
            if key == "decision" {
                self.decision(value, &at, level + 1)?;
            } else {
                self.any(value, &at, level + 1)?;
            }
        }
        self.copy_raw(start);
        Ok(Entry::Written)
    }

    /// A decision summary: a flat map of allow-listed keys to short texts, numbers, bools,
    /// nil or lists of short texts, so that no raw prompt or output slips into an event.
    fn decision(&mut self, token: Token<'a>, path: &Path<'_>, level: usize) -> Step<()> {
        let Some(n) = self.expect_map(token, path, level)? else { return Ok(()) };
        for _ in 0..n {
            let Some(key) = self.map_key(path)? else { continue };
            let at = path.field(key);
            if !DECISION_KEYS.contains(&key) {
                let allowed = DECISION_KEYS.join(", ");
                self.error(
                    &at,
                    format!("not allowed in a decision summary; allowed keys: {allowed}"),
                )?;
                self.skip_value(&at)?;
                continue;
            }
            match self.read(&at)? {
                Token::Nil | Token::Bool(_) | Token::UInt(_) | Token::NegInt(_) => {}
                Token::Float(f) if f.is_finite() => {}
                Token::Float(f) => self.error(&at, format!("must be a finite number, got {f}"))?,
                Token::Str(bytes) => self.summary_text(bytes, &at)?,
                list @ Token::Array(items) => {
                    if self.open(&at, level + 1, &list)? {
                        for i in 0..items as usize {
                            let item = at.index(i);
                            match self.read(&item)? {
                                Token::Str(bytes) => self.summary_text(bytes, &item)?,
                                other => self.wrong_type(&item, "a string", other)?,
                            }
                        }
                    }
                }
                other => {
                    self.wrong_type(&at, "a string, number, bool, nil or array of strings", other)?
                }
            }
        }
        Ok(())
    }

    /// A decision summary's text, just read: checked, and scanned for secrets.
    fn summary_text(&mut self, bytes: &[u8], path: &Path<'_>) -> Step<()> {
        let Some(text) = utf8(bytes) else { return self.error(path, "invalid UTF-8") };
        if let Err(count) = SUMMARY_TEXT.check(text) {
            let max = SUMMARY_TEXT.max;
            return self.error(path, format!("must be at most {max} characters, got {count}"));
        }
        self.scan_text(text, path);
        Ok(())
    }

    // ---- values ----

    /// A string, checked for UTF-8 and length.
    #[inline(always)]
    fn string(&mut self, path: &Path<'_>, chars: Chars) -> Step<Got<&'a str>> {
        let bytes = match self.read(path)? {
            Token::Str(bytes) => bytes,
            Token::Nil => return Ok(Got::Absent),
            other => {
                self.wrong_type(path, "a string", other)?;
                return Ok(Got::Invalid);
            }
        };
        let Some(text) = utf8(bytes) else {
            self.error(path, "invalid UTF-8")?;
            return Ok(Got::Invalid);
        };
        if let Err(count) = chars.check(text) {
            let Chars { min, max } = chars;
            self.error(path, format!("must be {min}..{max} characters, got {count}"))?;
            return Ok(Got::Invalid);
        }
        Ok(Got::Value(text))
    }

    /// A string field, copied unchanged when valid.
    fn copy_str(&mut self, path: &Path<'_>, chars: Chars) -> Step<Got<&'a str>> {
        let start = self.r.position();
        let got = self.string(path, chars)?;
        if let Got::Value(_) = got {
            self.copy_raw(start);
        }
        Ok(got)
    }

    /// A free-text string field: copied with its secrets redacted when valid.
    fn copy_text(&mut self, path: &Path<'_>, chars: Chars) -> Step<Got<&'a str>> {
        let start = self.r.position();
        let got = self.string(path, chars)?;
        if let Got::Value(text) = got {
            self.scan_text(text, path);
            self.copy_raw(start);
        }
        Ok(got)
    }

    /// An id in lowercase hex (`N` bytes, not all zero), copied unchanged when valid.
    fn hex_id<const N: usize>(&mut self, path: &Path<'_>) -> Step<Got<[u8; N]>> {
        let start = self.r.position();
        Ok(match self.string(path, ANY_LENGTH)? {
            Got::Value(text) => match ids::parse_hex::<N>(text) {
                Some(id) => {
                    self.copy_raw(start);
                    Got::Value(id)
                }
                None => {
                    let digits = 2 * N;
                    let message =
                        format!("must be {digits} lowercase hex characters (not all zero)");
                    self.error(path, message)?;
                    Got::Invalid
                }
            },
            Got::Absent => Got::Absent,
            Got::Invalid => Got::Invalid,
        })
    }

    /// One of a fixed set of words, written in its canonical spelling.
    fn choice(
        &mut self,
        path: &Path<'_>,
        words: &'static [&'static str],
        ignore_case: bool,
    ) -> Step<Entry> {
        let got = self.string(path, ANY_LENGTH)?;
        let Got::Value(given) = got else { return Ok(got.entry()) };
        let found = words.iter().find(|w| {
            if ignore_case {
                w.eq_ignore_ascii_case(given)
            } else {
                **w == given
            }
        });
        match found {
            Some(word) => {
                msgpack::write_str(&mut self.out, word);
                Ok(Entry::Written)
            }
            None => {
                let message = format!("must be one of: {}; got {}", words.join(", "), quote(given));
                self.error(path, message)?;
                Ok(Entry::Invalid)
            }
        }
    }

    /// A finite number >= 0 (int or float).
    fn number(&mut self, path: &Path<'_>) -> Step<Got<f64>> {
        Ok(match self.read(path)? {
            Token::Nil => Got::Absent,
            Token::UInt(n) => Got::Value(n as f64),
            // `+ 0.0` turns -0.0 into 0.0.
            Token::Float(f) if f.is_finite() && f >= 0.0 => Got::Value(f + 0.0),
            Token::Float(_) | Token::NegInt(_) => {
                self.error(path, "must be a finite number >= 0")?;
                Got::Invalid
            }
            other => {
                self.wrong_type(path, "a number", other)?;
                Got::Invalid
            }
        })
    }

    /// A number field, always written as float64.
    fn number_field(&mut self, path: &Path<'_>) -> Step<Got<f64>> {
        let got = self.number(path)?;
        if let Got::Value(n) = got {
            msgpack::write_f64(&mut self.out, n);
        }
        Ok(got)
    }

    /// A non-negative integer (a token count).
    fn count(&mut self, path: &Path<'_>) -> Step<Got<u64>> {
        Ok(match self.read(path)? {
            Token::Nil => Got::Absent,
            Token::UInt(n) => Got::Value(n),
            Token::NegInt(n) => {
                self.error(path, format!("must be a non-negative integer, got {n}"))?;
                Got::Invalid
            }
            other => {
                self.wrong_type(path, "a non-negative integer", other)?;
                Got::Invalid
            }
        })
    }

    /// A datetime (timestamp extension), ISO-8601 string or epoch seconds.
    fn timestamp(&mut self, path: &Path<'_>) -> Step<Got<Timestamp>> {
        let parsed = match self.read(path)? {
            Token::Nil => return Ok(Got::Absent),
            Token::Ext(TIMESTAMP_EXT, payload) => {
                Timestamp::decode_ext(payload).ok_or(Cow::Borrowed("invalid timestamp extension"))
            }
            Token::Str(bytes) => match utf8(bytes) {
                Some(text) => Timestamp::parse_iso8601(text).ok_or_else(|| {
                    Cow::Owned(format!("expected an ISO-8601 timestamp, got {}", quote(text)))
                }),
                None => Err(Cow::Borrowed("invalid UTF-8")),
            },
            Token::UInt(secs) => i64::try_from(secs)
                .map(|secs| Timestamp { secs, nanos: 0 })
                .map_err(|_| Cow::Borrowed(OUT_OF_RANGE)),
            Token::NegInt(secs) => Ok(Timestamp { secs, nanos: 0 }),
            Token::Float(secs) if !secs.is_finite() => {
                Err(Cow::Owned(format!("must be a finite number, got {secs}")))
            }
            Token::Float(secs) => {
                Timestamp::from_epoch_seconds(secs).ok_or(Cow::Borrowed(OUT_OF_RANGE))
            }
            other => {
                let expected = "a timestamp (datetime, ISO-8601 string or epoch seconds)";
                self.wrong_type(path, expected, other)?;
                return Ok(Got::Invalid);
            }
        };
        let problem = match parsed {
            Ok(ts) if ts.in_range() => return Ok(Got::Value(ts.whole_micros())),
            Ok(_) => Cow::Borrowed(OUT_OF_RANGE),
            Err(problem) => problem,
        };
        self.error(path, problem)?;
        Ok(Got::Invalid)
    }

    /// A timestamp field, always written as a timestamp extension.
    fn timestamp_field(&mut self, path: &Path<'_>) -> Step<Got<Timestamp>> {
        let got = self.timestamp(path)?;
        if let Got::Value(ts) = got {
            ts.write_ext(&mut self.out);
        }
        Ok(got)
    }

    /// A field holding any JSON-compatible value, copied unchanged once validated.
    fn any_field(&mut self, path: &Path<'_>, level: usize) -> Step<Entry> {
        let start = self.r.position();
        let token = self.read(path)?;
        if token == Token::Nil {
            return Ok(Entry::Absent);
        }
        self.any(token, path, level)?;
        self.copy_raw(start);
        Ok(Entry::Written)
    }

    /// A map of "any" values (metadata, attributes), copied unchanged once validated.
    fn any_map(&mut self, path: &Path<'_>, level: usize) -> Step<Entry> {
        let start = self.r.position();
        match self.read(path)? {
            Token::Nil => Ok(Entry::Absent),
            token @ Token::Map(_) => {
                self.any(token, path, level)?;
                self.copy_raw(start);
                Ok(Entry::Written)
            }
            other => {
                self.wrong_type(path, "a map", other)?;
                Ok(Entry::Invalid)
            }
        }
    }

    /// Validates one "any" value whose first token was just read: nil, bool, int, finite
    /// float, UTF-8 string, timestamp, and arrays and string-keyed maps of those. `level`
    /// is the depth the value would have as a container.
    fn any(&mut self, first: Token<'a>, path: &Path<'_>, level: usize) -> Step<()> {
        let mut stack = std::mem::take(&mut self.any_stack);
        stack.clear();
        let result = self.any_walk(first, path, level, &mut stack);
        self.any_stack = stack;
        result
    }

    /// The loop behind [`any`](Self::any): iterative, so nesting costs heap, not stack.
    fn any_walk(
        &mut self,
        first: Token<'a>,
        path: &Path<'_>,
        level: usize,
        stack: &mut Vec<Frame<'a>>,
    ) -> Step<()> {
        let mut token = first;
        loop {
            let here = Nested { base: path, frames: stack };
            match token {
                Token::Array(n) | Token::Map(n) => {
                    if self.open(&here, level + stack.len(), &token)? && n > 0 {
                        let map = matches!(token, Token::Map(_));
                        stack.push(Frame { left: n, started: 0, map, key: "" });
                    }
                }
                scalar => self.any_scalar(scalar, &here)?,
            }
            // Move to the next value, closing the containers that are done.
            token = loop {
                let Some(top) = stack.last_mut() else { return Ok(()) };
                if top.left == 0 {
                    stack.pop();
                    continue;
                }
                top.left -= 1;
                top.started += 1;
                let mut secret = false;
                if top.map {
                    let map = Nested { base: path, frames: &stack[..stack.len() - 1] };
                    let Some(key) = self.map_key(&map)? else { continue };
                    if let Some(top) = stack.last_mut() {
                        top.key = key;
                    }
                    secret = self.is_secret_key(key);
                }
                let here = Nested { base: path, frames: stack };
                let from = self.r.position();
                let value = self.read(&here)?;
                if secret {
                    self.redact_value(from, &value, &here);
                }
                break value;
            };
        }
    }

    /// Checks a scalar of an "any" value, just read; scans strings for secrets.
    fn any_scalar(&mut self, token: Token<'a>, at: &impl Locate) -> Step<()> {
        match token {
            Token::Float(f) if !f.is_finite() => {
                self.error(at, format!("must be a finite number, got {f}"))
            }
            Token::Str(bytes) => match utf8(bytes) {
                Some(text) => {
                    self.scan_text(text, at);
                    Ok(())
                }
                None => self.error(at, "invalid UTF-8"),
            },
            Token::Bin(_) => self.error(at, "expected a JSON-compatible value, got bytes"),
            Token::Ext(TIMESTAMP_EXT, payload) => match Timestamp::decode_ext(payload) {
                Some(ts) if ts.in_range() => Ok(()),
                Some(_) => self.error(at, OUT_OF_RANGE),
                None => self.error(at, "invalid timestamp extension"),
            },
            Token::Ext(ty, _) => {
                self.error(at, format!("expected a JSON-compatible value, got extension type {ty}"))
            }
            _ => Ok(()),
        }
    }

    // ---- whole-trace checks ----

    /// End not before start, unique span ids, parents that exist, no parent cycles.
    fn check_spans(&mut self, trace_ts: Timestamp) -> Step<()> {
        let spans = std::mem::take(&mut self.spans);
        let result = self.check_span_list(&spans, trace_ts);
        self.spans = spans;
        result
    }

    fn check_span_list(&mut self, spans: &[SpanInfo], trace_ts: Timestamp) -> Step<()> {
        let root = self.root;
        let list = root.field("spans");
        for (i, span) in spans.iter().enumerate() {
            if span.end.is_some_and(|end| end < span.start.unwrap_or(trace_ts)) {
                self.error(&list.index(i).field("end_time"), "must not be before start_time")?;
            }
        }
        let mut by_id: Vec<(SpanId, usize)> =
            spans.iter().enumerate().filter_map(|(i, span)| Some((span.id?, i))).collect();
        by_id.sort_unstable();
        for (i, first) in duplicates(&by_id) {
            let message = format!("duplicate span_id (also at spans[{first}])");
            self.error(&list.index(i).field("span_id"), message)?;
        }
        let find = |id: SpanId| {
            let k = by_id.partition_point(|&(other, _)| other < id);
            by_id.get(k).filter(|&&(other, _)| other == id).map(|&(_, i)| i)
        };
        let mut parent_of = Vec::with_capacity(spans.len());
        for (i, span) in spans.iter().enumerate() {
            let parent = span.parent.and_then(find);
            // A parent outside this fragment may be a span an earlier fragment of a named
            // trace stored: the store checks it against those (`store::check_updates`).
            if span.parent.is_some() && parent.is_none() && self.minted_id {
                self.error(&list.index(i).field("parent_span_id"), "names no span of this trace")?;
            }
            parent_of.push(parent);
        }
        for i in cycle_members(&parent_of) {
            let span = list.index(i);
            self.error(&span.field("parent_span_id"), "span parent chain forms a cycle")?;
        }
        Ok(())
    }

    fn check_event_ids(&mut self) -> Step<()> {
        let mut event_ids = std::mem::take(&mut self.event_ids);
        event_ids.sort_unstable();
        let root = self.root;
        let list = root.field("events");
        for (i, first) in duplicates(&event_ids) {
            let message = format!("duplicate event_id (also at events[{first}])");
            self.error(&list.index(i).field("event_id"), message)?;
        }
        Ok(())
    }

    /// Writes the values that waited for the trace's timestamp. Hole positions are exact:
    /// the output only grew since they were taken (nested record maps never change their
    /// header width, as they cannot exceed 15 entries).
    fn fill_holes(&mut self, trace_ts: Timestamp) {
        if self.holes.is_empty() {
            return;
        }
        let start_of = |span: Option<&SpanInfo>| span.and_then(|s| s.start).unwrap_or(trace_ts);
        let mut out = Vec::with_capacity(self.out.len() + 16 * self.holes.len());
        let mut copied = 0;
        for hole in &self.holes {
            out.extend_from_slice(&self.out[copied..hole.at]);
            copied = hole.at;
            match hole.value {
                Deferred::TraceTimestamp => trace_ts.write_ext(&mut out),
                Deferred::SpanStart(i) => start_of(self.spans.get(i)).write_ext(&mut out),
                Deferred::SpanDuration(i) => {
                    let span = self.spans.get(i);
                    let end = span.and_then(|s| s.end).unwrap_or(trace_ts);
                    msgpack::write_f64(&mut out, Timestamp::millis_between(start_of(span), end));
                }
            }
        }
        out.extend_from_slice(&self.out[copied..]);
        self.out = out;
    }
}

/// In a list sorted by key, each entry whose key repeats an earlier one, as
/// (its index, the index of the key's first occurrence), ordered by index.
fn duplicates<K: Ord>(sorted: &[(K, usize)]) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut first = 0;
    for (k, pair) in sorted.windows(2).enumerate() {
        if pair[0].0 == pair[1].0 {
            found.push((pair[1].1, sorted[first].1));
        } else {
            first = k + 1;
        }
    }
    found.sort_unstable();
    found
}

/// The spans lying on a cycle of parent links, in index order. Each span is visited once:
/// a walk up the parents stops at a root, at a span an earlier walk visited, or on meeting
/// a span of its own walk, which closes a cycle.
fn cycle_members(parent_of: &[Option<usize>]) -> Vec<usize> {
    let mut walk_of = vec![0; parent_of.len()]; // 0: not visited yet
    let mut members = Vec::new();
    for start in 0..parent_of.len() {
        if walk_of[start] != 0 {
            continue;
        }
        let walk = start + 1;
        let mut current = start;
        walk_of[current] = walk;
        while let Some(parent) = parent_of[current] {
            if walk_of[parent] == 0 {
                walk_of[parent] = walk;
                current = parent;
                continue;
            }
            if walk_of[parent] == walk {
                let mut member = parent;
                loop {
                    members.push(member);
                    match parent_of[member] {
                        Some(next) if next != parent => member = next,
                        _ => break,
                    }
                }
            }
            break;
        }
    }
    members.sort_unstable();
    members
}

/// `std::str::from_utf8`, with a fast path for ASCII, which most keys and values are: for
/// short strings the (not inlined) std function costs more than the check itself.
#[inline]
fn utf8(bytes: &[u8]) -> Option<&str> {
    if bytes.is_ascii() {
        // SAFETY: ASCII bytes are valid UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        std::str::from_utf8(bytes).ok()
    }
}

/// A user value for an error message: quoted, escaped, and cut at 40 characters.
fn quote(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((cut, _)) => format!("{:?}...", &text[..cut]),
        None => format!("{text:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-01-01T00:00:00Z, the injected "now".
    const NOW: Timestamp = Timestamp { secs: 1_704_067_200, nanos: 0 };
    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN_A: &str = "00f067aa0ba902b7";
    const SPAN_B: &str = "00f067aa0ba902b8";

    /// A msgpack value, to build inputs and to inspect outputs.
    #[derive(Debug, Clone, PartialEq)]
    enum V {
        Nil,
        Bool(bool),
        Int(i64),
        UInt(u64),
        F64(f64),
        F32(f32),
        Str(String),
        /// A str8 token holding arbitrary bytes (for invalid UTF-8).
        RawStr(Vec<u8>),
        Bin(Vec<u8>),
        Arr(Vec<V>),
        Map(Vec<(V, V)>),
        Ext(i8, Vec<u8>),
    }

    impl V {
        fn get(&self, path: &str) -> &V {
            let mut v = self;
            for part in path.split('.') {
                let (name, indices) = part.split_once('[').map_or((part, ""), |(n, i)| (n, i));
                if !name.is_empty() {
                    let V::Map(pairs) = v else { panic!("{path}: {name} is not in a map") };
                    v = pairs
                        .iter()
                        .find(|(k, _)| *k == s(name))
                        .map(|(_, value)| value)
                        .unwrap_or_else(|| panic!("{path}: no key {name}"));
                }
                for index in indices.split('[').filter(|i| !i.is_empty()) {
                    let i: usize = index.trim_end_matches(']').parse().unwrap();
                    let V::Arr(items) = v else { panic!("{path}: not an array") };
                    v = &items[i];
                }
            }
            v
        }

        fn has(&self, key: &str) -> bool {
            self.keys().contains(&key)
        }

        fn keys(&self) -> Vec<&str> {
            let V::Map(pairs) = self else { panic!("not a map: {self:?}") };
            pairs.iter().map(|(k, _)| if let V::Str(k) = k { k.as_str() } else { "?" }).collect()
        }

        fn str(&self) -> &str {
            let V::Str(text) = self else { panic!("not a string: {self:?}") };
            text
        }

        fn ts(&self) -> Timestamp {
            let V::Ext(-1, payload) = self else { panic!("not a timestamp: {self:?}") };
            Timestamp::decode_ext(payload).unwrap()
        }
    }

    fn s(text: &str) -> V {
        V::Str(text.to_string())
    }

    fn m(pairs: Vec<(&str, V)>) -> V {
        V::Map(pairs.into_iter().map(|(k, v)| (s(k), v)).collect())
    }

    fn a(items: Vec<V>) -> V {
        V::Arr(items)
    }

    fn ts(text: &str) -> Timestamp {
        Timestamp::parse_iso8601(text).unwrap()
    }

    fn ext(t: Timestamp) -> V {
        let mut out = Vec::new();
        t.write_ext(&mut out);
        decode(&out)
    }

    fn encode_into(v: &V, out: &mut Vec<u8>) {
        match v {
            V::Nil => out.push(0xc0),
            V::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
            V::Int(i) if *i >= 0 => msgpack::write_uint(out, *i as u64),
            V::Int(i) => {
                out.push(0xd3);
                out.extend(i.to_be_bytes());
            }
            V::UInt(u) => msgpack::write_uint(out, *u),
            V::F64(f) => msgpack::write_f64(out, *f),
            V::F32(f) => {
                out.push(0xca);
                out.extend(f.to_be_bytes());
            }
            V::Str(text) => msgpack::write_str(out, text),
            V::RawStr(bytes) => {
                out.extend([0xd9, bytes.len() as u8]);
                out.extend(bytes);
            }
            V::Bin(bytes) => {
                out.extend([0xc4, bytes.len() as u8]);
                out.extend(bytes);
            }
            V::Arr(items) => {
                msgpack::write_array_header(out, items.len() as u32);
                items.iter().for_each(|item| encode_into(item, out));
            }
            V::Map(pairs) => {
                let header = msgpack::begin_map(out, pairs.len());
                msgpack::finish_map(out, header, pairs.len());
                for (k, v) in pairs {
                    encode_into(k, out);
                    encode_into(v, out);
                }
            }
            V::Ext(ty, payload) => {
                out.extend([0xc7, payload.len() as u8, *ty as u8]);
                out.extend(payload);
            }
        }
    }

    fn enc(v: &V) -> Vec<u8> {
        let mut out = Vec::new();
        encode_into(v, &mut out);
        out
    }

    /// `v` as it reads back from msgpack (ints by sign, floats as f64).
    fn norm(v: &V) -> V {
        decode(&enc(v))
    }

    fn read_v(r: &mut Reader<'_>) -> V {
        match r.read_token().unwrap() {
            Token::Nil => V::Nil,
            Token::Bool(b) => V::Bool(b),
            Token::UInt(u) => V::UInt(u),
            Token::NegInt(i) => V::Int(i),
            Token::Float(f) => V::F64(f),
            Token::Str(b) => V::Str(String::from_utf8(b.to_vec()).unwrap()),
            Token::Bin(b) => V::Bin(b.to_vec()),
            Token::Array(n) => V::Arr((0..n).map(|_| read_v(r)).collect()),
            Token::Map(n) => V::Map((0..n).map(|_| (read_v(r), read_v(r))).collect()),
            Token::Ext(ty, payload) => V::Ext(ty, payload.to_vec()),
        }
    }

    fn decode(bytes: &[u8]) -> V {
        let mut r = Reader::new(bytes);
        let v = read_v(&mut r);
        assert!(r.is_at_end(), "trailing bytes");
        v
    }

    /// A trace with `agent_name` and the given fields.
    fn trace(fields: Vec<(&str, V)>) -> Vec<u8> {
        let mut pairs = vec![("agent_name", s("agent"))];
        pairs.extend(fields);
        enc(&m(pairs))
    }

    fn run(input: &[u8]) -> Result<Canonical, Vec<FieldError>> {
        canonicalize(input, &Limits::default(), &Redaction::default(), NOW)
    }

    /// The decoded canonical output; also checks that canonicalizing it changes nothing.
    fn ok(input: &[u8]) -> V {
        let canonical = run(input).unwrap_or_else(|e| panic!("unexpected errors: {e:?}"));
        let again = run(&canonical.bytes).expect("canonical output must be valid input");
        assert_eq!(
            (again.trace_id, &again.bytes),
            (canonical.trace_id, &canonical.bytes),
            "canonical output must be a fixed point"
        );
        assert!(again.resend_key.is_some(), "the canonical record names its trace");
        decode(&canonical.bytes)
    }

    /// The errors, each as `path: message`.
    fn fails(input: &[u8]) -> Vec<String> {
        let errors = run(input).expect_err("must be rejected");
        errors.iter().map(ToString::to_string).collect()
    }

    fn fails_with(input: &[u8], expected: &str) {
        assert_eq!(fails(input), [expected]);
    }

    // ---- whole traces ----

    #[test]
    fn minimal_trace_gets_trace_id_timestamp_and_redactions() {
        let canonical = run(&trace(vec![])).unwrap();
        let v = decode(&canonical.bytes);
        assert_eq!(v.keys(), ["agent_name", "trace_id", "timestamp", "redactions"]);
        assert_eq!(v.get("trace_id").str(), ids::to_hex(&canonical.trace_id));
        assert_eq!(&v.get("trace_id").str()[12..13], "7", "minted ids are UUIDv7");
        assert_eq!(v.get("timestamp").ts(), NOW);
        assert_eq!(v.get("redactions"), &V::UInt(0));
        ok(&trace(vec![]));
    }

    fn full_trace() -> V {
        let tool_input = m(vec![("q", s("weather")), ("k", V::Int(3))]);
        m(vec![
            ("trace_id", s(TRACE_ID)),
            ("agent_name", s("support-bot")),
            ("framework", s("langgraph")),
            ("run_id", s("run-1")),
            ("redactions", V::Int(7)),
            ("request_id", s("req-1")),
            ("session_id", s("sess-1")),
            ("input", s("hello")),
            ("output", s("")),
            (
                "tool_calls",
                a(vec![m(vec![
                    ("tool_name", s("search")),
                    ("input", tool_input),
                    ("output", a(vec![s("sunny"), V::Nil, V::F64(1.5)])),
                    ("latency_ms", V::Int(12)),
                    ("error", s("timeout")),
                ])]),
            ),
            ("latency_ms", V::Int(1500)),
            ("cost_usd", V::F32(0.25)),
            (
                "token_usage",
                m(vec![
                    ("prompt_tokens", V::Int(100)),
                    ("completion_tokens", V::Int(20)),
                    ("total_tokens", V::Int(125)),
                ]),
            ),
            ("metadata", m(vec![("user", m(vec![("address", s("x"))])), ("n", V::Nil)])),
            (
                "spans",
                a(vec![
                    m(vec![
                        ("span_id", s(SPAN_A)),
                        ("name", s("root")),
                        ("kind", s("Agent")),
                        ("status_code", s("ok")),
                        ("status_message", s("fine")),
                        ("start_time", s("2024-01-01T00:00:01Z")),
                        ("end_time", s("2024-01-01T00:00:02.250Z")),
                        ("duration_ms", V::Int(5)),
                        ("attributes", m(vec![("gen_ai.usage.input_tokens", V::Int(5))])),
                        ("events", a(vec![m(vec![("name", s("ev")), ("attributes", m(vec![]))])])),
                    ]),
                    m(vec![
                        ("span_id", s(SPAN_B)),
                        ("parent_span_id", s(SPAN_A)),
                        ("name", s("child")),
                    ]),
                ]),
            ),
            (
                "events",
                a(vec![m(vec![
                    ("event_id", s("e1")),
                    ("type", s("LLM")),
                    ("status", s("succeeded")),
                    ("at", ext(ts("2024-01-01T00:00:03Z"))),
                    ("parent_id", s("p1")),
                    (
                        "metadata",
                        m(vec![
                            (
                                "decision",
                                m(vec![
                                    ("final_action", s("send")),
                                    ("outcome_score", V::F64(0.9)),
                                    ("changed_fields", a(vec![s("a"), s("b")])),
                                ]),
                            ),
                            ("other", m(vec![("x", a(vec![V::Int(1)]))])),
                        ]),
                    ),
                ])]),
            ),
            ("timestamp", s("2024-01-01T00:00:00Z")),
            ("ended_at", V::F64(1_704_067_201.5)),
            ("status", s("succeeded")),
            ("tags", a(vec![s("prod"), s("v2")])),
        ])
    }

    #[test]
    fn full_trace_is_validated_and_canonicalized() {
        let input = full_trace();
        let canonical = run(&enc(&input)).unwrap();
        assert_eq!(ids::to_hex(&canonical.trace_id), TRACE_ID);
        let v = ok(&enc(&input));
        let mut keys = input.keys();
        keys.retain(|k| *k != "redactions");
        keys.push("redactions");
        assert_eq!(v.keys(), keys, "input order kept; redactions replaced at the end");
        assert_eq!(v.get("redactions"), &V::UInt(0));
        for same in ["trace_id", "framework", "input", "output", "metadata", "tags", "status"] {
            assert_eq!(v.get(same), &norm(input.get(same)), "{same}");
        }
        assert_eq!(v.get("latency_ms"), &V::F64(1500.0));
        assert_eq!(v.get("cost_usd"), &V::F64(0.25));
        assert_eq!(v.get("token_usage.total_tokens"), &V::UInt(125));
        assert_eq!(v.get("tool_calls[0].latency_ms"), &V::F64(12.0));
        assert_eq!(v.get("tool_calls[0].input"), &norm(input.get("tool_calls[0].input")));
        assert_eq!(v.get("tool_calls[0].output"), &norm(input.get("tool_calls[0].output")));
        assert_eq!(v.get("timestamp").ts(), NOW);
        assert_eq!(v.get("ended_at").ts(), Timestamp { secs: 1_704_067_201, nanos: 500_000_000 });

        assert_eq!(v.get("spans[0].kind").str(), "AGENT");
        assert_eq!(v.get("spans[0].status_code").str(), "OK");
        assert_eq!(v.get("spans[0].start_time").ts(), ts("2024-01-01T00:00:01Z"));
        assert_eq!(v.get("spans[0].duration_ms"), &V::F64(1250.0), "derived, not the given 5");
        assert_eq!(v.get("spans[0].attributes"), &norm(input.get("spans[0].attributes")));
        assert_eq!(v.get("spans[0].events[0].timestamp").ts(), ts("2024-01-01T00:00:01Z"));
        let child = v.get("spans[1]");
        assert_eq!(
            child.keys(),
            ["span_id", "parent_span_id", "name", "kind", "status_code", "start_time"]
        );
        assert_eq!(child.get("kind").str(), "INTERNAL");
        assert_eq!(child.get("status_code").str(), "UNSET");
        assert_eq!(child.get("start_time").ts(), NOW);

        assert_eq!(v.get("events[0].type").str(), "model.call");
        assert_eq!(v.get("events[0].at").ts(), ts("2024-01-01T00:00:03Z"));
        assert_eq!(v.get("events[0].metadata"), &norm(input.get("events[0].metadata")));
        assert_eq!(
            v.get("events[0]").keys(),
            ["event_id", "type", "status", "at", "parent_id", "metadata"]
        );
    }

    #[test]
    fn nil_means_not_set() {
        let mut fields: Vec<(&str, V)> =
            TraceField::NAMES.iter().map(|&name| (name, V::Nil)).collect();
        fields.retain(|(name, _)| *name != "agent_name");
        let v = ok(&trace(fields));
        assert_eq!(v.keys(), ["agent_name", "trace_id", "timestamp", "redactions"]);
        assert_eq!(v.get("timestamp").ts(), NOW);

        let span =
            m(vec![("name", s("s")), ("kind", V::Nil), ("events", V::Nil), ("end_time", V::Nil)]);
        let tool = m(vec![("tool_name", s("t")), ("input", V::Nil), ("output", V::Nil)]);
        let event = m(vec![("type", V::Nil), ("metadata", V::Nil), ("event_id", V::Nil)]);
        let usage = m(vec![("prompt_tokens", V::Nil), ("completion_tokens", V::Int(3))]);
        let v = ok(&trace(vec![
            ("spans", a(vec![span])),
            ("tool_calls", a(vec![tool])),
            ("events", a(vec![event])),
            ("token_usage", usage),
        ]));
        assert_eq!(
            v.get("spans[0]").keys(),
            ["name", "span_id", "kind", "status_code", "start_time"]
        );
        assert_eq!(v.get("spans[0].kind").str(), "INTERNAL");
        assert_eq!(v.get("tool_calls[0]").keys(), ["tool_name"]);
        assert_eq!(v.get("events[0]").keys(), ["event_id", "type", "at"]);
        assert_eq!(v.get("token_usage").keys(), ["completion_tokens", "total_tokens"]);
        assert_eq!(v.get("token_usage.total_tokens"), &V::UInt(3));
    }

    // ---- record structure ----

    #[test]
    fn unknown_and_duplicate_fields() {
        let unknown = fails(&trace(vec![("colour", s("red"))]));
        assert_eq!(unknown.len(), 1);
        assert!(unknown[0].starts_with(
            "colour: unknown field; expected one of: trace_id, agent_name, framework, run_id,"
        ));
        assert!(unknown[0].ends_with("status, tags, redactions"), "{}", unknown[0]);
        let nested = [
            ("spans", a(vec![m(vec![("name", s("n")), ("colour", V::Nil)])]), "spans[0].colour"),
            (
                "tool_calls",
                a(vec![m(vec![("tool_name", s("t")), ("x", V::Int(1))])]),
                "tool_calls[0].x",
            ),
            ("token_usage", m(vec![("cached_tokens", V::Int(1))]), "token_usage.cached_tokens"),
            ("events", a(vec![m(vec![("kind", s("x"))])]), "events[0].kind"),
        ];
        for (field, value, path) in nested {
            let errors = fails(&trace(vec![(field, value)]));
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(errors[0].starts_with(&format!("{path}: unknown field; expected one of: ")));
        }
        let span_event = m(vec![
            ("name", s("s")),
            ("events", a(vec![m(vec![("name", s("e")), ("x", V::Nil)])])),
        ]);
        let errors = fails(&trace(vec![("spans", a(vec![span_event]))]));
        assert_eq!(
            errors,
            ["spans[0].events[0].x: unknown field; expected one of: name, timestamp, attributes"]
        );

        fails_with(&trace(vec![("agent_name", s("again"))]), "agent_name: duplicate field");
        fails_with(&trace(vec![("tags", V::Nil), ("tags", V::Nil)]), "tags: duplicate field");
    }

    #[test]
    fn required_fields() {
        fails_with(&enc(&m(vec![])), "agent_name: required field is missing");
        fails_with(&enc(&m(vec![("agent_name", V::Nil)])), "agent_name: required field is missing");
        // A wrong value is reported as such, not also as missing.
        fails_with(
            &enc(&m(vec![("agent_name", V::Int(1))])),
            "agent_name: expected a string, got int",
        );
        fails_with(
            &trace(vec![("spans", a(vec![m(vec![])]))]),
            "spans[0].name: required field is missing",
        );
        fails_with(
            &trace(vec![("tool_calls", a(vec![m(vec![("input", s("x"))])]))]),
            "tool_calls[0].tool_name: required field is missing",
        );
        let span = m(vec![("name", s("s")), ("events", a(vec![m(vec![])]))]);
        fails_with(
            &trace(vec![("spans", a(vec![span]))]),
            "spans[0].events[0].name: required field is missing",
        );
    }

    #[test]
    fn wrong_types_name_what_was_expected_and_what_came() {
        let cases = [
            ("framework", V::Bool(true), "framework: expected a string, got bool"),
            ("input", V::Arr(vec![]), "input: expected a string, got array"),
            ("spans", m(vec![]), "spans: expected an array, got map"),
            ("spans", a(vec![s("x")]), "spans[0]: expected a map, got string"),
            ("tool_calls", a(vec![V::Nil]), "tool_calls[0]: expected a map, got nil"),
            ("metadata", a(vec![]), "metadata: expected a map, got array"),
            ("token_usage", V::Int(3), "token_usage: expected a map, got int"),
            ("tags", a(vec![V::Nil]), "tags[0]: expected a string, got nil"),
            ("tags", a(vec![s("a"), V::Int(1)]), "tags[1]: expected a string, got int"),
            ("events", a(vec![V::F64(1.0)]), "events[0]: expected a map, got float"),
            ("latency_ms", s("5"), "latency_ms: expected a number, got string"),
            ("cost_usd", V::Bin(vec![1]), "cost_usd: expected a number, got bytes"),
            ("redactions", s("0"), "redactions: expected a non-negative integer, got string"),
            ("redactions", V::Int(-1), "redactions: must be a non-negative integer, got -1"),
        ];
        for (field, value, expected) in cases {
            fails_with(&trace(vec![(field, value)]), expected);
        }
        fails_with(&enc(&a(vec![])), "expected a map, got array");
    }

    #[test]
    fn keeps_validating_after_an_error() {
        let input = trace(vec![
            ("framework", V::Int(1)),
            (
                "spans",
                a(vec![m(vec![("name", V::Int(2)), ("kind", m(vec![("deep", a(vec![]))]))])]),
            ),
            ("status", s("done")),
        ]);
        assert_eq!(
            fails(&input),
            [
                "framework: expected a string, got int",
                "spans[0].name: expected a string, got int",
                "spans[0].kind: expected a string, got map",
                "status: must be one of: running, succeeded, failed; got \"done\"",
            ]
        );
    }

    #[test]
    fn errors_stop_at_one_hundred() {
        let tags = a((0..150).map(V::Int).collect());
        let errors = fails(&trace(vec![("tags", tags)]));
        assert_eq!(errors.len(), MAX_ERRORS);
        assert_eq!(errors[99], "tags[99]: expected a string, got int");
    }

    // ---- strings, ids, numbers, enums ----

    #[test]
    fn string_lengths_count_characters() {
        ok(&trace(vec![("framework", s(&"é".repeat(256)))]));
        fails_with(
            &trace(vec![("framework", s(&"é".repeat(257)))]),
            "framework: must be 1..256 characters, got 257",
        );
        fails_with(
            &trace(vec![("run_id", s(&"x".repeat(300)))]),
            "run_id: must be 1..256 characters, got 300",
        );
        fails_with(
            &enc(&m(vec![("agent_name", s(""))])),
            "agent_name: must be 1..256 characters, got 0",
        );
        fails_with(
            &trace(vec![("tags", a(vec![s("ok"), s(&"t".repeat(129))]))]),
            "tags[1]: must be 1..128 characters, got 129",
        );
        let span = m(vec![("name", s(&"n".repeat(1025)))]);
        fails_with(
            &trace(vec![("spans", a(vec![span]))]),
            "spans[0].name: must be 1..1024 characters, got 1025",
        );
        ok(&trace(vec![("spans", a(vec![m(vec![("name", s(&"n".repeat(1024)))])]))]));
        ok(&trace(vec![("input", s(&"long ".repeat(10_000))), ("output", s(""))]));
    }

    #[test]
    fn invalid_utf8_is_rejected_in_values_and_keys() {
        let bad = || V::RawStr(vec![b'a', 0xff]);
        fails_with(&trace(vec![("framework", bad())]), "framework: invalid UTF-8");
        fails_with(&trace(vec![("metadata", m(vec![("k", bad())]))]), "metadata.k: invalid UTF-8");
        let bad_key = V::Map(vec![(bad(), V::Int(1))]);
        fails_with(
            &trace(vec![("metadata", m(vec![("a", bad_key.clone())]))]),
            "metadata.a: invalid UTF-8 in a map key",
        );
        let top = V::Map(vec![(s("agent_name"), s("a")), (bad(), V::Int(1))]);
        fails_with(&enc(&top), "invalid UTF-8 in a map key");
        let time = trace(vec![("timestamp", bad())]);
        fails_with(&time, "timestamp: invalid UTF-8");
    }

    #[test]
    fn map_keys_must_be_strings() {
        let int_key = V::Map(vec![(V::Int(1), s("x")), (s("ok"), V::Nil)]);
        fails_with(
            &trace(vec![("metadata", int_key)]),
            "metadata: map keys must be strings, got int",
        );
        let nested = m(vec![("a", a(vec![V::Map(vec![(a(vec![V::Int(1)]), V::Nil)])]))]);
        fails_with(
            &trace(vec![("metadata", nested)]),
            "metadata.a[0]: map keys must be strings, got array",
        );
        let top =
            V::Map(vec![(s("agent_name"), s("a")), (V::Nil, V::Int(1)), (s("status"), s("x"))]);
        assert_eq!(
            fails(&enc(&top)),
            [
                "map keys must be strings, got nil",
                "status: must be one of: running, succeeded, failed; got \"x\""
            ]
        );
    }

    #[test]
    fn ids_must_be_lowercase_hex_and_not_zero() {
        let trace_msg = "trace_id: must be 32 lowercase hex characters (not all zero)";
        for bad in [
            TRACE_ID.to_uppercase(),
            "0".repeat(32),
            TRACE_ID[1..].to_string(),
            format!("{TRACE_ID}0"),
        ] {
            fails_with(&trace(vec![("trace_id", s(&bad))]), trace_msg);
        }
        fails_with(&trace(vec![("trace_id", V::Int(1))]), "trace_id: expected a string, got int");
        let v = ok(&trace(vec![("trace_id", V::Nil)]));
        assert_eq!(v.get("trace_id").str().len(), 32);

        let span = |id: &str| a(vec![m(vec![("name", s("s")), ("span_id", s(id))])]);
        let span_msg = "spans[0].span_id: must be 16 lowercase hex characters (not all zero)";
        fails_with(&trace(vec![("spans", span("0000000000000000"))]), span_msg);
        fails_with(&trace(vec![("spans", span("00F067AA0BA902B7"))]), span_msg);
        fails_with(&trace(vec![("spans", span(TRACE_ID))]), span_msg);
        let parent = a(vec![m(vec![("name", s("s")), ("parent_span_id", s("xyz"))])]);
        fails_with(
            &trace(vec![("spans", parent)]),
            "spans[0].parent_span_id: must be 16 lowercase hex characters (not all zero)",
        );
    }

    #[test]
    fn numbers_are_finite_non_negative_and_written_as_float64() {
        for (given, expected) in [
            (V::Int(5), 5.0),
            (V::UInt(u64::MAX), u64::MAX as f64),
            (V::F32(0.5), 0.5),
            (V::F64(2.25), 2.25),
            (V::F64(0.0), 0.0),
        ] {
            let v = ok(&trace(vec![("latency_ms", given)]));
            assert_eq!(v.get("latency_ms"), &V::F64(expected));
        }
        let v = ok(&trace(vec![("cost_usd", V::F64(-0.0))]));
        assert!(matches!(v.get("cost_usd"), V::F64(z) if z.is_sign_positive()));
        for bad in [V::Int(-1), V::F64(-0.5), V::F64(f64::NAN), V::F32(f32::INFINITY)] {
            fails_with(&trace(vec![("cost_usd", bad)]), "cost_usd: must be a finite number >= 0");
        }
        let tool =
            a(vec![m(vec![("tool_name", s("t")), ("latency_ms", V::F64(f64::NEG_INFINITY))])]);
        fails_with(
            &trace(vec![("tool_calls", tool)]),
            "tool_calls[0].latency_ms: must be a finite number >= 0",
        );
    }

    #[test]
    fn token_usage_counts_and_derived_total() {
        let usage = |pairs: Vec<(&str, V)>| ok(&trace(vec![("token_usage", m(pairs))]));
        let v = usage(vec![("prompt_tokens", V::Int(10)), ("completion_tokens", V::Int(5))]);
        assert_eq!(
            v.get("token_usage").keys(),
            ["prompt_tokens", "completion_tokens", "total_tokens"]
        );
        assert_eq!(v.get("token_usage.total_tokens"), &V::UInt(15));
        assert_eq!(
            usage(vec![("prompt_tokens", V::Int(10))]).get("token_usage.total_tokens"),
            &V::UInt(10)
        );
        let given = usage(vec![("total_tokens", V::Int(7)), ("prompt_tokens", V::Int(1))]);
        assert_eq!(given.get("token_usage.total_tokens"), &V::UInt(7), "a given total is kept");
        assert_eq!(usage(vec![]).get("token_usage").keys(), Vec::<&str>::new());
        assert_eq!(
            usage(vec![("total_tokens", V::Int(9))]).get("token_usage").keys(),
            ["total_tokens"]
        );

        let fail = |pairs: Vec<(&str, V)>, expected: &str| {
            fails_with(&trace(vec![("token_usage", m(pairs))]), expected)
        };
        fail(
            vec![("prompt_tokens", V::F64(1.0))],
            "token_usage.prompt_tokens: expected a non-negative integer, got float",
        );
        fail(
            vec![("completion_tokens", V::Int(-3))],
            "token_usage.completion_tokens: must be a non-negative integer, got -3",
        );
        fail(
            vec![("prompt_tokens", V::UInt(u64::MAX)), ("completion_tokens", V::Int(1))],
            "token_usage.total_tokens: the sum of the counts overflows",
        );
    }

    #[test]
    fn enumerations() {
        for (given, expected) in [
            ("llm", "LLM"),
            ("Tool", "TOOL"),
            ("GUARDRAIL", "GUARDRAIL"),
            ("retriever", "RETRIEVER"),
        ] {
            let v =
                ok(&trace(vec![("spans", a(vec![m(vec![("name", s("s")), ("kind", s(given))])]))]));
            assert_eq!(v.get("spans[0].kind").str(), expected);
        }
        let v = ok(&trace(vec![(
            "spans",
            a(vec![m(vec![("name", s("s")), ("status_code", s("error"))])]),
        )]));
        assert_eq!(v.get("spans[0].status_code").str(), "ERROR");
        let kind = a(vec![m(vec![("name", s("s")), ("kind", s("bogus"))])]);
        fails_with(
            &trace(vec![("spans", kind)]),
            "spans[0].kind: must be one of: INTERNAL, SERVER, CLIENT, PRODUCER, CONSUMER, LLM, \
             TOOL, AGENT, RETRIEVER, EMBEDDING, GUARDRAIL; got \"bogus\"",
        );
        for status in TRACE_STATUSES {
            assert_eq!(ok(&trace(vec![("status", s(status))])).get("status").str(), *status);
        }
        fails_with(
            &trace(vec![("status", s("Succeeded"))]),
            "status: must be one of: running, succeeded, failed; got \"Succeeded\"",
        );
        let long = "x".repeat(100);
        let errors = fails(&trace(vec![("status", s(&long))]));
        assert!(errors[0].ends_with(&format!("got \"{}\"...", &long[..40])), "{errors:?}");
    }

    // ---- timestamps ----

    #[test]
    fn timestamps_accept_every_form_and_are_written_as_extensions() {
        let t = ts("2024-01-01T00:00:00Z");
        let cases = [
            (V::Ext(-1, vec![0x65, 0x92, 0x00, 0x80]), t),
            (ext(Timestamp { secs: t.secs, nanos: 5 }), t),
            (s("2024-01-01T00:00:00.123456789Z"), Timestamp { secs: t.secs, nanos: 123_456_000 }),
            (ext(Timestamp::MIN), Timestamp::MIN),
            (s("2024-01-01T00:00:00"), t),
            (s("2024-01-01 05:30+05:30"), t),
            (s("2024-01-01"), t),
            (V::Int(t.secs), t),
            (V::F64(t.secs as f64 + 0.25), Timestamp { secs: t.secs, nanos: 250_000_000 }),
            (V::Int(-1), Timestamp { secs: -1, nanos: 0 }),
        ];
        for (given, expected) in cases {
            let v = ok(&trace(vec![("timestamp", given.clone())]));
            assert_eq!(v.get("timestamp").ts(), expected, "{given:?}");
            assert!(matches!(v.get("timestamp"), V::Ext(-1, p) if p.len() >= 8), "{given:?}");
        }
        let v = ok(&trace(vec![("ended_at", ext(Timestamp::MAX))]));
        assert!(matches!(v.get("ended_at"), V::Ext(-1, p) if p.len() == 12));
        let v = ok(&trace(vec![("ended_at", s("2024-01-01"))]));
        assert!(matches!(v.get("ended_at"), V::Ext(-1, p) if p.len() == 8));
    }

    #[test]
    fn timestamp_errors() {
        let range = "timestamp: timestamp out of range (years 1..9999)";
        let kinds = "timestamp: expected a timestamp (datetime, ISO-8601 string or epoch seconds)";
        let cases = [
            (s("2023-02-29"), "timestamp: expected an ISO-8601 timestamp, got \"2023-02-29\""),
            (
                s("2024-01-01T24:00"),
                "timestamp: expected an ISO-8601 timestamp, got \"2024-01-01T24:00\"",
            ),
            (s("0001-01-01T00:00:00+01:00"), range),
            (ext(Timestamp { secs: Timestamp::MAX.secs + 1, nanos: 0 }), range),
            (V::Int(1_000_000_000_000), range),
            (V::UInt(u64::MAX), range),
            (V::F64(-1e17), range),
            (V::F64(f64::NAN), "timestamp: must be a finite number, got NaN"),
            (V::Ext(-1, vec![1, 2, 3]), "timestamp: invalid timestamp extension"),
        ];
        for (given, expected) in cases {
            fails_with(&trace(vec![("timestamp", given)]), expected);
        }
        fails_with(&trace(vec![("timestamp", V::Bool(true))]), &format!("{kinds}, got bool"));
        let other_ext = V::Ext(3, vec![1, 2, 3, 4]);
        fails_with(&trace(vec![("timestamp", other_ext)]), &format!("{kinds}, got extension"));
    }

    // ---- span defaults, derived values, and whole-trace checks ----

    fn span_with(fields: Vec<(&str, V)>) -> V {
        let mut pairs = vec![("name", s("span"))];
        pairs.extend(fields);
        m(pairs)
    }

    #[test]
    fn span_start_defaults_to_the_trace_timestamp_wherever_it_comes() {
        let t = ts("2024-05-05T10:00:00Z");
        let end = ext(ts("2024-05-05T10:00:02Z"));
        let span =
            span_with(vec![("end_time", end), ("events", a(vec![m(vec![("name", s("e"))])]))]);
        let event = m(vec![("type", s("step"))]);
        let before = ok(&trace(vec![
            ("timestamp", ext(t)),
            ("spans", a(vec![span.clone()])),
            ("events", a(vec![event.clone()])),
        ]));
        let after = ok(&trace(vec![
            ("spans", a(vec![span.clone()])),
            ("events", a(vec![event.clone()])),
            ("timestamp", ext(t)),
        ]));
        for v in [&before, &after] {
            assert_eq!(v.get("spans[0].start_time").ts(), t);
            assert_eq!(v.get("spans[0].duration_ms"), &V::F64(2000.0));
            assert_eq!(v.get("spans[0].events[0].timestamp").ts(), t);
            assert_eq!(v.get("events[0].at").ts(), t);
            assert_eq!(v.get("events[0].type").str(), "workflow.step");
        }
        let none = ok(&trace(vec![("spans", a(vec![span])), ("events", a(vec![event]))]));
        assert_eq!(none.get("spans[0].start_time").ts(), NOW);
        assert_eq!(none.get("spans[0].events[0].timestamp").ts(), NOW);
        assert_eq!(none.get("events[0].at").ts(), NOW);
        let expected = Timestamp::millis_between(NOW, ts("2024-05-05T10:00:02Z"));
        assert_eq!(none.get("spans[0].duration_ms"), &V::F64(expected));
    }

    #[test]
    fn span_event_timestamp_defaults_to_the_span_start_even_when_it_comes_later() {
        let start = ts("2024-02-02T00:00:00Z");
        let span = span_with(vec![
            ("events", a(vec![m(vec![("name", s("e"))])])),
            ("start_time", ext(start)),
        ]);
        let v = ok(&trace(vec![("spans", a(vec![span]))]));
        assert_eq!(v.get("spans[0].events[0].timestamp").ts(), start);
        let given = ts("2024-02-02T00:00:09Z");
        let span = span_with(vec![(
            "events",
            a(vec![m(vec![("name", s("e")), ("timestamp", ext(given))])]),
        )]);
        let v = ok(&trace(vec![("spans", a(vec![span]))]));
        assert_eq!(v.get("spans[0].events[0].timestamp").ts(), given);
    }

    #[test]
    fn span_duration_is_derived_or_kept() {
        let start = ("start_time", s("2024-01-01T00:00:00Z"));
        let end = ("end_time", s("2024-01-01T00:00:00.0005Z"));
        let derived = ok(&trace(vec![(
            "spans",
            a(vec![span_with(vec![("duration_ms", V::Int(9)), start.clone(), end])]),
        )]));
        assert_eq!(derived.get("spans[0].duration_ms"), &V::F64(0.5));
        let kept = ok(&trace(vec![(
            "spans",
            a(vec![span_with(vec![("duration_ms", V::Int(9)), start])]),
        )]));
        assert_eq!(kept.get("spans[0].duration_ms"), &V::F64(9.0));
        let none = ok(&trace(vec![("spans", a(vec![span_with(vec![])]))]));
        assert!(!none.get("spans[0]").has("duration_ms"));
        let negative = a(vec![span_with(vec![("duration_ms", V::Int(-9))])]);
        fails_with(
            &trace(vec![("spans", negative)]),
            "spans[0].duration_ms: must be a finite number >= 0",
        );
    }

    #[test]
    fn span_end_must_not_precede_its_start() {
        let span = span_with(vec![
            ("start_time", s("2024-01-01T00:00:02Z")),
            ("end_time", s("2024-01-01T00:00:01Z")),
        ]);
        fails_with(
            &trace(vec![("spans", a(vec![span]))]),
            "spans[0].end_time: must not be before start_time",
        );
        // Against the default start, from a timestamp that comes after the spans.
        let span = span_with(vec![("end_time", s("2024-01-01T00:00:01Z"))]);
        let input = trace(vec![
            ("spans", a(vec![span_with(vec![]), span])),
            ("timestamp", s("2024-01-01T00:00:05Z")),
        ]);
        fails_with(&input, "spans[1].end_time: must not be before start_time");
    }

    /// Spans `i` with id `i+1` and the given parent index.
    fn family(parents: &[Option<usize>]) -> Vec<u8> {
        let id = |i: usize| format!("{:016x}", i + 1);
        let spans = parents
            .iter()
            .enumerate()
            .map(|(i, parent)| {
                let mut fields = vec![("span_id", s(&id(i)))];
                fields.extend(parent.map(|p| ("parent_span_id", s(&id(p)))));
                span_with(fields)
            })
            .collect();
        trace(vec![("spans", V::Arr(spans))])
    }

    #[test]
    fn parents_must_exist_and_not_form_cycles() {
        ok(&family(&[None, Some(0), Some(1), Some(0)]));
        let chain: Vec<_> = (0..1000usize).map(|i| i.checked_sub(1)).collect();
        ok(&family(&chain));

        let unknown =
            trace(vec![("spans", a(vec![span_with(vec![("parent_span_id", s(SPAN_A))])]))]);
        fails_with(&unknown, "spans[0].parent_span_id: names no span of this trace");
        let cycle = "parent_span_id: span parent chain forms a cycle";
        assert_eq!(fails(&family(&[Some(0)])), [format!("spans[0].{cycle}")]);
        assert_eq!(
            fails(&family(&[None, Some(2), Some(1)])),
            [format!("spans[1].{cycle}"), format!("spans[2].{cycle}")]
        );
        // 0 -> 1 -> 2 -> 3 -> 4 -> 0, with 5 hanging off the cycle and 6 a root.
        let long = family(&[Some(1), Some(2), Some(3), Some(4), Some(0), Some(2), None]);
        let expected: Vec<String> = (0..5).map(|i| format!("spans[{i}].{cycle}")).collect();
        assert_eq!(fails(&long), expected);
    }

    #[test]
    fn cycle_members_finds_every_cycle_once() {
        assert_eq!(cycle_members(&[]), Vec::<usize>::new());
        assert_eq!(cycle_members(&[None, Some(0)]), Vec::<usize>::new());
        assert_eq!(cycle_members(&[Some(0), Some(0)]), [0]);
        assert_eq!(cycle_members(&[Some(3), Some(2), Some(1), Some(0)]), [0, 1, 2, 3]);
        assert_eq!(cycle_members(&[Some(1), Some(2), Some(1), Some(2)]), [1, 2]);
    }

    #[test]
    fn span_ids_are_unique_within_a_trace() {
        let spans = a(vec![
            span_with(vec![("span_id", s(SPAN_A))]),
            span_with(vec![("span_id", s(SPAN_B))]),
            span_with(vec![("span_id", s(SPAN_A))]),
            span_with(vec![("span_id", s(SPAN_A))]),
        ]);
        assert_eq!(
            fails(&trace(vec![("spans", spans)])),
            [
                "spans[2].span_id: duplicate span_id (also at spans[0])",
                "spans[3].span_id: duplicate span_id (also at spans[0])",
            ]
        );
        let v = ok(&trace(vec![("spans", a(vec![span_with(vec![]), span_with(vec![])]))]));
        let (first, second) = (v.get("spans[0].span_id").str(), v.get("spans[1].span_id").str());
        assert_eq!(first.len(), 16);
        assert!(ids::parse_span_id(first).is_some() && first != second);
    }

    #[test]
    fn span_limit() {
        let limits = Limits { max_spans: 2, ..Limits::default() };
        let spans = |n| trace(vec![("spans", V::Arr(vec![span_with(vec![]); n]))]);
        assert!(canonicalize(&spans(2), &limits, &Redaction::default(), NOW).is_ok());
        let errors = canonicalize(&spans(3), &limits, &Redaction::default(), NOW).unwrap_err();
        assert_eq!(errors, [FieldError::new("spans", "at most 2 entries allowed, got 3")]);
    }

    // ---- events ----

    #[test]
    fn event_types_are_normalized() {
        for (given, expected) in [
            ("model.call", "model.call"),
            ("LLM", "model.call"),
            ("chat", "model.call"),
            ("Model_Call", "model.call"),
            ("llm-call", "model.call"),
            ("embed", "model.embedding"),
            ("mcp.tool_call", "mcp.tool_call"),
            ("MCP.TOOL_CALL", "mcp.tool_call"),
            ("tool-call", "mcp.tool_call"),
            ("function_call", "mcp.tool_call"),
            ("skill", "skill.invoke"),
            ("agent.msg", "agent.message"),
            ("workflow", "workflow.step"),
            ("decision", "policy.decision"),
            ("approval", "approval.requested"),
            ("approved", "approval.approved"),
            ("Rejected", "approval.denied"),
            ("edit", "human.edit"),
            ("final", "action.finalized"),
            ("outcome", "outcome.recorded"),
            ("state", "state.reference"),
            ("state.reference", "state.reference"),
            ("", "custom.event"),
            ("custom.MyThing", "custom.MyThing"),
            ("CUSTOM.Foo", "custom.Foo"),
            ("MyThing", "custom.mything"),
            ("Tool_Call_Extra", "custom.tool_call_extra"),
            ("Ünïcode", "custom.ünïcode"),
            (
                "a-very-long-event-type-name-beyond-the-buffer",
                "custom.a-very-long-event-type-name-beyond-the-buffer",
            ),
        ] {
            assert_eq!(normalize_event_type(given), expected, "{given:?}");
        }
    }

    #[test]
    fn events_get_ids_types_and_times() {
        let v = ok(&trace(vec![(
            "events",
            a(vec![m(vec![]), m(vec![("type", s(""))]), m(vec![("type", s("Tool"))])]),
        )]));
        assert_eq!(v.get("events[0]").keys(), ["event_id", "type", "at"]);
        assert!(ids::parse_span_id(v.get("events[0].event_id").str()).is_some());
        assert_eq!(v.get("events[0].type").str(), "custom.event");
        assert_eq!(v.get("events[0].at").ts(), NOW);
        assert_eq!(v.get("events[1]").keys(), ["type", "event_id", "at"]);
        assert_eq!(v.get("events[1].type").str(), "custom.event");
        assert_eq!(v.get("events[2].type").str(), "mcp.tool_call");

        let ids = a(vec![
            m(vec![("event_id", s("a"))]),
            m(vec![("event_id", s("b"))]),
            m(vec![("event_id", s("a"))]),
        ]);
        fails_with(
            &trace(vec![("events", ids)]),
            "events[2].event_id: duplicate event_id (also at events[0])",
        );
        let event = |field, value| trace(vec![("events", a(vec![m(vec![(field, value)])]))]);
        fails_with(
            &event("status", s("done")),
            "events[0].status: must be one of: started, proposed, pending, succeeded, failed, \
             blocked; got \"done\"",
        );
        fails_with(
            &event("event_id", s(&"e".repeat(129))),
            "events[0].event_id: must be 1..128 characters, got 129",
        );
        fails_with(
            &event("parent_id", s("")),
            "events[0].parent_id: must be 1..128 characters, got 0",
        );
        fails_with(&event("type", V::Int(1)), "events[0].type: expected a string, got int");
        let v = ok(&event("status", s("blocked")));
        assert_eq!(v.get("events[0].status").str(), "blocked");
    }

    #[test]
    fn decision_summaries_allow_only_listed_keys_and_small_values() {
        let event = |decision: V| {
            trace(vec![("events", a(vec![m(vec![("metadata", m(vec![("decision", decision)]))])]))])
        };
        let allowed = m(vec![
            ("proposal_summary", s("swap vendor")),
            ("changed_fields", a(vec![s("price"), s("vendor")])),
            ("change_type", V::Nil),
            ("outcome_score", V::F64(0.5)),
            ("outcome_label", V::Bool(true)),
            ("redaction_version", V::Int(2)),
            ("reason_summary", s(&"r".repeat(500))),
        ]);
        let v = ok(&event(allowed.clone()));
        assert_eq!(v.get("events[0].metadata.decision"), &norm(&allowed));

        let at = "events[0].metadata.decision";
        let errors = fails(&event(m(vec![("raw_prompt", s("secret"))])));
        assert_eq!(
            errors,
            [format!(
                "{at}.raw_prompt: not allowed in a decision summary; allowed keys: \
                 proposal_summary, changed_fields, change_summary, change_type, final_action, \
                 outcome_label, outcome_score, reason_summary, redaction_version"
            )]
        );
        let values = "expected a string, number, bool, nil or array of strings";
        let too_long = "must be at most 500 characters, got 501";
        let cases = [
            (("change_summary", m(vec![])), format!("change_summary: {values}, got map")),
            (("final_action", V::Bin(vec![])), format!("final_action: {values}, got bytes")),
            (("reason_summary", s(&"r".repeat(501))), format!("reason_summary: {too_long}")),
            (
                ("changed_fields", a(vec![s("a"), V::Int(1)])),
                "changed_fields[1]: expected a string, got int".into(),
            ),
            (
                ("changed_fields", a(vec![s(&"x".repeat(501))])),
                format!("changed_fields[0]: {too_long}"),
            ),
            (
                ("outcome_score", V::F64(f64::INFINITY)),
                "outcome_score: must be a finite number, got inf".into(),
            ),
        ];
        for (entry, expected) in cases {
            fails_with(&event(m(vec![entry])), &format!("{at}.{expected}"));
        }
        fails_with(&event(s("approved")), &format!("{at}: expected a map, got string"));
        // Other metadata keys are ordinary "any" values.
        let other = trace(vec![(
            "events",
            a(vec![m(vec![("metadata", m(vec![("raw", m(vec![("x", V::F64(f64::NAN))]))]))])]),
        )]);
        fails_with(&other, "events[0].metadata.raw.x: must be a finite number, got NaN");
    }

    // ---- "any" values and limits ----

    #[test]
    fn any_values_reject_non_json_data_with_its_path() {
        let metadata = |v: V| trace(vec![("metadata", v)]);
        fails_with(
            &metadata(m(vec![("a", m(vec![("b", a(vec![V::Int(1), V::F64(f64::NAN)]))]))])),
            "metadata.a.b[1]: must be a finite number, got NaN",
        );
        fails_with(
            &metadata(m(vec![("blob", V::Bin(vec![1, 2]))])),
            "metadata.blob: expected a JSON-compatible value, got bytes",
        );
        fails_with(
            &metadata(m(vec![("x", V::Ext(5, vec![1]))])),
            "metadata.x: expected a JSON-compatible value, got extension type 5",
        );
        fails_with(
            &metadata(m(vec![("t", V::Ext(-1, vec![1]))])),
            "metadata.t: invalid timestamp extension",
        );
        let far = Timestamp { secs: Timestamp::MAX.secs + 1, nanos: 0 };
        fails_with(
            &metadata(m(vec![("t", ext(far))])),
            "metadata.t: timestamp out of range (years 1..9999)",
        );
        let attributes = m(vec![("gen_ai.usage.input_tokens", V::F32(f32::INFINITY))]);
        let spans = a(vec![span_with(vec![]), span_with(vec![("attributes", attributes)])]);
        fails_with(
            &trace(vec![("spans", spans)]),
            "spans[1].attributes.gen_ai.usage.input_tokens: must be a finite number, got inf",
        );
        let tool = a(vec![m(vec![
            ("tool_name", s("t")),
            ("output", a(vec![m(vec![("v", V::F64(f64::NEG_INFINITY))])])),
        ])]);
        fails_with(
            &trace(vec![("tool_calls", tool)]),
            "tool_calls[0].output[0].v: must be a finite number, got -inf",
        );

        let fine = m(vec![
            ("when", ext(NOW)),
            (
                "list",
                a(vec![V::Nil, V::Bool(false), V::Int(-5), V::UInt(u64::MAX), V::F32(1.5), s("ü")]),
            ),
            ("empty", m(vec![])),
            ("nested", a(vec![a(vec![]), m(vec![("k", a(vec![m(vec![])]))])])),
        ]);
        let v = ok(&metadata(fine.clone()));
        assert_eq!(v.get("metadata"), &norm(&fine));
    }

    fn nested_maps(depth: usize) -> V {
        (0..depth).fold(V::Nil, |inner, _| m(vec![("a", inner)]))
    }

    #[test]
    fn nesting_is_limited_across_the_whole_document() {
        // metadata is level 2, so 63 nested maps inside it reach level 64.
        ok(&trace(vec![("metadata", nested_maps(63))]));
        let path = format!("metadata{}", ".a".repeat(63));
        fails_with(
            &trace(vec![("metadata", nested_maps(64))]),
            &format!("{path}: nested deeper than the limit of 64 levels"),
        );
        let arrays = (0..200).fold(V::Nil, |inner, _| a(vec![inner]));
        let errors = fails(&trace(vec![("metadata", m(vec![("x", arrays)]))]));
        assert_eq!(
            errors,
            [format!("metadata.x{}: nested deeper than the limit of 64 levels", "[0]".repeat(62))]
        );

        let limits = Limits { max_depth: 3, ..Limits::default() };
        let input = trace(vec![("spans", a(vec![span_with(vec![("attributes", m(vec![]))])]))]);
        let errors = canonicalize(&input, &limits, &Redaction::default(), NOW).unwrap_err();
        assert_eq!(
            errors,
            [FieldError::new("spans[0].attributes", "nested deeper than the limit of 3 levels")]
        );
        let limits = Limits { max_depth: 1, ..Limits::default() };
        let errors = canonicalize(&input, &limits, &Redaction::default(), NOW).unwrap_err();
        assert_eq!(errors, [FieldError::new("spans", "nested deeper than the limit of 1 levels")]);

        // Far deeper than any stack would allow in a recursive walker.
        let mut deep = trace(vec![]);
        deep[0] += 1; // one more entry in the top-level map
        deep.extend(enc(&s("metadata")));
        deep.extend([0x81, 0xa1, b'a'].repeat(500_000));
        deep.push(0xc0);
        let errors = fails(&deep);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].ends_with("nested deeper than the limit of 64 levels"));
    }

    #[test]
    fn size_limit_is_checked_before_parsing() {
        let limits = Limits { max_trace_bytes: 16, ..Limits::default() };
        let input = trace(vec![("framework", s("some framework"))]);
        let errors = canonicalize(&input, &limits, &Redaction::default(), NOW).unwrap_err();
        let expected = format!("trace is {} bytes; the limit (max_trace_bytes) is 16", input.len());
        assert_eq!(errors, [FieldError::new("", expected)]);
        let garbage = [0xc1; 17];
        assert_eq!(
            canonicalize(&garbage, &limits, &Redaction::default(), NOW).unwrap_err()[0].path,
            ""
        );
    }

    #[test]
    fn output_growth_is_bounded() {
        let limits = Limits { max_trace_bytes: 8 << 10, ..Limits::default() };
        let events = trace(vec![("events", V::Arr(vec![m(vec![]); 2000]))]);
        assert!(events.len() < limits.max_trace_bytes);
        let errors = canonicalize(&events, &limits, &Redaction::default(), NOW).unwrap_err();
        let max = 2 * limits.max_trace_bytes + (64 << 10);
        assert_eq!(
            errors,
            [FieldError::new("events", format!("the canonical trace grows past {max} bytes"))]
        );
        assert!(canonicalize(&events, &Limits::default(), &Redaction::default(), NOW).is_ok());
    }

    #[test]
    fn malformed_msgpack_stops_with_one_error() {
        let input = enc(&full_trace());
        for cut in 0..input.len() {
            let errors = fails(&input[..cut]);
            assert_eq!(errors.len(), 1, "cut at {cut}: {errors:?}");
            assert!(errors[0].contains("malformed msgpack at byte"), "{errors:?}");
        }
        let mut trailing = trace(vec![]);
        let len = trailing.len();
        trailing.push(0xc0);
        fails_with(
            &trailing,
            &format!("malformed msgpack at byte {len}: trailing bytes after the value"),
        );
        // Field errors found before the damage are dropped in favour of the one error.
        let mut damaged = trace(vec![("framework", V::Int(1)), ("tags", a(vec![s("x")]))]);
        damaged.truncate(damaged.len() - 1);
        let errors = fails(&damaged);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("tags[0]: malformed msgpack at byte"), "{errors:?}");
    }

    // ---- secrets ----

    /// A fake GitHub token: the redaction tests' secret.
    fn ghp() -> String {
        format!("ghp_{}", "aB3dE5fG7hJ9kL2mN4pQ6rS8tU0vW1xY3zA5")
    }

    fn with(redaction: &Redaction, input: &[u8]) -> Result<Canonical, Vec<FieldError>> {
        canonicalize(input, &Limits::default(), redaction, NOW)
    }

    fn reject() -> Redaction {
        Redaction::new(Mode::Reject, &[], &[]).unwrap()
    }

    /// A trace holding `secret` in every free-text field, and the paths it is at.
    fn secret_everywhere(secret: &str) -> (Vec<u8>, Vec<&'static str>) {
        let text = || s(&format!("see {secret} here"));
        let decision = m(vec![("reason_summary", text()), ("changed_fields", a(vec![text()]))]);
        let input = trace(vec![
            ("input", text()),
            ("output", text()),
            (
                "tool_calls",
                a(vec![m(vec![
                    ("tool_name", s("web")),
                    ("input", m(vec![("q", m(vec![("deep", a(vec![V::Int(1), text()]))]))])),
                    ("output", text()),
                    ("error", text()),
                ])]),
            ),
            ("metadata", m(vec![("notes", a(vec![text()]))])),
            (
                "spans",
                a(vec![m(vec![
                    ("name", text()),
                    ("status_message", text()),
                    ("attributes", m(vec![("prompt", text())])),
                    (
                        "events",
                        a(vec![m(vec![("name", text()), ("attributes", m(vec![("x", text())]))])]),
                    ),
                ])]),
            ),
            (
                "events",
                a(vec![m(vec![("metadata", m(vec![("why", text()), ("decision", decision)]))])]),
            ),
        ]);
        let paths = vec![
            "input",
            "output",
            "tool_calls[0].input.q.deep[1]",
            "tool_calls[0].output",
            "tool_calls[0].error",
            "metadata.notes[0]",
            "spans[0].name",
            "spans[0].status_message",
            "spans[0].attributes.prompt",
            "spans[0].events[0].name",
            "spans[0].events[0].attributes.x",
            "events[0].metadata.why",
            "events[0].metadata.decision.reason_summary",
            "events[0].metadata.decision.changed_fields[0]",
        ];
        (input, paths)
    }

    #[test]
    fn secrets_are_redacted_in_every_free_text_field() {
        let (input, paths) = secret_everywhere(&ghp());
        let canonical = run(&input).unwrap();
        let v = decode(&canonical.bytes);
        for path in &paths {
            assert_eq!(v.get(path).str(), "see [REDACTED:github_token] here", "{path}");
        }
        assert_eq!(v.get("redactions"), &V::UInt(paths.len() as u64));
        let secret = ghp();
        assert!(!canonical.bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
        // Redacting again finds nothing more.
        let again = decode(&run(&canonical.bytes).unwrap().bytes);
        assert_eq!(again.get("redactions"), &V::UInt(0));
        assert_eq!(again.get("input"), v.get("input"));
    }

    #[test]
    fn ids_names_and_tags_are_not_scanned() {
        let secret = ghp();
        let input = trace(vec![
            ("session_id", s(&secret)),
            ("tags", a(vec![s(&secret)])),
            ("tool_calls", a(vec![m(vec![("tool_name", s(&secret))])])),
        ]);
        let v = ok(&input);
        assert_eq!(v.get("session_id").str(), secret);
        assert_eq!(v.get("tags[0]").str(), secret);
        assert_eq!(v.get("tool_calls[0].tool_name").str(), secret);
        assert_eq!(v.get("redactions"), &V::UInt(0));
    }

    #[test]
    fn values_under_secret_keys_are_replaced_whole() {
        let input = trace(vec![(
            "metadata",
            m(vec![
                ("password", s("hunter2")),
                ("X-Api-Key", m(vec![("nested", a(vec![s(&ghp()), V::Int(1)]))])),
                ("clientSecret", V::Int(1234)),
                ("auth", m(vec![("refresh_token", a(vec![s("r1"), s("r2")]))])),
                ("token", V::Nil),
                ("cookie", s("")),
                ("Authorization", s("[REDACTED]")),
                ("max_tokens", V::Int(512)),
            ]),
        )]);
        let canonical = run(&input).unwrap();
        let v = decode(&canonical.bytes);
        let redacted = s("[REDACTED]");
        assert_eq!(v.get("metadata.password"), &redacted);
        assert_eq!(v.get("metadata.X-Api-Key"), &redacted, "a whole map, its token not counted");
        assert_eq!(v.get("metadata.clientSecret"), &redacted);
        assert_eq!(v.get("metadata.auth.refresh_token"), &redacted);
        assert_eq!(v.get("metadata.token"), &V::Nil, "nothing to hide");
        assert_eq!(v.get("metadata.cookie"), &s(""));
        assert_eq!(v.get("metadata.max_tokens"), &V::UInt(512));
        assert_eq!(v.get("redactions"), &V::UInt(4));
        // Event metadata's own keys too.
        let event =
            trace(vec![("events", a(vec![m(vec![("metadata", m(vec![("api_key", s("k"))]))])]))]);
        assert_eq!(ok_redacted(&event).get("events[0].metadata.api_key"), &redacted);
    }

    /// The decoded output of a trace that has redactions (not a fixed point: redacting
    /// again counts none).
    fn ok_redacted(input: &[u8]) -> V {
        decode(&run(input).unwrap_or_else(|e| panic!("unexpected errors: {e:?}")).bytes)
    }

    #[test]
    fn strings_with_wide_headers_are_replaced_whole() {
        // A short string in a str8 header (0xd9), as some encoders write it.
        let input = trace(vec![("input", V::RawStr(format!("k={}", ghp()).into_bytes()))]);
        assert_eq!(ok_redacted(&input).get("input").str(), "k=[REDACTED:github_token]");
        let long = format!("{}{}", "x ".repeat(40_000), ghp());
        let v = ok_redacted(&trace(vec![("output", s(&long))]));
        assert!(v.get("output").str().ends_with("x [REDACTED:github_token]"));
    }

    #[test]
    fn off_stores_secrets_as_given() {
        let (input, paths) = secret_everywhere(&ghp());
        let off = Redaction::new(Mode::Off, &[], &[]).unwrap();
        let v = decode(&with(&off, &input).unwrap().bytes);
        for path in &paths {
            assert_eq!(v.get(path).str(), format!("see {} here", ghp()), "{path}");
        }
        assert_eq!(v.get("redactions"), &V::UInt(0));
    }

    #[test]
    fn reject_names_paths_and_kinds_never_the_secret() {
        let (input, paths) = secret_everywhere(&ghp());
        let errors = with(&reject(), &input).unwrap_err();
        let got: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(got, paths);
        for e in &errors {
            assert_eq!(e.kind.as_deref(), Some("github_token"));
            assert_eq!(e.message, "holds a secret (github_token)");
        }
        let keyed = trace(vec![(
            "spans",
            a(vec![
                m(vec![("name", s("a"))]),
                m(vec![("name", s("b")), ("attributes", m(vec![("api_key", s("k1"))]))]),
            ]),
        )]);
        let errors = with(&reject(), &keyed).unwrap_err();
        assert_eq!(errors, [FieldError::secret("spans[1].attributes.api_key", redact::KEY_NAME)]);
        assert_eq!(
            errors[0].to_string(),
            "spans[1].attributes.api_key: is under a secret-looking key name"
        );
        assert!(with(&reject(), &trace(vec![("input", s("clean"))])).is_ok());
    }

    #[test]
    fn reject_reports_invalid_fields_before_secrets() {
        let input = trace(vec![("input", s(&ghp())), ("status", s("bogus"))]);
        let errors = with(&reject(), &input).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "status");
        assert_eq!(errors[0].kind, None);
    }

    #[test]
    fn many_rejects_secrets_with_element_paths() {
        let mut batch = vec![0x92];
        batch.extend(trace(vec![]));
        batch.extend(trace(vec![("metadata", m(vec![("db", s(&format!("pg://u:{}@h", "pw1")))]))]));
        let errors = canonicalize_many(&batch, &Limits::default(), &reject(), NOW).unwrap_err();
        assert_eq!(errors, [FieldError::secret("[1].metadata.db", "url_password")]);
        let traces =
            canonicalize_many(&batch, &Limits::default(), &Redaction::default(), NOW).unwrap();
        assert_eq!(
            decode(&traces[1].bytes).get("metadata.db").str(),
            "pg://u:[REDACTED:url_password]@h"
        );
        assert_eq!(decode(&traces[1].bytes).get("redactions"), &V::UInt(1));
        assert_eq!(decode(&traces[0].bytes).get("redactions"), &V::UInt(0));
    }

    // ---- canonicalize_many ----

    #[test]
    fn many_canonicalizes_each_trace() {
        let inputs = [trace(vec![]), enc(&full_trace()), trace(vec![("tags", a(vec![s("x")]))])];
        let mut batch = vec![0x93];
        inputs.iter().for_each(|input| batch.extend(input));
        let traces =
            canonicalize_many(&batch, &Limits::default(), &Redaction::default(), NOW).unwrap();
        assert_eq!(traces.len(), 3);
        assert_eq!(traces[1], run(&inputs[1]).unwrap());
        assert_eq!(decode(&traces[2].bytes).get("tags"), &a(vec![s("x")]));
        assert!(canonicalize_many(&[0x90], &Limits::default(), &Redaction::default(), NOW)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn many_is_all_or_nothing_with_prefixed_paths() {
        let bad_span = trace(vec![("spans", a(vec![m(vec![])]))]);
        let mut batch = vec![0x94];
        for input in [trace(vec![]), bad_span, trace(vec![]), enc(&m(vec![("status", s("x"))]))] {
            batch.extend(input);
        }
        let errors: Vec<String> =
            canonicalize_many(&batch, &Limits::default(), &Redaction::default(), NOW)
                .unwrap_err()
                .iter()
                .map(ToString::to_string)
                .collect();
        assert_eq!(
            errors,
            [
                "[1].spans[0].name: required field is missing",
                "[3].status: must be one of: running, succeeded, failed; got \"x\"",
                "[3].agent_name: required field is missing",
            ]
        );
    }

    #[test]
    fn many_checks_sizes_per_element_and_structure() {
        let small = trace(vec![]);
        let big = trace(vec![("input", s(&"x".repeat(100)))]);
        let limits = Limits { max_trace_bytes: small.len(), ..Limits::default() };
        let mut batch = vec![0x92];
        batch.extend(&small);
        batch.extend(&big);
        let errors = canonicalize_many(&batch, &limits, &Redaction::default(), NOW).unwrap_err();
        let expected =
            format!("trace is {} bytes; the limit (max_trace_bytes) is {}", big.len(), small.len());
        assert_eq!(errors, [FieldError::new("[1]", expected)]);

        let many = |bytes: &[u8]| {
            canonicalize_many(bytes, &Limits::default(), &Redaction::default(), NOW).unwrap_err()
        };
        assert_eq!(many(&small), [FieldError::new("", "expected an array of traces, got map")]);
        assert_eq!(
            many(&[]),
            [FieldError::new("", "malformed msgpack at byte 0: unexpected end of input")]
        );
        let mut truncated = vec![0x92];
        truncated.extend(&small);
        truncated.extend(&small[..small.len() - 1]);
        let errors = many(&truncated);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "[1]");
        // A million elements claimed (and present, as nils): 100 errors, then a stop.
        let mut nils = vec![0xdd, 0x00, 0x0f, 0x42, 0x40];
        nils.resize(nils.len() + 1_000_000, 0xc0);
        let errors = many(&nils);
        assert_eq!(errors.len(), MAX_ERRORS);
        assert_eq!(errors[99], FieldError::new("[99]", "expected a map, got nil"));
        let mut trailing = vec![0x91];
        trailing.extend(&small);
        trailing.push(0xc0);
        let len = trailing.len() - 1;
        assert_eq!(
            many(&trailing),
            [FieldError::new(
                "",
                format!("malformed msgpack at byte {len}: trailing bytes after the value")
            )]
        );
    }

    // ---- bytes from the real Python encoder ----

    /// `msgspec.msgpack.encode` of a dict with tz-aware datetimes (timestamp extensions in
    /// their 32- and 64-bit forms) and naive ones (ISO strings):
    /// {"agent_name": "py-agent", "timestamp": datetime(2024,1,2,3,4,5,678901, utc),
    ///  "ended_at": datetime(2024,1,2,3,4,6), "metadata": {"when": datetime(2024,1,1, utc),
    ///  "naive": datetime(2024,1,1,12,0), "n": 1.5, "list": [1, "x", None, True]},
    ///  "spans": [{"name": "llm", "kind": "llm", "start_time": datetime(2024,1,2,3,4,5),
    ///             "end_time": datetime(2024,1,2,5,4,5,500000, tz=+02:00)}],
    ///  "token_usage": {"prompt_tokens": 10, "completion_tokens": 5}}
    const PY_DICT: &str = concat!(
        "86aa6167656e745f6e616d65a870792d6167656e74a974696d657374616d70d7ffa1dcd42065937d25a8",
        "656e6465645f6174b3323032342d30312d30325430333a30343a3036a86d6574616461746184a4776865",
        "6ed6ff65920080a56e61697665b3323032342d30312d30315431323a30303a3030a16ecb3ff800000000",
        "0000a46c6973749401a178c0c3a57370616e739184a46e616d65a36c6c6da46b696e64a36c6c6daa7374",
        "6172745f74696d65b3323032342d30312d30325430333a30343a3035a8656e645f74696d65d7ff773594",
        "0065937d25ab746f6b656e5f757361676582ad70726f6d70745f746f6b656e730ab1636f6d706c657469",
        "6f6e5f746f6b656e7305",
    );

    /// A msgspec `Struct` (omit_defaults, UNSET fields left out) whose `timestamp` field
    /// comes after `spans`: Trace(agent_name="s", spans=[Span(name="a",
    /// span_id="00f067aa0ba902b7", end_time=datetime(2024,1,1,0,0,1, utc))],
    /// timestamp=datetime(2024,1,1, utc)).
    const PY_STRUCT: &str = concat!(
        "83aa6167656e745f6e616d65a173a57370616e739183a46e616d65a161a77370616e5f6964b030306630",
        "363761613062613930326237a8656e645f74696d65d6ff65920081a974696d657374616d70d6ff659200",
        "80",
    );

    fn unhex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    #[test]
    fn accepts_what_msgspec_encodes() {
        let input = unhex(PY_DICT);
        let v = ok(&input);
        assert_eq!(v.get("timestamp").ts(), ts("2024-01-02T03:04:05.678901Z"));
        assert_eq!(v.get("ended_at").ts(), ts("2024-01-02T03:04:06Z"));
        assert_eq!(v.get("metadata"), decode(&input).get("metadata"), "copied unchanged");
        assert_eq!(v.get("metadata.when").ts(), ts("2024-01-01T00:00:00Z"));
        assert_eq!(v.get("spans[0].kind").str(), "LLM");
        assert_eq!(v.get("spans[0].start_time").ts(), ts("2024-01-02T03:04:05Z"));
        assert_eq!(v.get("spans[0].end_time").ts(), ts("2024-01-02T03:04:05.5Z"));
        assert_eq!(v.get("spans[0].duration_ms"), &V::F64(500.0));
        assert_eq!(v.get("token_usage.total_tokens"), &V::UInt(15));

        let v = ok(&unhex(PY_STRUCT));
        assert_eq!(v.get("spans[0].span_id").str(), SPAN_A);
        assert_eq!(v.get("spans[0].start_time").ts(), ts("2024-01-01T00:00:00Z"));
        assert_eq!(v.get("spans[0].duration_ms"), &V::F64(1000.0));
        assert_eq!(v.keys(), ["agent_name", "spans", "timestamp", "trace_id", "redactions"]);
    }

    // ---- robustness ----

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn mutate(seed: &[u8], rng: &mut XorShift) -> Vec<u8> {
        const INTERESTING: [u8; 12] =
            [0xc0, 0xc1, 0xc4, 0xc7, 0xcb, 0xd7, 0xdd, 0xdf, 0xff, 0x80, 0x9f, 0xbf];
        let mut bytes = seed.to_vec();
        match rng.below(6) {
            0 => bytes.truncate(rng.below(seed.len())),
            1 => {
                for _ in 0..=rng.below(4) {
                    let i = rng.below(bytes.len());
                    bytes[i] ^= 1 << rng.below(8);
                }
            }
            2 => {
                let i = rng.below(bytes.len());
                bytes[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            3 => bytes = (0..rng.below(64)).map(|_| rng.next() as u8).collect(),
            4 => {
                let (from, to) = (rng.below(bytes.len()), rng.below(bytes.len()));
                let piece = bytes[from.min(to)..from.max(to)].to_vec();
                let at = rng.below(bytes.len());
                bytes.splice(at..at, piece);
            }
            _ => {
                let (from, to) = (rng.below(bytes.len()), rng.below(bytes.len()));
                bytes.drain(from.min(to)..from.max(to));
            }
        }
        bytes
    }

    /// A random, well-formed value built from field names and edge-case scalars, so the
    /// validators (not just the reader) see every shape in every place.
    fn random_value(rng: &mut XorShift, depth: usize) -> V {
        const WORDS: [&str; 16] = [
            "",
            "x",
            SPAN_A,
            SPAN_B,
            TRACE_ID,
            "2024-01-01T00:00:00Z",
            "2023-02-29",
            "llm",
            "running",
            "UNSET",
            "custom.x",
            "decision",
            "1..9",
            "é",
            "0000000000000000",
            "tool",
        ];
        let mut names: Vec<&str> = TraceField::NAMES.to_vec();
        names.extend(SpanField::NAMES);
        names.extend(EventField::NAMES);
        names.extend(DECISION_KEYS);
        names.extend(["prompt_tokens", "total_tokens", "tool_name", "bogus"]);
        match rng.below(if depth == 0 { 9 } else { 12 }) {
            0 => V::Nil,
            1 => V::Bool(rng.next() % 2 == 0),
            2 => V::Int(rng.next() as i64 >> rng.below(64)),
            3 => V::F64([0.0, -0.0, 1.5, f64::NAN, f64::INFINITY, -1.0, 1e300][rng.below(7)]),
            4 | 5 => s(WORDS[rng.below(WORDS.len())]),
            6 => V::RawStr(vec![0xff, b'a']),
            7 => ext(Timestamp { secs: rng.next() as i64 >> rng.below(64), nanos: 0 }),
            8 => {
                [V::Bin(vec![1]), V::Ext(3, vec![1]), V::Ext(-1, vec![0; 3])][rng.below(3)].clone()
            }
            9 => V::Arr((0..rng.below(4)).map(|_| random_value(rng, depth - 1)).collect()),
            _ => V::Map(
                (0..rng.below(5))
                    .map(|_| (s(names[rng.below(names.len())]), random_value(rng, depth - 1)))
                    .collect(),
            ),
        }
    }

    #[test]
    fn never_panics_on_mutated_random_or_structured_input() {
        let seeds = [
            enc(&full_trace()),
            unhex(PY_DICT),
            unhex(PY_STRUCT),
            family(&[None, Some(0), Some(1)]),
        ];
        let limits = Limits { max_trace_bytes: 1 << 20, max_depth: 12, max_spans: 64 };
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut accepted = 0;
        let mut check = |input: &[u8]| {
            if let Ok(canonical) = canonicalize(input, &limits, &Redaction::default(), NOW) {
                accepted += 1;
                let again = canonicalize(&canonical.bytes, &limits, &Redaction::default(), NOW)
                    .map(|again| (again.trace_id, again.bytes));
                let expected = (canonical.trace_id, canonical.bytes);
                assert_eq!(again, Ok(expected), "not a fixed point: {input:02x?}");
            }
        };
        for i in 0..200_000 {
            let input = mutate(&seeds[i % seeds.len()], &mut rng);
            check(&input);
            if i % 16 == 0 {
                let mut batch = vec![0x92];
                batch.extend(&input);
                batch.extend(&seeds[0]);
                let _ = canonicalize_many(&batch, &limits, &Redaction::default(), NOW);
            }
        }
        for _ in 0..50_000 {
            let mut fields = vec![(s("agent_name"), s("a"))];
            if let V::Map(more) = random_value(&mut rng, 4) {
                fields.extend(more);
            }
            check(&enc(&V::Map(fields)));
        }
        assert!(accepted > 1_000, "the fuzz loop should also exercise the success path");
    }

    #[test]
    fn redaction_keeps_mutated_input_valid() {
        let secrets = m(vec![
            ("password", m(vec![("x", a(vec![s(&ghp())]))])),
            ("url", s("redis://:pa55word@cache:6379")),
            ("é", s(&format!("é{}é", ghp()))),
        ]);
        let seeds = [secret_everywhere(&ghp()).0, trace(vec![("metadata", secrets)])];
        let limits = Limits { max_trace_bytes: 1 << 20, max_depth: 12, max_spans: 64 };
        let (redact, reject) = (Redaction::default(), reject());
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let mut redacted = 0;
        for i in 0..100_000 {
            let input = mutate(&seeds[i % seeds.len()], &mut rng);
            let _ = canonicalize(&input, &limits, &reject, NOW);
            let Ok(canonical) = canonicalize(&input, &limits, &redact, NOW) else { continue };
            let again = canonicalize(&canonical.bytes, &limits, &redact, NOW)
                .unwrap_or_else(|e| panic!("redacted output must be valid: {e:?}"));
            assert_eq!(decode(&again.bytes).get("redactions"), &V::UInt(0), "{input:02x?}");
            redacted += usize::from(decode(&canonical.bytes).get("redactions") != &V::UInt(0));
        }
        assert!(redacted > 1_000, "the loop should redact often");
    }

    // ---- timing ----

    /// A ~5.5 KB trace: 6 spans, 3 tool calls, 141 strings (keys included); the same shape
    /// as the msgspec-encoded trace the timings in the report were taken with.
    fn realistic_trace() -> Vec<u8> {
        let text = |n: usize| s(&"lorem ipsum ".repeat(n / 12 + 1)[..n]);
        let tool = |i: i64| {
            m(vec![
                ("tool_name", s("web_search")),
                ("input", m(vec![("query", text(60)), ("top_k", V::Int(i))])),
                ("output", m(vec![("results", a(vec![text(150), text(150)]))])),
                ("latency_ms", V::F64(12.5)),
            ])
        };
        let span = |i: usize| {
            let at = |nanos| ext(Timestamp { secs: NOW.secs + i as i64, nanos });
            let attributes =
                m(vec![("gen_ai.usage.input_tokens", V::Int(812)), ("gen_ai.prompt", text(330))]);
            let mut fields = vec![
                ("span_id", s(&format!("{:016x}", i + 1))),
                ("name", s("llm.chat")),
                ("kind", s("LLM")),
                ("start_time", at(0)),
                ("end_time", at(500_000_000)),
                ("attributes", attributes),
            ];
            if i > 0 {
                fields.push(("parent_span_id", s("0000000000000001")));
            }
            m(fields)
        };
        enc(&m(vec![
            ("trace_id", s(TRACE_ID)),
            ("agent_name", s("support-bot")),
            ("framework", s("langgraph")),
            ("input", text(400)),
            ("output", text(500)),
            ("tool_calls", a(vec![tool(0), tool(1), tool(2)])),
            ("latency_ms", V::F64(2300.0)),
            ("cost_usd", V::F64(0.0042)),
            (
                "token_usage",
                m(vec![("prompt_tokens", V::Int(4000)), ("completion_tokens", V::Int(600))]),
            ),
            ("metadata", m(vec![("customer", s("acme"))])),
            ("spans", V::Arr((0..6).map(span).collect())),
            ("timestamp", ext(NOW)),
            ("status", s("succeeded")),
            ("tags", a(vec![s("prod"), s("v2")])),
        ]))
    }

    /// `cargo test --release -- --ignored --nocapture canonicalize_timing`
    #[test]
    #[ignore = "timing; run in release mode"]
    fn canonicalize_timing() {
        let input = realistic_trace();
        let mut strings = 0;
        let mut r = Reader::new(&input);
        while !r.is_at_end() {
            strings += usize::from(matches!(r.read_token().unwrap(), Token::Str(_)));
        }
        let limits = Limits::default();
        let rounds = 200_000;
        let mean_us = |f: &mut dyn FnMut()| {
            let start = std::time::Instant::now();
            for _ in 0..rounds {
                f();
            }
            start.elapsed().as_secs_f64() * 1e6 / rounds as f64
        };
        let baseline = mean_us(&mut || {
            let mut r = Reader::new(std::hint::black_box(&input));
            while !r.is_at_end() {
                if let Ok(Token::Str(b)) = r.read_token() {
                    std::hint::black_box(utf8(b).is_some());
                }
            }
        });
        let redact = Redaction::default();
        let off = Redaction::new(Mode::Off, &[], &[]).unwrap();
        let run = |redaction: &Redaction| {
            mean_us(&mut || {
                let input = std::hint::black_box(&input);
                std::hint::black_box(canonicalize(input, &limits, redaction, NOW).unwrap());
            })
        };
        let (redacted, plain) = (run(&redact), run(&off));
        let scan = mean_us(&mut || {
            std::hint::black_box(redact.scan(std::hint::black_box(&input)).is_some());
        });
        println!(
            "{} bytes, {strings} strings: canonicalize {redacted:.2} µs with redaction, \
             {plain:.2} µs without (keyword pass alone {scan:.2} µs); \
             bare token walk with UTF-8 checks {baseline:.2} µs",
            input.len()
        );
    }
}
