//! Decision traces (SPEC §6): the status machine, the canonical encoding of events, their
//! hash chain, and the reads, which are self-access only.
//!
//! The writer thread applies a [`DecisionJob`] in one write transaction that re-reads the
//! envelope first, so two threads or processes cannot fork a chain: the writer serializes
//! this process, LMDB's write lock serializes processes. The byte layout is in
//! docs/format.md.

use std::ops::Bound;

use heed::{RoTxn, RwTxn, WithoutTls};
use sha2::{Digest, Sha256};

use crate::error::{Error, FieldError, Result};
use crate::ids::{new_ulid, parse_crockford, parse_trace_id, to_crockford, to_hex};
use crate::msgpack::{write_array_header, write_bool, write_nil, write_str, Reader, Token};
use crate::redact::Redaction;
use crate::store::{Databases, Store};
use crate::time::Timestamp;
use crate::writer::Failure;

pub type DecisionId = [u8; 16];
pub type Hash = [u8; 32];

/// The "previous hash" of a decision's first event.
pub const GENESIS: Hash = [0; 32];
/// Longest agent, intent, product, purpose, policy id, idempotency key, ... (characters).
const MAX_NAME_CHARS: usize = 256;
/// Longest rationale, summary or reason (characters).
const MAX_TEXT_CHARS: usize = 4096;
/// Largest encoded metadata, mutation summary or context.
const MAX_VALUE_BYTES: usize = 1 << 20;
/// Most decisions on one page of [`Store::decisions`].
pub const MAX_PAGE: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Open,
    NeedsApproval,
    Approved,
    Rejected,
    Committed,
    Aborted,
}

const STATUSES: [Status; 6] = [
    Status::Open,
    Status::NeedsApproval,
    Status::Approved,
    Status::Rejected,
    Status::Committed,
    Status::Aborted,
];

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::NeedsApproval => "needs_approval",
            Status::Approved => "approved",
            Status::Rejected => "rejected",
            Status::Committed => "committed",
            Status::Aborted => "aborted",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        STATUSES.into_iter().find(|s| s.name() == text)
    }

    fn from_byte(byte: u8) -> Option<Status> {
        STATUSES.get(usize::from(byte)).copied()
    }

    pub fn is_closed(self) -> bool {
        matches!(self, Status::Committed | Status::Aborted)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Propose,
    Approve,
    Override,
    Autonomous,
}

const MODES: [Mode; 4] = [Mode::Propose, Mode::Approve, Mode::Override, Mode::Autonomous];

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Propose => "propose",
            Mode::Approve => "approve",
            Mode::Override => "override",
            Mode::Autonomous => "autonomous",
        }
    }

    pub fn parse(text: &str) -> Option<Mode> {
        MODES.into_iter().find(|m| m.name() == text)
    }

    fn from_byte(byte: u8) -> Option<Mode> {
        MODES.get(usize::from(byte)).copied()
    }
}

/// An event's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Open,
    Read,
    Write,
    Evaluate,
    ApprovalRequested,
    ApprovalResolved,
    Context,
    Close,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Open => "open",
            Kind::Read => "read",
            Kind::Write => "write",
            Kind::Evaluate => "evaluate",
            Kind::ApprovalRequested => "approval_requested",
            Kind::ApprovalResolved => "approval_resolved",
            Kind::Context => "context",
            Kind::Close => "close",
        }
    }

    /// The types a caller may record (`open` is recorded by opening).
    pub fn parse_recordable(text: &str) -> Option<Kind> {
        [
            Kind::Read,
            Kind::Write,
            Kind::Evaluate,
            Kind::ApprovalRequested,
            Kind::ApprovalResolved,
            Kind::Context,
            Kind::Close,
        ]
        .into_iter()
        .find(|k| k.name() == text)
    }

    /// (required, also allowed) fields of this type.
    fn fields(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            Kind::Open => (&[], &[]),
            Kind::Read => (&["product", "purpose"], &["data_ref"]),
            Kind::Write => (&["product", "purpose"], &["mutation_summary", "idempotency_key"]),
            Kind::Evaluate => (&["policy_id", "outcome"], &["rationale"]),
            Kind::ApprovalRequested => (&[], &["by", "reason"]),
            Kind::ApprovalResolved => (&["approved"], &["by", "reason"]),
            Kind::Context => (&[], &["context", "summary"]),
            Kind::Close => (&["action"], &["reason"]),
        }
    }
}

/// One field value of an event, as encoded.
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Str(&'a str),
    Bool(bool),
    /// An msgpack value the caller encoded (checked to be exactly one value).
    Raw(&'a [u8]),
}

/// The fields of an event as the caller sent them; which are required or allowed depends
/// on the event's type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFields {
    pub product: Option<String>,
    pub purpose: Option<String>,
    pub data_ref: Option<String>,
    pub mutation_summary: Option<Vec<u8>>,
    pub idempotency_key: Option<String>,
    pub policy_id: Option<String>,
    pub outcome: Option<String>,
    pub rationale: Option<String>,
    pub approved: Option<bool>,
    pub by: Option<String>,
    pub context: Option<Vec<u8>>,
    pub summary: Option<String>,
    pub action: Option<String>,
    pub reason: Option<String>,
}

impl EventFields {
    /// The present fields in canonical order (SPEC §3's order).
    fn entries(&self) -> Vec<(&'static str, Value<'_>)> {
        [
            text("product", &self.product),
            text("purpose", &self.purpose),
            text("data_ref", &self.data_ref),
            raw("mutation_summary", &self.mutation_summary),
            text("idempotency_key", &self.idempotency_key),
            text("policy_id", &self.policy_id),
            text("outcome", &self.outcome),
            text("rationale", &self.rationale),
            self.approved.map(|b| ("approved", Value::Bool(b))),
            text("by", &self.by),
            raw("context", &self.context),
            text("summary", &self.summary),
            text("action", &self.action),
            text("reason", &self.reason),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Every problem with these fields for an event of type `kind`, by field name.
    pub fn validate(&self, kind: Kind) -> Result<()> {
        let (required, allowed) = kind.fields();
        let entries = self.entries();
        let mut errors = Vec::new();
        for name in required {
            if !entries.iter().any(|(n, _)| n == name) {
                errors
                    .push(FieldError::new(*name, format!("required for a {} event", kind.name())));
            }
        }
        if kind == Kind::Context && entries.is_empty() {
            errors.push(FieldError::new("context", "a context event needs context or summary"));
        }
        for (name, value) in &entries {
            if !required.contains(name) && !allowed.contains(name) {
                errors.push(FieldError::new(
                    *name,
                    format!("not a field of a {} event", kind.name()),
                ));
                continue;
            }
            let problem = match (*name, value) {
                ("outcome", Value::Str(s)) => one_of(s, &["allow", "deny", "requires_exception"]),
                ("action", Value::Str(s)) => one_of(s, &["commit", "abort"]),
                ("rationale" | "summary" | "reason", Value::Str(s)) => text_problem(s),
                (_, Value::Str(s)) => name_problem(s),
                (_, Value::Raw(b)) => value_problem(b, false),
                (_, Value::Bool(_)) => None,
            };
            if let Some(message) = problem {
                errors.push(FieldError::new(*name, message));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Validation(errors))
        }
    }

    /// Redacts the secrets of its free text (or refuses them, rejecting) before anything is
    /// hashed: a hash over a secret would pin it. Ids, enumerations and `by` are identifiers
    /// and are not scanned, as a trace's are not.
    fn clean(&mut self, redaction: &Redaction) -> Result<()> {
        let mut secrets = Vec::new();
        let texts = [
            ("purpose", &mut self.purpose),
            ("data_ref", &mut self.data_ref),
            ("rationale", &mut self.rationale),
            ("summary", &mut self.summary),
            ("reason", &mut self.reason),
        ];
        for (path, text) in texts {
            if let Some(text) = text {
                redaction.clean_text(path, text, &mut secrets);
            }
        }
        for (path, value) in
            [("mutation_summary", &mut self.mutation_summary), ("context", &mut self.context)]
        {
            if let Some(value) = value {
                redaction.clean_value(path, value, &mut secrets);
            }
        }
        refuse_secrets(secrets)
    }

    fn idempotency_key(&self, kind: Kind) -> Option<&str> {
        (kind == Kind::Write).then_some(self.idempotency_key.as_deref()).flatten()
    }
}

fn text<'a>(name: &'static str, value: &'a Option<String>) -> Option<(&'static str, Value<'a>)> {
    value.as_deref().map(|s| (name, Value::Str(s)))
}

fn raw<'a>(name: &'static str, value: &'a Option<Vec<u8>>) -> Option<(&'static str, Value<'a>)> {
    value.as_deref().map(|b| (name, Value::Raw(b)))
}

fn one_of(text: &str, choices: &[&str]) -> Option<String> {
    (!choices.contains(&text)).then(|| format!("expected one of {choices:?}, got {text:?}"))
}

fn name_problem(text: &str) -> Option<String> {
    let chars = text.chars().count();
    (chars == 0 || chars > MAX_NAME_CHARS)
        .then(|| format!("must be 1 to {MAX_NAME_CHARS} characters, got {chars}"))
}

fn text_problem(text: &str) -> Option<String> {
    let chars = text.chars().count();
    (chars > MAX_TEXT_CHARS).then(|| format!("must be at most {MAX_TEXT_CHARS} characters"))
}

/// Checks caller-encoded msgpack: exactly one value (a map when `map`), not too large.
fn value_problem(bytes: &[u8], map: bool) -> Option<String> {
    if bytes.len() > MAX_VALUE_BYTES {
        return Some(format!("encodes to more than {MAX_VALUE_BYTES} bytes"));
    }
    let mut reader = Reader::new(bytes);
    let first = match reader.read_token() {
        Ok(token) => token,
        Err(e) => return Some(format!("is not valid msgpack: {e}")),
    };
    if map && !matches!(first, Token::Map(_)) {
        return Some(format!("expected a dict, got {}", first.kind()));
    }
    match reader.skip_contents(&first).and_then(|()| reader.expect_end()) {
        Ok(()) => None,
        Err(e) => Some(format!("is not one valid msgpack value: {e}")),
    }
}

fn refuse_secrets(secrets: Vec<FieldError>) -> Result<()> {
    if secrets.is_empty() {
        Ok(())
    } else {
        Err(Error::SecretDetected(secrets))
    }
}

/// What `open_decision` records: the envelope's fixed fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRequest {
    pub agent: String,
    pub intent: String,
    pub mode: String,
    /// A msgpack map, as the caller encoded it.
    pub metadata: Option<Vec<u8>>,
    pub trace_id: Option<String>,
    pub run_id: Option<String>,
}

impl OpenRequest {
    fn validate(&self) -> Result<Mode> {
        let mut errors = Vec::new();
        let mut check = |path: &str, problem: Option<String>| {
            if let Some(message) = problem {
                errors.push(FieldError::new(path, message));
            }
        };
        check("agent", name_problem(&self.agent));
        check("intent", name_problem(&self.intent));
        check(
            "automation_mode",
            one_of(&self.mode, &MODES.map(Mode::name))
                .filter(|_| Mode::parse(&self.mode).is_none()),
        );
        check("metadata", self.metadata.as_deref().and_then(|m| value_problem(m, true)));
        check(
            "trace_id",
            self.trace_id
                .as_deref()
                .filter(|t| parse_trace_id(t).is_none())
                .map(|t| format!("must be 32 lowercase hex characters (not all zero), got {t:?}")),
        );
        check("run_id", self.run_id.as_deref().and_then(name_problem));
        match Mode::parse(&self.mode) {
            Some(mode) if errors.is_empty() => Ok(mode),
            _ => Err(Error::Validation(errors)),
        }
    }

    /// Redacts (or refuses) the secrets of `intent` and `metadata`, as events' are.
    fn clean(&mut self, redaction: &Redaction) -> Result<()> {
        let mut secrets = Vec::new();
        redaction.clean_text("intent", &mut self.intent, &mut secrets);
        if let Some(metadata) = &mut self.metadata {
            redaction.clean_value("metadata", metadata, &mut secrets);
        }
        refuse_secrets(secrets)
    }
}

/// A decision's current state, kept under its id in `decisions` (layout in docs/format.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub status: Status,
    pub mode: Mode,
    /// Events recorded so far, the `open` event included; the next event's sequence number.
    pub events: u32,
    pub last_hash: Hash,
    pub created_us: i64,
    /// When the last event was recorded (the `close` event's time once closed); later
    /// events never get an earlier timestamp, whatever the clock does.
    pub last_us: i64,
    pub agent: String,
    pub intent: String,
    pub metadata: Option<Vec<u8>>,
    pub trace_id: Option<String>,
    pub run_id: Option<String>,
}

const ENVELOPE_VERSION: u8 = 1;
const ABSENT: u32 = u32::MAX;

impl Envelope {
    /// When the decision was committed or aborted.
    pub fn closed_us(&self) -> Option<i64> {
        self.status.is_closed().then_some(self.last_us)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96 + self.agent.len() + self.intent.len());
        out.extend_from_slice(&[ENVELOPE_VERSION, self.status as u8, self.mode as u8]);
        out.extend_from_slice(&self.events.to_be_bytes());
        out.extend_from_slice(&self.last_hash);
        out.extend_from_slice(&self.created_us.to_be_bytes());
        out.extend_from_slice(&self.last_us.to_be_bytes());
        for field in [
            Some(self.agent.as_bytes()),
            Some(self.intent.as_bytes()),
            self.metadata.as_deref(),
            self.trace_id.as_deref().map(str::as_bytes),
            self.run_id.as_deref().map(str::as_bytes),
        ] {
            match field {
                Some(bytes) => {
                    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
                    out.extend_from_slice(bytes);
                }
                None => out.extend_from_slice(&ABSENT.to_be_bytes()),
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> std::result::Result<Envelope, String> {
        let mut rest = bytes;
        let mut take = |n: usize| -> std::result::Result<&[u8], String> {
            if rest.len() < n {
                return Err("the envelope is truncated".into());
            }
            let (head, tail) = rest.split_at(n);
            rest = tail;
            Ok(head)
        };
        let head = take(3)?;
        if head[0] != ENVELOPE_VERSION {
            return Err(format!("unknown envelope version {}", head[0]));
        }
        let status = Status::from_byte(head[1]).ok_or("unknown status byte")?;
        let mode = Mode::from_byte(head[2]).ok_or("unknown automation_mode byte")?;
        let events = u32::from_be_bytes(take(4)?.try_into().unwrap_or_default());
        let last_hash: Hash = take(32)?.try_into().unwrap_or_default();
        let created_us = i64::from_be_bytes(take(8)?.try_into().unwrap_or_default());
        let last_us = i64::from_be_bytes(take(8)?.try_into().unwrap_or_default());
        let mut fields = Vec::with_capacity(5);
        for _ in 0..5 {
            let len = u32::from_be_bytes(take(4)?.try_into().unwrap_or_default());
            fields.push(if len == ABSENT { None } else { Some(take(len as usize)?.to_vec()) });
        }
        if !rest.is_empty() {
            return Err("the envelope has trailing bytes".into());
        }
        let text = |field: Option<Vec<u8>>| -> std::result::Result<Option<String>, String> {
            field
                .map(|b| String::from_utf8(b).map_err(|_| "a text is not UTF-8".into()))
                .transpose()
        };
        let mut fields = fields.into_iter();
        let mut next = || fields.next().flatten();
        let agent = text(next())?.ok_or("the agent is missing")?;
        let intent = text(next())?.ok_or("the intent is missing")?;
        let metadata = next();
        Ok(Envelope {
            status,
            mode,
            events,
            last_hash,
            created_us,
            last_us,
            agent,
            intent,
            metadata,
            trace_id: text(next())?,
            run_id: text(next())?,
        })
    }

    /// The canonical bytes of the decision's `open` event, which are a function of the
    /// envelope's fixed fields: verifying the chain thereby verifies them too.
    fn open_event(&self, id: &DecisionId) -> Vec<u8> {
        let mut entries = vec![
            ("agent", Value::Str(&self.agent)),
            ("intent", Value::Str(&self.intent)),
            ("automation_mode", Value::Str(self.mode.name())),
        ];
        if let Some(metadata) = &self.metadata {
            entries.push(("metadata", Value::Raw(metadata)));
        }
        if let Some(trace_id) = &self.trace_id {
            entries.push(("trace_id", Value::Str(trace_id)));
        }
        if let Some(run_id) = &self.run_id {
            entries.push(("run_id", Value::Str(run_id)));
        }
        encode_event(&open_event_id(id), Kind::Open, self.created_us, &entries)
    }

    /// The envelope as Python's `DecisionTrace`, with the given msgpack-encoded events.
    fn to_msgpack(&self, id: &DecisionId, events: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + events.iter().map(Vec::len).sum::<usize>());
        out.push(0x80 | 11);
        let text = |out: &mut Vec<u8>, key: &str, value: Option<&str>| {
            write_str(out, key);
            match value {
                Some(value) => write_str(out, value),
                None => write_nil(out),
            }
        };
        text(&mut out, "decision_id", Some(&decision_id_text(id)));
        text(&mut out, "agent", Some(&self.agent));
        text(&mut out, "intent", Some(&self.intent));
        text(&mut out, "automation_mode", Some(self.mode.name()));
        text(&mut out, "status", Some(self.status.name()));
        write_str(&mut out, "created_at");
        timestamp(self.created_us).write_ext(&mut out);
        write_str(&mut out, "closed_at");
        match self.closed_us() {
            Some(us) => timestamp(us).write_ext(&mut out),
            None => write_nil(&mut out),
        }
        write_str(&mut out, "metadata");
        match &self.metadata {
            Some(metadata) => out.extend_from_slice(metadata),
            None => out.push(0x80),
        }
        text(&mut out, "trace_id", self.trace_id.as_deref());
        text(&mut out, "run_id", self.run_id.as_deref());
        write_str(&mut out, "events");
        write_array_header(&mut out, events.len() as u32);
        for event in events {
            out.extend_from_slice(event);
        }
        out
    }
}

pub fn decision_id_text(id: &DecisionId) -> String {
    format!("dec_{}", to_crockford(id))
}

/// The open event shares the decision's time and random bits.
fn open_event_id(id: &DecisionId) -> String {
    format!("evt_{}", to_crockford(id))
}

/// Parses `dec_` + 26 Crockford base32 characters; names the field on failure.
pub fn parse_decision_id(text: &str) -> Result<DecisionId> {
    if text.is_empty() {
        return Err(Error::validation("decision_id", "must not be empty"));
    }
    text.strip_prefix("dec_").and_then(parse_crockford).ok_or_else(|| {
        Error::validation(
            "decision_id",
            format!("expected 'dec_' and 26 Crockford base32 characters, got {text:?}"),
        )
    })
}

fn check_agent(agent: &str) -> Result<()> {
    match name_problem(agent) {
        Some(message) => Err(Error::validation("agent", message)),
        None => Ok(()),
    }
}

fn timestamp(micros: i64) -> Timestamp {
    Timestamp {
        secs: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1_000) as u32,
    }
}

/// The canonical encoding of an event, which its hash covers: a msgpack map of
/// `event_id`, `type`, `timestamp` (timestamp extension, whole microseconds), then the
/// present fields in a fixed order. Never more than 15 entries, so the header is one byte.
fn encode_event(event_id: &str, kind: Kind, at_us: i64, entries: &[(&str, Value)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + event_id.len());
    out.push(0x80 | (3 + entries.len()) as u8);
    write_str(&mut out, "event_id");
    write_str(&mut out, event_id);
    write_str(&mut out, "type");
    write_str(&mut out, kind.name());
    write_str(&mut out, "timestamp");
    timestamp(at_us).write_ext(&mut out);
    for (key, value) in entries {
        write_str(&mut out, key);
        match value {
            Value::Str(text) => write_str(&mut out, text),
            Value::Bool(flag) => write_bool(&mut out, *flag),
            Value::Raw(bytes) => out.extend_from_slice(bytes),
        }
    }
    out
}

/// SHA-256 over the previous event's hash and this event's canonical bytes.
pub fn chain(previous: &Hash, canonical: &[u8]) -> Hash {
    Sha256::new().chain_update(previous).chain_update(canonical).finalize().into()
}

/// An event as Python's `DecisionEvent`: its canonical map plus `hash` (lowercase hex).
/// A stored value is the 32-byte hash followed by the canonical bytes.
fn event_msgpack(stored: &[u8]) -> Result<Vec<u8>> {
    let (hash, canonical) = split_event(stored)
        .ok_or_else(|| Error::Corrupt("a decision event is shorter than its hash".into()))?;
    let mut out = Vec::with_capacity(stored.len() + 72);
    out.push(canonical[0] + 1);
    out.extend_from_slice(&canonical[1..]);
    write_str(&mut out, "hash");
    write_str(&mut out, &to_hex(hash));
    Ok(out)
}

fn split_event(stored: &[u8]) -> Option<(&[u8], &[u8])> {
    (stored.len() > 32 && (0x83..0x8f).contains(&stored[32])).then(|| stored.split_at(32))
}

pub fn event_key(id: &DecisionId, seq: u32) -> [u8; 20] {
    let mut key = [0u8; 20];
    key[..16].copy_from_slice(id);
    key[16..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// Key of `decision_agents`: the agent (see [`value_key`]), the creation time (Unix µs, i64 big-endian with the sign bit flipped), then the id: an agent's
/// decisions in creation order.
pub fn agent_key(agent: &str, created_us: i64, id: &DecisionId) -> Vec<u8> {
    let mut key = agent_prefix(agent);
    key.extend_from_slice(&((created_us as u64) ^ (1 << 63)).to_be_bytes());
    key.extend_from_slice(id);
    key
}

fn agent_prefix(agent: &str) -> Vec<u8> {
    value_key(agent)
}

fn idempotency_key(id: &DecisionId, key: &str) -> Vec<u8> {
    [id.as_slice(), &value_key(key)].concat()
}

/// Texts longer than this many bytes are keyed by a hash (LMDB keys stay under 511 bytes).
const MAX_KEYED_TEXT: usize = 128;

/// A text inside a key: its length (one byte) and UTF-8 bytes, or `0xff` and the first 16
/// bytes of its SHA-256 when longer than [`MAX_KEYED_TEXT`] bytes (as `index` keys do).
fn value_key(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut key = Vec::with_capacity(1 + MAX_KEYED_TEXT + 24);
    if bytes.len() <= MAX_KEYED_TEXT {
        key.push(bytes.len() as u8);
        key.extend_from_slice(bytes);
    } else {
        key.push(0xff);
        key.extend_from_slice(&Sha256::digest(bytes)[..16]);
    }
    key
}

/// Every key that starts with the 16 bytes of `id`.
fn id_range(id: &DecisionId) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let next = u128::from_be_bytes(*id).checked_add(1);
    (
        Bound::Included(id.to_vec()),
        next.map_or(Bound::Unbounded, |n| Bound::Excluded(n.to_be_bytes().to_vec())),
    )
}

fn borrowed(range: &(Bound<Vec<u8>>, Bound<Vec<u8>>)) -> (Bound<&[u8]>, Bound<&[u8]>) {
    (range.0.as_ref().map(Vec::as_slice), range.1.as_ref().map(Vec::as_slice))
}

/// What an event does to the status, or why it is refused (SPEC §6). Closed decisions are
/// refused before this is asked.
fn transition(
    status: Status,
    kind: Kind,
    fields: &EventFields,
) -> std::result::Result<Status, String> {
    use Status::*;
    match (kind, status) {
        (Kind::Close, _) if fields.action.as_deref() == Some("abort") => Ok(Aborted),
        (_, Rejected) => {
            Err("its approval was rejected: only close(action=\"abort\") is allowed".into())
        }
        (Kind::Read | Kind::Evaluate | Kind::Context, _) => Ok(status),
        (Kind::Write, Open | Approved) => Ok(status),
        (Kind::Write, NeedsApproval) => {
            Err("it needs approval: writes wait for resolve_approval(approved=True)".into())
        }
        (Kind::ApprovalRequested, Open | Approved) => Ok(NeedsApproval),
        (Kind::ApprovalResolved, NeedsApproval) => {
            Ok(if fields.approved == Some(true) { Approved } else { Rejected })
        }
        (Kind::Close, Open | Approved) => Ok(Committed),
        (Kind::Close, NeedsApproval) => Err("it needs approval: it can commit only after \
             resolve_approval(approved=True), or close with action=\"abort\""
            .into()),
        (kind, status) => {
            Err(format!("a {} event is not allowed while it is {}", kind.name(), status.name()))
        }
    }
}

/// The envelope of a decision the caller may access: `DecisionNotFound` for an unknown id,
/// `AccessDenied` (saying nothing of the decision) for another agent's.
fn load(
    dbs: &Databases,
    txn: &RoTxn<WithoutTls>,
    id: &DecisionId,
    agent: &str,
) -> Result<Envelope> {
    let text = decision_id_text(id);
    let bytes = dbs
        .decisions
        .get(txn, id)
        .map_err(|e| Error::storage("reading a decision", e))?
        .ok_or_else(|| {
            Error::DecisionNotFound(format!("no decision with id {text} in this store"))
        })?;
    let envelope = Envelope::decode(bytes)
        .map_err(|why| Error::Corrupt(format!("decisions[{text}] does not decode: {why}")))?;
    if envelope.agent != agent {
        return Err(Error::AccessDenied(format!(
            "agent {agent:?} may not access decision {text}: a decision is visible only to \
             the agent that opened it"
        )));
    }
    Ok(envelope)
}

/// A change to decisions, applied by the writer thread in one write transaction.
#[derive(Debug)]
pub enum DecisionJob {
    Open {
        id: DecisionId,
        envelope: Box<Envelope>,
    },
    Event {
        id: DecisionId,
        agent: String,
        kind: Kind,
        fields: Box<EventFields>,
    },
    /// Remove closed decisions closed before this instant (Unix µs).
    Purge {
        before_us: i64,
    },
}

impl DecisionJob {
    /// Applies the job; returns the event's sequence number (for `Event`, the earlier
    /// event's when its idempotency key was seen before) or, for `Purge`, how many
    /// decisions were removed. A refusal is a `Failure::Other` and nothing is written.
    pub fn apply(&self, dbs: &Databases, txn: &mut RwTxn) -> std::result::Result<u64, Failure> {
        match self {
            DecisionJob::Open { id, envelope } => open(dbs, txn, id, envelope),
            DecisionJob::Event { id, agent, kind, fields } => {
                append(dbs, txn, id, agent, *kind, fields)
            }
            DecisionJob::Purge { before_us } => purge(dbs, txn, *before_us),
        }
    }
}

fn now_us() -> i64 {
    Timestamp::now().as_micros()
}

fn open(
    dbs: &Databases,
    txn: &mut RwTxn,
    id: &DecisionId,
    envelope: &Envelope,
) -> std::result::Result<u64, Failure> {
    let mut envelope = envelope.clone();
    envelope.created_us = now_us();
    envelope.last_us = envelope.created_us;
    let canonical = envelope.open_event(id);
    envelope.last_hash = chain(&GENESIS, &canonical);
    envelope.events = 1;
    dbs.decision_events.put(
        txn,
        &event_key(id, 0),
        &[&envelope.last_hash[..], &canonical].concat(),
    )?;
    dbs.decisions.put(txn, id, &envelope.encode())?;
    dbs.decision_agents.put(txn, &agent_key(&envelope.agent, envelope.created_us, id), &[])?;
    Ok(0)
}

fn append(
    dbs: &Databases,
    txn: &mut RwTxn,
    id: &DecisionId,
    agent: &str,
    kind: Kind,
    fields: &EventFields,
) -> std::result::Result<u64, Failure> {
    let mut envelope = load(dbs, txn, id, agent).map_err(Failure::Other)?;
    let text = decision_id_text(id);
    if envelope.status.is_closed() {
        return Err(Failure::Other(Error::DecisionClosed(format!(
            "decision {text} is {}: it cannot change any more",
            envelope.status.name()
        ))));
    }
    let key = fields.idempotency_key(kind).map(|key| idempotency_key(id, key));
    if let Some(key) = &key {
        if let Some(seq) = dbs.decision_keys.get(txn, key)? {
            return Ok(u64::from(u32::from_be_bytes(seq.try_into().unwrap_or_default())));
        }
    }
    let next = transition(envelope.status, kind, fields).map_err(|why| {
        Failure::Other(Error::InvalidTransition(format!(
            "decision {text} refuses this event: {why}"
        )))
    })?;
    let at = now_us().max(envelope.last_us);
    let event_id = format!("evt_{}", to_crockford(&new_ulid()));
    let canonical = encode_event(&event_id, kind, at, &fields.entries());
    let hash = chain(&envelope.last_hash, &canonical);
    let seq = envelope.events;
    dbs.decision_events.put(txn, &event_key(id, seq), &[&hash[..], &canonical].concat())?;
    envelope.events += 1;
    envelope.last_hash = hash;
    envelope.status = next;
    envelope.last_us = at;
    dbs.decisions.put(txn, id, &envelope.encode())?;
    if let Some(key) = &key {
        dbs.decision_keys.put(txn, key, &seq.to_be_bytes())?;
    }
    Ok(u64::from(seq))
}

fn purge(dbs: &Databases, txn: &mut RwTxn, before_us: i64) -> std::result::Result<u64, Failure> {
    let mut doomed = Vec::new();
    for entry in dbs.decisions.iter(txn)? {
        let (key, value) = entry?;
        let (Ok(id), Ok(envelope)) = (DecisionId::try_from(key), Envelope::decode(value)) else {
            continue;
        };
        if envelope.closed_us().is_some_and(|closed| closed < before_us) {
            doomed.push((id, agent_key(&envelope.agent, envelope.created_us, &id)));
        }
    }
    for (id, listing) in &doomed {
        let range = id_range(id);
        dbs.decision_events.delete_range(txn, &borrowed(&range))?;
        dbs.decision_keys.delete_range(txn, &borrowed(&range))?;
        dbs.decision_agents.delete(txn, listing)?;
        dbs.decisions.delete(txn, id)?;
    }
    Ok(doomed.len() as u64)
}

/// Recomputes a decision's chain: consecutive sequence numbers from 0, every hash over its
/// predecessor and its canonical bytes, the open event matching the envelope, and the
/// envelope's count and last hash matching the last event. `Err` says what broke first.
pub fn verify(
    dbs: &Databases,
    txn: &RoTxn<WithoutTls>,
    id: &DecisionId,
    envelope: &Envelope,
) -> Result<std::result::Result<(), String>> {
    let fail = |e| Error::storage("reading decision events", e);
    let range = id_range(id);
    let mut previous = GENESIS;
    let mut seen: u32 = 0;
    for entry in dbs.decision_events.range(txn, &borrowed(&range)).map_err(fail)? {
        let (key, value) = entry.map_err(fail)?;
        if key != event_key(id, seen) {
            return Ok(Err(format!("event {seen} is missing")));
        }
        let Some((hash, canonical)) = split_event(value) else {
            return Ok(Err(format!("event {seen} does not decode")));
        };
        if seen == 0 && canonical != envelope.open_event(id) {
            return Ok(Err("the envelope does not match the open event".into()));
        }
        if chain(&previous, canonical) != hash {
            return Ok(Err(format!("event {seen}'s hash does not match its bytes")));
        }
        previous.copy_from_slice(hash);
        seen += 1;
    }
    if seen != envelope.events || previous != envelope.last_hash {
        return Ok(Err(format!(
            "the envelope records {} events but {seen} are chained to its last hash",
            envelope.events
        )));
    }
    Ok(Ok(()))
}

/// Every decision in key order with the problem its chain or envelope has, if any (for
/// `check`).
pub fn check_all(dbs: &Databases, txn: &RoTxn<WithoutTls>) -> Result<(u64, Vec<String>)> {
    let fail = |e| Error::storage("checking decisions", e);
    let mut problems = Vec::new();
    let mut count = 0;
    for entry in dbs.decisions.iter(txn).map_err(fail)? {
        let (key, value) = entry.map_err(fail)?;
        count += 1;
        let Ok(id) = DecisionId::try_from(key) else {
            problems.push(format!("decisions[{}]: the key is not a 16-byte id", to_hex(key)));
            continue;
        };
        let text = decision_id_text(&id);
        match Envelope::decode(value) {
            Err(why) => problems.push(format!("decisions[{text}] does not decode: {why}")),
            Ok(envelope) => {
                if let Err(why) = verify(dbs, txn, &id, &envelope)? {
                    problems.push(format!("decision {text}: the hash chain is broken: {why}"));
                }
                let listing = agent_key(&envelope.agent, envelope.created_us, &id);
                if dbs.decision_agents.get(txn, &listing).map_err(fail)?.is_none() {
                    problems.push(format!("decision {text} is not listed in decision_agents"));
                }
            }
        }
    }
    orphans(dbs, txn, &mut problems)?;
    Ok((count, problems))
}

/// Entries of `decision_events`, `decision_keys` and `decision_agents` whose decision is
/// not stored (or, for a listing, is not listed under that key).
fn orphans(dbs: &Databases, txn: &RoTxn<WithoutTls>, problems: &mut Vec<String>) -> Result<()> {
    let fail = |e| Error::storage("checking decisions", e);
    let envelope = |id: &[u8]| -> Result<Option<Envelope>> {
        let stored = dbs.decisions.get(txn, id).map_err(fail)?;
        Ok(stored.and_then(|bytes| Envelope::decode(bytes).ok()))
    };
    for (name, db) in
        [("decision_events", dbs.decision_events), ("decision_keys", dbs.decision_keys)]
    {
        // Keys of one decision are adjacent: look each decision up once.
        let mut last: Option<Vec<u8>> = None;
        for entry in db.iter(txn).map_err(fail)? {
            let (key, _) = entry.map_err(fail)?;
            let id = key.get(..16).unwrap_or(key);
            if last.as_deref() == Some(id) {
                continue;
            }
            last = Some(id.to_vec());
            if dbs.decisions.get(txn, id).map_err(fail)?.is_none() {
                problems.push(format!("{name}[{}] belongs to no stored decision", to_hex(key)));
            }
        }
    }
    for entry in dbs.decision_agents.iter(txn).map_err(fail)? {
        let (key, _) = entry.map_err(fail)?;
        let id = key.len().checked_sub(16).map(|at| &key[at..]).unwrap_or(key);
        let listed = envelope(id)?
            .zip(DecisionId::try_from(id).ok())
            .is_some_and(|(e, id)| agent_key(&e.agent, e.created_us, &id) == key);
        if !listed {
            problems.push(format!(
                "decision_agents[{}] lists no stored decision of that agent",
                to_hex(key)
            ));
        }
    }
    Ok(())
}

/// Filters and page of [`Store::decisions`].
#[derive(Debug, Clone, Default)]
pub struct DecisionQuery {
    pub agent: String,
    pub status: Option<String>,
    pub intent: Option<String>,
    /// Inclusive, Unix µs (creation time).
    pub since_us: Option<i64>,
    /// Exclusive, Unix µs.
    pub until_us: Option<i64>,
    pub limit: i64,
    /// The `next_cursor` of the previous page: the last decision id it listed.
    pub cursor: Option<String>,
}

impl Store {
    /// Opens a decision (recording its `open` event durably); returns its id.
    pub fn open_decision(&self, mut request: OpenRequest) -> Result<String> {
        let mode = request.validate()?;
        request.clean(&self.options().redaction)?;
        let id = new_ulid();
        let envelope = Envelope {
            status: Status::Open,
            mode,
            events: 0,
            last_hash: GENESIS,
            created_us: 0,
            last_us: 0,
            agent: request.agent,
            intent: request.intent,
            metadata: request.metadata,
            trace_id: request.trace_id,
            run_id: request.run_id,
        };
        self.decide(DecisionJob::Open { id, envelope: Box::new(envelope) })?;
        Ok(decision_id_text(&id))
    }

    /// Records one event durably; returns it as msgpack (the earlier event when a write's
    /// idempotency key was seen before).
    pub fn decision_event(
        &self,
        decision_id: &str,
        agent: &str,
        kind: &str,
        mut fields: EventFields,
    ) -> Result<Vec<u8>> {
        let id = parse_decision_id(decision_id)?;
        check_agent(agent)?;
        let kind = Kind::parse_recordable(kind).ok_or_else(|| {
            Error::validation("type", format!("{kind:?} is not an event type one can record"))
        })?;
        fields.validate(kind)?;
        fields.clean(&self.options().redaction)?;
        let job =
            DecisionJob::Event { id, agent: agent.to_owned(), kind, fields: Box::new(fields) };
        let seq = self.decide(job)? as u32;
        let core = self.core();
        core.read(|txn| {
            let stored = core
                .dbs
                .decision_events
                .get(txn, &event_key(&id, seq))
                .map_err(|e| Error::storage("reading a decision event", e))?
                .ok_or_else(|| {
                    Error::DecisionNotFound(format!("decision {decision_id} was purged"))
                })?;
            event_msgpack(stored)
        })
    }

    /// A decision as msgpack `DecisionTrace`, its events in order unless `with_events` is
    /// false.
    pub fn decision_trace(
        &self,
        decision_id: &str,
        agent: &str,
        with_events: bool,
    ) -> Result<Vec<u8>> {
        let id = parse_decision_id(decision_id)?;
        check_agent(agent)?;
        let core = self.core();
        core.read(|txn| {
            let envelope = load(&core.dbs, txn, &id, agent)?;
            let mut events = Vec::new();
            if with_events {
                let fail = |e| Error::storage("reading decision events", e);
                let range = id_range(&id);
                for entry in core.dbs.decision_events.range(txn, &borrowed(&range)).map_err(fail)? {
                    events.push(event_msgpack(entry.map_err(fail)?.1)?);
                }
            }
            Ok(envelope.to_msgpack(&id, &events))
        })
    }

    /// Whether the decision's hash chain is intact (see [`verify`]).
    pub fn verify_decision(&self, decision_id: &str, agent: &str) -> Result<bool> {
        let id = parse_decision_id(decision_id)?;
        check_agent(agent)?;
        let core = self.core();
        core.read(|txn| {
            let envelope = load(&core.dbs, txn, &id, agent)?;
            Ok(verify(&core.dbs, txn, &id, &envelope)?.is_ok())
        })
    }

    /// One page (msgpack `Page[DecisionTrace]`, events left out) of an agent's decisions,
    /// newest first.
    pub fn decisions(&self, query: &DecisionQuery) -> Result<Vec<u8>> {
        check_agent(&query.agent)?;
        let status = match &query.status {
            None => None,
            Some(text) => Some(Status::parse(text).ok_or_else(|| {
                Error::validation(
                    "status",
                    one_of(text, &STATUSES.map(Status::name)).unwrap_or_default(),
                )
            })?),
        };
        let limit = usize::try_from(query.limit)
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                Error::validation("limit", format!("must be 1 to {MAX_PAGE}, got {}", query.limit))
            })?;
        let cursor = match &query.cursor {
            None => None,
            Some(text) => Some(parse_decision_id(text).map_err(|_| {
                Error::validation("cursor", "not a cursor of this listing; start without one")
            })?),
        };
        let prefix = agent_prefix(&query.agent);
        let core = self.core();
        core.read(|txn| {
            let fail = |e| Error::storage("listing decisions", e);
            let hi = match &cursor {
                Some(id) => {
                    let after = load(&core.dbs, txn, id, &query.agent).map_err(|_| {
                        Error::validation(
                            "cursor",
                            "not a cursor of this listing; start without one",
                        )
                    })?;
                    Bound::Excluded(agent_key(&query.agent, after.created_us, id))
                }
                None => Bound::Included([prefix.as_slice(), &[0xff; 24]].concat()),
            };
            let range = (Bound::Included(prefix.clone()), hi);
            let mut items = Vec::new();
            let mut last = None;
            let mut more = false;
            for entry in core.dbs.decision_agents.rev_range(txn, &borrowed(&range)).map_err(fail)? {
                let (key, _) = entry.map_err(fail)?;
                let Some(id) =
                    key.get(prefix.len() + 8..).and_then(|b| DecisionId::try_from(b).ok())
                else {
                    continue;
                };
                let Ok(envelope) = load(&core.dbs, txn, &id, &query.agent) else { continue };
                let wanted = status.map_or(true, |s| s == envelope.status)
                    && query.intent.as_ref().map_or(true, |i| *i == envelope.intent)
                    && query.since_us.map_or(true, |us| envelope.created_us >= us)
                    && query.until_us.map_or(true, |us| envelope.created_us < us);
                if !wanted {
                    continue;
                }
                if items.len() == limit {
                    more = true;
                    break;
                }
                items.push(envelope.to_msgpack(&id, &[]));
                last = Some(id);
            }
            let mut out = vec![0x82];
            write_str(&mut out, "items");
            write_array_header(&mut out, items.len() as u32);
            for item in &items {
                out.extend_from_slice(item);
            }
            write_str(&mut out, "next_cursor");
            match last.filter(|_| more) {
                Some(id) => write_str(&mut out, &decision_id_text(&id)),
                None => write_nil(&mut out),
            }
            Ok(out)
        })
    }

    /// Removes closed decisions closed before `before_us` (Unix µs); returns how many.
    pub fn purge_decisions(&self, before_us: i64) -> Result<u64> {
        self.decide(DecisionJob::Purge { before_us })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> Envelope {
        Envelope {
            status: Status::Approved,
            mode: Mode::Approve,
            events: 3,
            last_hash: [7; 32],
            created_us: 1_750_000_000_123_456,
            last_us: 1_750_000_000_123_999,
            agent: "order-bot".into(),
            intent: "customer.order.create".into(),
            metadata: Some(vec![0x81, 0xa1, b'k', 0x01]),
            trace_id: None,
            run_id: Some("run-1".into()),
        }
    }

    #[test]
    fn envelopes_round_trip_and_reject_truncation() {
        let e = envelope();
        let bytes = e.encode();
        assert_eq!(Envelope::decode(&bytes), Ok(e));
        assert!(Envelope::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn the_open_event_is_a_function_of_the_envelope() {
        let id = new_ulid();
        let canonical = envelope().open_event(&id);
        assert_eq!(canonical[0], 0x80 | 8, "three common entries and five fields");
        assert_eq!(canonical, envelope().open_event(&id));
        let mut other = envelope();
        other.intent.push('x');
        assert_ne!(canonical, other.open_event(&id));
    }

    #[test]
    fn the_chain_depends_on_every_byte_and_on_the_previous_hash() {
        let a = chain(&GENESIS, b"event");
        assert_ne!(a, chain(&GENESIS, b"evenT"));
        assert_ne!(a, chain(&[1; 32], b"event"));
        assert_eq!(a, chain(&GENESIS, b"event"));
    }

    #[test]
    fn the_status_machine_follows_spec_section_6() {
        use Status::*;
        let f = |action: Option<&str>, approved: Option<bool>| EventFields {
            action: action.map(str::to_owned),
            approved,
            ..EventFields::default()
        };
        let none = f(None, None);
        assert_eq!(transition(Open, Kind::Write, &none), Ok(Open));
        assert_eq!(transition(Open, Kind::ApprovalRequested, &none), Ok(NeedsApproval));
        assert!(transition(NeedsApproval, Kind::Write, &none).is_err());
        assert_eq!(transition(NeedsApproval, Kind::Read, &none), Ok(NeedsApproval));
        assert_eq!(
            transition(NeedsApproval, Kind::ApprovalResolved, &f(None, Some(true))),
            Ok(Approved)
        );
        assert_eq!(
            transition(NeedsApproval, Kind::ApprovalResolved, &f(None, Some(false))),
            Ok(Rejected)
        );
        assert!(transition(Rejected, Kind::Read, &none).is_err());
        assert!(transition(Rejected, Kind::Close, &f(Some("commit"), None)).is_err());
        assert_eq!(transition(Rejected, Kind::Close, &f(Some("abort"), None)), Ok(Aborted));
        assert!(transition(NeedsApproval, Kind::Close, &f(Some("commit"), None)).is_err());
        assert_eq!(transition(Approved, Kind::Close, &f(Some("commit"), None)), Ok(Committed));
        assert!(transition(Open, Kind::ApprovalResolved, &f(None, Some(true))).is_err());
    }

    #[test]
    fn fields_are_checked_against_the_event_type() {
        let fields = EventFields {
            product: Some("pg".into()),
            outcome: Some("maybe".into()),
            ..EventFields::default()
        };
        let Err(Error::Validation(errors)) = fields.validate(Kind::Read) else { panic!() };
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["purpose", "outcome"]);
        let Err(Error::Validation(errors)) = fields.validate(Kind::Evaluate) else { panic!() };
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["policy_id", "product", "outcome"]);
    }
}
