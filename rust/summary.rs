//! The compact per-trace summary that queries, counts and stats read instead of records, and
//! the keys of the indexes built from it. Layouts are documented in docs/format.md.
//!
//! A summary is the merged view of a trace's fragments, maintained by the writer in the same
//! transaction as each fragment. Its numbers sit at fixed offsets so that `stats` over a
//! million traces reads them without parsing strings.

use std::collections::HashSet;

use crate::ids::TraceId;
use crate::merge::{Contribution, SpanFact, Tokens};
use crate::msgpack::{DecodeError, Reader, Token, TIMESTAMP_EXT};
use crate::time::Timestamp;

const VERSION: u8 = 1;
const NUMBERS: usize = 56;
const ABSENT: u16 = u16::MAX;

const HAS_ERRORS: u8 = 1;
const LATENCY: u8 = 1 << 1;
const COST: u8 = 1 << 2;
const PROMPT: u8 = 1 << 3;
const COMPLETION: u8 = 1 << 4;
const TOTAL: u8 = 1 << 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    Running = 1,
    Succeeded = 2,
    Failed = 3,
}

impl Status {
    pub fn parse(text: &str) -> Option<Status> {
        match text {
            "running" => Some(Status::Running),
            "succeeded" => Some(Status::Succeeded),
            "failed" => Some(Status::Failed),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
        }
    }

    fn from_byte(byte: u8) -> Option<Status> {
        match byte {
            1 => Some(Status::Running),
            2 => Some(Status::Succeeded),
            3 => Some(Status::Failed),
            _ => None,
        }
    }
}

/// What a query needs to know about a trace, without its spans and texts.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Summary {
    /// The fixed-offset part: timestamp, status, errors, latency, cost, tokens, span count.
    pub numbers: Numbers,
    pub agent_name: String,
    pub framework: Option<String>,
    pub run_id: Option<String>,
    pub request_id: Option<String>,
    pub session_id: Option<String>,
    pub tags: Vec<String>,
}

impl Summary {
    /// SPEC: failed status, an ERROR span, or a tool call with an error.
    pub fn has_errors(&self) -> bool {
        self.numbers.has_errors()
    }

    /// Folds a newer fragment's summary into this one, with the rules `get()` uses: the newest
    /// value that was set wins, except the first fragment's timestamp and agent name; tags
    /// are a union. The numbers derived from spans and usage (span count, errors logged,
    /// tokens, cost) are not merged here: they come from the trace's
    /// [`MergeState`](crate::merge::MergeState), which knows which spans were re-sent.
    pub fn merge(&mut self, newer: &Summary) {
        fn newest<T: Clone>(old: &mut Option<T>, new: &Option<T>) {
            if new.is_some() {
                old.clone_from(new);
            }
        }
        newest(&mut self.numbers.status, &newer.numbers.status);
        newest(&mut self.numbers.latency_ms, &newer.numbers.latency_ms);
        newest(&mut self.framework, &newer.framework);
        newest(&mut self.run_id, &newer.run_id);
        newest(&mut self.request_id, &newer.request_id);
        newest(&mut self.session_id, &newer.session_id);
        add_tags(&mut self.tags, newer.tags.iter().cloned());
    }

    pub fn encode(&self) -> Vec<u8> {
        let n = &self.numbers;
        let mut out = Vec::with_capacity(NUMBERS + 64);
        let mut flags = 0;
        for (set, bit) in [
            (n.errors_logged, HAS_ERRORS),
            (n.latency_ms.is_some(), LATENCY),
            (n.cost_usd.is_some(), COST),
            (n.prompt_tokens.is_some(), PROMPT),
            (n.completion_tokens.is_some(), COMPLETION),
            (n.total_tokens.is_some(), TOTAL),
        ] {
            if set {
                flags |= bit;
            }
        }
        out.extend_from_slice(&[VERSION, flags, n.status.map_or(0, |s| s as u8), 0]);
        out.extend_from_slice(&n.span_count.to_le_bytes());
        out.extend_from_slice(&n.timestamp_us.to_le_bytes());
        out.extend_from_slice(&n.latency_ms.unwrap_or(0.0).to_le_bytes());
        out.extend_from_slice(&n.cost_usd.unwrap_or(0.0).to_le_bytes());
        for tokens in [n.prompt_tokens, n.completion_tokens, n.total_tokens] {
            out.extend_from_slice(&tokens.unwrap_or(0).to_le_bytes());
        }
        write_text(&mut out, Some(&self.agent_name));
        for text in [&self.framework, &self.run_id, &self.request_id, &self.session_id] {
            write_text(&mut out, text.as_deref());
        }
        let tags = self.tags.len().min(MAX_TAGS);
        out.extend_from_slice(&(tags as u16).to_le_bytes());
        for tag in &self.tags[..tags] {
            write_text(&mut out, Some(tag));
        }
        out
    }

    /// Inverse of [`Summary::encode`]; never panics on arbitrary bytes.
    pub fn decode(bytes: &[u8]) -> Result<Summary, String> {
        let numbers = Numbers::read(bytes)?;
        let texts = Texts::read(bytes)?;
        let owned = |text: &[u8]| {
            String::from_utf8(text.to_vec()).map_err(|_| "a summary string is not UTF-8")
        };
        let optional = |text: Option<&[u8]>| text.map(owned).transpose();
        let [framework, run_id, request_id, session_id] = texts.optional;
        let mut tags = Vec::new();
        let mut rest = texts.tags;
        let count = read_u16(&mut rest)?;
        tags.reserve(usize::from(count).min(rest.len() / 2));
        for _ in 0..count {
            tags.push(owned(read_text(&mut rest)?.ok_or("a tag is marked absent")?)?);
        }
        if !rest.is_empty() {
            return Err(format!("{} unexpected bytes after the tags", rest.len()));
        }
        Ok(Summary {
            numbers,
            agent_name: owned(texts.agent_name)?,
            framework: optional(framework)?,
            run_id: optional(run_id)?,
            request_id: optional(request_id)?,
            session_id: optional(session_id)?,
            tags,
        })
    }

    /// Every `index` key this summary is listed under (see [`index_key`]).
    pub fn index_keys(&self, trace_id: &TraceId) -> Vec<Vec<u8>> {
        let mut keys = Vec::with_capacity(8 + self.tags.len());
        let mut add = |field: Field, value: &[u8]| {
            keys.push(index_key(field, value, self.numbers.timestamp_us, trace_id));
        };
        add(Field::AgentName, self.agent_name.as_bytes());
        let optional = [
            (Field::Framework, &self.framework),
            (Field::RunId, &self.run_id),
            (Field::RequestId, &self.request_id),
            (Field::SessionId, &self.session_id),
        ];
        for (field, value) in optional {
            if let Some(value) = value {
                add(field, value.as_bytes());
            }
        }
        if let Some(status) = self.numbers.status {
            add(Field::Status, status.name().as_bytes());
        }
        if self.has_errors() {
            add(Field::HasErrors, &[1]);
        }
        for tag in &self.tags {
            add(Field::Tag, tag.as_bytes());
        }
        keys
    }
}

impl Summary {
    /// The summary of one fragment, read from its canonical msgpack (already validated, so
    /// anything unexpected is an error, not a panic), and what the fragment contributes to a
    /// merged trace. The summary's derived numbers are this fragment's alone: spans count; an
    /// ERROR span or a tool call with an error marks errors; when the fragment reports no
    /// token usage or cost, the `gen_ai.usage.*` attributes of its LLM spans are summed.
    pub fn of_fragment(canonical: &[u8]) -> Result<(Summary, Contribution), String> {
        let mut walk = FragmentWalk {
            reader: Reader::new(canonical),
            summary: Summary::default(),
            contribution: Contribution::default(),
        };
        walk.trace().map_err(|e| e.to_string())?;
        let FragmentWalk { mut summary, mut contribution, .. } = walk;
        let numbers = &summary.numbers;
        if numbers.prompt_tokens.is_some()
            || numbers.completion_tokens.is_some()
            || numbers.total_tokens.is_some()
        {
            contribution.tokens = Some(Tokens {
                prompt: numbers.prompt_tokens,
                completion: numbers.completion_tokens,
                total: numbers.total_tokens,
            });
        }
        contribution.cost = numbers.cost_usd;
        contribution.apply(&mut summary.numbers);
        Ok((summary, contribution))
    }
}

struct FragmentWalk<'a> {
    reader: Reader<'a>,
    summary: Summary,
    contribution: Contribution,
}

impl<'a> FragmentWalk<'a> {
    fn next(&mut self) -> Result<Token<'a>, DecodeError> {
        self.reader.read_token()
    }

    fn text(&mut self) -> Result<String, DecodeError> {
        Ok(String::from_utf8_lossy(self.str_bytes()?).into_owned())
    }

    /// A string's bytes, borrowed (empty for any other value).
    fn str_bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        match self.next()? {
            Token::Str(bytes) => Ok(bytes),
            other => self.reader.skip_contents(&other).map(|()| &[][..]),
        }
    }

    fn number(&mut self) -> Result<Option<f64>, DecodeError> {
        Ok(match self.next()? {
            Token::Float(f) => Some(f),
            Token::UInt(u) => Some(u as f64),
            Token::NegInt(i) => Some(i as f64),
            other => {
                self.reader.skip_contents(&other)?;
                None
            }
        })
    }

    fn count(&mut self) -> Result<Option<u64>, DecodeError> {
        Ok(match self.next()? {
            Token::UInt(u) => Some(u),
            Token::Float(f) if f >= 0.0 => Some(f as u64),
            other => {
                self.reader.skip_contents(&other)?;
                None
            }
        })
    }

    fn map_len(&mut self) -> Result<Option<u32>, DecodeError> {
        match self.next()? {
            Token::Map(n) => Ok(Some(n)),
            other => self.reader.skip_contents(&other).map(|()| None),
        }
    }

    fn array_len(&mut self) -> Result<Option<u32>, DecodeError> {
        match self.next()? {
            Token::Array(n) => Ok(Some(n)),
            other => self.reader.skip_contents(&other).map(|()| None),
        }
    }

    fn key(&mut self) -> Result<&'a [u8], DecodeError> {
        match self.next()? {
            Token::Str(bytes) => Ok(bytes),
            other => self.reader.skip_contents(&other).map(|()| &[][..]),
        }
    }

    fn trace(&mut self) -> Result<(), DecodeError> {
        let entries = self.map_len()?.unwrap_or(0);
        for _ in 0..entries {
            match self.key()? {
                b"agent_name" => self.summary.agent_name = self.text()?,
                b"framework" => self.summary.framework = Some(self.text()?),
                b"run_id" => self.summary.run_id = Some(self.text()?),
                b"request_id" => self.summary.request_id = Some(self.text()?),
                b"session_id" => self.summary.session_id = Some(self.text()?),
                b"status" => {
                    let status = std::str::from_utf8(self.str_bytes()?).unwrap_or("");
                    self.summary.numbers.status = Status::parse(status);
                }
                b"latency_ms" => self.summary.numbers.latency_ms = self.number()?,
                b"cost_usd" => self.summary.numbers.cost_usd = self.number()?,
                b"timestamp" => self.timestamp()?,
                b"token_usage" => self.token_usage()?,
                b"tags" => self.tags()?,
                b"spans" => self.spans()?,
                b"tool_calls" => self.tool_calls()?,
                _ => self.reader.skip_value()?,
            }
        }
        Ok(())
    }

    fn timestamp(&mut self) -> Result<(), DecodeError> {
        if let Token::Ext(TIMESTAMP_EXT, payload) = self.next()? {
            if let Some(at) = Timestamp::decode_ext(payload) {
                self.summary.numbers.timestamp_us = at.as_micros();
            }
        }
        Ok(())
    }

    fn token_usage(&mut self) -> Result<(), DecodeError> {
        for _ in 0..self.map_len()?.unwrap_or(0) {
            match self.key()? {
                b"prompt_tokens" => self.summary.numbers.prompt_tokens = self.count()?,
                b"completion_tokens" => self.summary.numbers.completion_tokens = self.count()?,
                b"total_tokens" => self.summary.numbers.total_tokens = self.count()?,
                _ => self.reader.skip_value()?,
            }
        }
        Ok(())
    }

    fn tags(&mut self) -> Result<(), DecodeError> {
        let mut tags = Vec::new();
        for _ in 0..self.array_len()?.unwrap_or(0) {
            tags.push(self.text()?);
        }
        add_tags(&mut self.summary.tags, tags);
        Ok(())
    }

    fn tool_calls(&mut self) -> Result<(), DecodeError> {
        for _ in 0..self.array_len()?.unwrap_or(0) {
            for _ in 0..self.map_len()?.unwrap_or(0) {
                if self.key()? == b"error" {
                    self.contribution.tool_errors = true;
                }
                self.reader.skip_value()?;
            }
        }
        Ok(())
    }

    fn spans(&mut self) -> Result<(), DecodeError> {
        for _ in 0..self.array_len()?.unwrap_or(0) {
            let mut span = SpanFact::default();
            let mut parent = None;
            let mut llm = false;
            let mut usage = (None, None);
            for _ in 0..self.map_len()?.unwrap_or(0) {
                match self.key()? {
                    b"span_id" => span.id = self.span_id()?,
                    b"parent_span_id" => parent = Some(self.span_id()?),
                    b"kind" => llm = self.str_bytes()? == b"LLM",
                    b"status_code" => span.error = self.str_bytes()? == b"ERROR",
                    b"attributes" => usage = self.usage_attributes()?,
                    _ => self.reader.skip_value()?,
                }
            }
            if llm {
                (span.tokens, span.cost) = usage;
            }
            self.contribution.links.push((span.id, parent));
            self.contribution.spans.push(span);
        }
        Ok(())
    }

    /// A span id as its 8 bytes (canonical ids are 16 lowercase hex characters).
    fn span_id(&mut self) -> Result<[u8; 8], DecodeError> {
        let text = self.str_bytes()?;
        let mut id = [0; 8];
        if text.len() == 16 {
            for (byte, pair) in id.iter_mut().zip(text.chunks(2)) {
                let digit = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                *byte = digit(pair[0]) << 4 | digit(pair[1]);
            }
        }
        Ok(id)
    }

    /// OpenTelemetry GenAI names (`input_tokens`/`output_tokens`) and the older
    /// `prompt_tokens`/`completion_tokens`; cost as `gen_ai.usage.cost` or `..._usd`.
    fn usage_attributes(&mut self) -> Result<(Option<Tokens>, Option<f64>), DecodeError> {
        let (mut tokens, mut reported, mut cost) = (Tokens::default(), false, None);
        for _ in 0..self.map_len()?.unwrap_or(0) {
            let count = match self.key()? {
                b"gen_ai.usage.input_tokens" | b"gen_ai.usage.prompt_tokens" => &mut tokens.prompt,
                b"gen_ai.usage.output_tokens" | b"gen_ai.usage.completion_tokens" => {
                    &mut tokens.completion
                }
                b"gen_ai.usage.total_tokens" => &mut tokens.total,
                b"gen_ai.usage.cost" | b"gen_ai.usage.cost_usd" => {
                    cost = self.number()?.filter(|c| c.is_finite() && *c >= 0.0);
                    continue;
                }
                _ => {
                    self.reader.skip_value()?;
                    continue;
                }
            };
            *count = self.count()?;
            reported |= count.is_some();
        }
        Ok((reported.then_some(tokens), cost))
    }
}

/// The fixed-offset part of a summary, read without touching its strings.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Numbers {
    pub timestamp_us: i64,
    pub status: Option<Status>,
    pub errors_logged: bool,
    pub latency_ms: Option<f64>,
    pub cost_usd: Option<f64>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub total_tokens: Option<u64>,
    pub span_count: u32,
}

impl Numbers {
    pub fn read(bytes: &[u8]) -> Result<Numbers, String> {
        let head: &[u8; NUMBERS] =
            bytes.get(..NUMBERS).and_then(|b| b.try_into().ok()).ok_or_else(|| {
                format!("a summary of {} bytes is shorter than its header", bytes.len())
            })?;
        if head[0] != VERSION {
            return Err(format!("unknown summary version {}", head[0]));
        }
        let flags = head[1];
        let at = |offset: usize| -> [u8; 8] {
            let mut word = [0; 8];
            word.copy_from_slice(&head[offset..offset + 8]);
            word
        };
        let float = |bit: u8, offset| (flags & bit != 0).then(|| f64::from_le_bytes(at(offset)));
        let int = |bit: u8, offset| (flags & bit != 0).then(|| u64::from_le_bytes(at(offset)));
        Ok(Numbers {
            timestamp_us: i64::from_le_bytes(at(8)),
            status: Status::from_byte(head[2]),
            errors_logged: flags & HAS_ERRORS != 0,
            latency_ms: float(LATENCY, 16),
            cost_usd: float(COST, 24),
            prompt_tokens: int(PROMPT, 32),
            completion_tokens: int(COMPLETION, 40),
            total_tokens: int(TOTAL, 48),
            span_count: u32::from_le_bytes([head[4], head[5], head[6], head[7]]),
        })
    }

    pub fn has_errors(&self) -> bool {
        self.errors_logged || self.status == Some(Status::Failed)
    }
}

/// Tags a summary keeps (and indexes): as many as its u16 count can say.
pub const MAX_TAGS: usize = ABSENT as usize - 1;

/// Adds the tags not seen yet, in first-seen order, until there are [`MAX_TAGS`]: the
/// summary then holds exactly the tags that are indexed. Linear in the tags: a trace may
/// carry hundreds of thousands, and comparing each with every earlier one took minutes.
fn add_tags(tags: &mut Vec<String>, more: impl IntoIterator<Item = String>) {
    let mut seen: HashSet<String> = tags.iter().cloned().collect();
    for tag in more {
        if tags.len() == MAX_TAGS {
            break;
        }
        if seen.insert(tag.clone()) {
            tags.push(tag);
        }
    }
}

fn write_text(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        // Schema limits keep indexed strings ≤ 256 characters, far below u16::MAX bytes.
        Some(text) => {
            let len = text.len().min(usize::from(ABSENT - 1));
            out.extend_from_slice(&(len as u16).to_le_bytes());
            out.extend_from_slice(&text.as_bytes()[..len]);
        }
        None => out.extend_from_slice(&ABSENT.to_le_bytes()),
    }
}

/// The strings of a stored summary, borrowed: decoding a whole [`Summary`] would allocate
/// for every trace that `stats` or a string filter visits.
pub struct Texts<'t> {
    pub agent_name: &'t [u8],
    /// framework, run_id, request_id, session_id.
    pub optional: [Option<&'t [u8]>; 4],
    /// The tag count and the tags, read by [`Texts::tags`].
    tags: &'t [u8],
}

impl<'t> Texts<'t> {
    pub fn read(summary: &'t [u8]) -> Result<Texts<'t>, String> {
        let mut rest = summary.get(NUMBERS..).ok_or("the summary is truncated")?;
        let agent_name = read_text(&mut rest)?.ok_or("the summary has no agent name")?;
        let mut optional = [None; 4];
        for slot in &mut optional {
            *slot = read_text(&mut rest)?;
        }
        Ok(Texts { agent_name, optional, tags: rest })
    }

    pub fn tags(&self) -> Result<impl Iterator<Item = Result<&'t [u8], String>>, String> {
        let mut rest = self.tags;
        let count = read_u16(&mut rest)?;
        Ok((0..count).map(move |_| {
            read_text(&mut rest).and_then(|tag| tag.ok_or_else(|| "a tag is absent".into()))
        }))
    }
}

fn read_u16(rest: &mut &[u8]) -> Result<u16, String> {
    let (head, tail) = rest.split_first_chunk::<2>().ok_or("the summary is truncated")?;
    *rest = tail;
    Ok(u16::from_le_bytes(*head))
}

fn read_text<'t>(rest: &mut &'t [u8]) -> Result<Option<&'t [u8]>, String> {
    let len = read_u16(rest)?;
    if len == ABSENT {
        return Ok(None);
    }
    let (text, tail) = rest.split_at_checked(usize::from(len)).ok_or("the summary is truncated")?;
    *rest = tail;
    Ok(Some(text))
}

/// The indexed fields, each a one-byte prefix of its keys in the `index` database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    AgentName = 1,
    Framework = 2,
    RunId = 3,
    RequestId = 4,
    SessionId = 5,
    Status = 6,
    Tag = 7,
    HasErrors = 8,
}

/// Values longer than this are indexed by a hash (LMDB keys are at most 511 bytes).
const MAX_INDEXED_VALUE: usize = 128;
const HASHED: u8 = 0xff;

/// Whether an index prefix holds a value's hash rather than the value: two values may then
/// share it, so matches must be checked on the summary.
pub fn is_hashed(prefix: &[u8]) -> bool {
    prefix.get(1) == Some(&HASHED)
}

/// `[field][value key][time key][trace id]`: all traces with one value of one field form a
/// contiguous range, newest last, so a query walks it backwards and resumes from a cursor.
pub fn index_key(field: Field, value: &[u8], timestamp_us: i64, trace_id: &TraceId) -> Vec<u8> {
    let mut key = index_prefix(field, value);
    key.extend_from_slice(&time_key(timestamp_us, trace_id));
    key
}

/// The range prefix of one field value: the field byte, then the value's length (one byte)
/// and bytes, or `0xff` and the first 16 bytes of its SHA-256 when longer than 128 bytes.
pub fn index_prefix(field: Field, value: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + MAX_INDEXED_VALUE + 24);
    key.push(field as u8);
    if value.len() <= MAX_INDEXED_VALUE {
        key.push(value.len() as u8);
        key.extend_from_slice(value);
    } else {
        use sha2::{Digest, Sha256};
        key.push(HASHED);
        key.extend_from_slice(&Sha256::digest(value)[..16]);
    }
    key
}

/// Key of the `by_time` database, also the tail of every `index` key: the timestamp as a
/// big-endian u64 with the sign bit flipped (so byte order is time order, before 1970 too),
/// then the trace id.
pub fn time_key(timestamp_us: i64, trace_id: &TraceId) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..8].copy_from_slice(&((timestamp_us as u64) ^ (1 << 63)).to_be_bytes());
    key[8..].copy_from_slice(trace_id);
    key
}

/// Inverse of [`time_key`] on the last 24 bytes of any index or `by_time` key.
pub fn parse_time_key(key: &[u8]) -> Option<(i64, TraceId)> {
    let tail = key.len().checked_sub(24).map(|start| &key[start..])?;
    let stamp = u64::from_be_bytes(tail[..8].try_into().ok()?) ^ (1 << 63);
    Some((stamp as i64, tail[8..].try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> Summary {
        Summary {
            numbers: Numbers {
                timestamp_us: 1_750_000_000_123_456,
                status: Some(Status::Failed),
                errors_logged: false,
                latency_ms: Some(812.5),
                cost_usd: Some(0.0031),
                prompt_tokens: Some(1200),
                completion_tokens: Some(0),
                total_tokens: Some(1200),
                span_count: 6,
            },
            agent_name: "support-bot".into(),
            framework: Some("langgraph".into()),
            run_id: Some("run-1".into()),
            request_id: None,
            session_id: Some("".into()),
            tags: vec!["prod".into(), "eu".into()],
        }
    }

    #[test]
    fn summaries_round_trip_with_unset_distinct_from_zero() {
        for summary in [full(), Summary { agent_name: "a".into(), ..Summary::default() }] {
            let bytes = summary.encode();
            assert_eq!(Summary::decode(&bytes).unwrap(), summary);
            let numbers = Numbers::read(&bytes).unwrap();
            assert_eq!(numbers.latency_ms, summary.numbers.latency_ms);
            assert_eq!(numbers.completion_tokens, summary.numbers.completion_tokens);
            assert_eq!(numbers.has_errors(), summary.has_errors());
        }
        assert!(full().has_errors(), "failed status counts as an error");
    }

    #[test]
    fn merging_keeps_first_identity_and_takes_newest_values() {
        let mut merged = Summary {
            numbers: Numbers { status: Some(Status::Running), ..full().numbers },
            ..full()
        };
        let newer = Summary {
            numbers: Numbers {
                timestamp_us: 9,
                status: Some(Status::Succeeded),
                errors_logged: true,
                latency_ms: None,
                cost_usd: Some(1.0),
                span_count: 2,
                ..Numbers::default()
            },
            agent_name: "other".into(),
            request_id: Some("req".into()),
            tags: vec!["eu".into(), "beta".into()],
            ..Summary::default()
        };
        merged.merge(&newer);
        assert_eq!(merged.numbers.timestamp_us, full().numbers.timestamp_us);
        assert_eq!(merged.agent_name, "support-bot");
        assert_eq!(merged.numbers.status, Some(Status::Succeeded));
        assert_eq!(merged.numbers.latency_ms, Some(812.5));
        // Derived numbers are the merge state's business (merge.rs), not merged here.
        assert!(!merged.numbers.errors_logged);
        assert_eq!((merged.numbers.cost_usd, merged.numbers.span_count), (Some(0.0031), 6));
        assert_eq!(merged.request_id.as_deref(), Some("req"));
        assert_eq!(merged.tags, ["prod", "eu", "beta"]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let good = full().encode();
        for len in 0..good.len() {
            assert!(Summary::decode(&good[..len]).is_err());
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut bytes = good.clone();
            let at = (state as usize) % bytes.len();
            bytes[at] ^= (state >> 32) as u8 | 1;
            let _ = Summary::decode(&bytes);
        }
    }

    #[test]
    fn a_fragment_summary_reads_the_canonical_record() {
        let input = crate::schema::canonicalize(
            &sample_fragment(),
            &crate::schema::Limits::default(),
            &crate::redact::Redaction::default(),
            Timestamp { secs: 1_750_000_000, nanos: 0 },
        )
        .unwrap();
        let (summary, contribution) = Summary::of_fragment(&input.bytes).unwrap();
        assert_eq!(summary.agent_name, "bot");
        assert_eq!(contribution.spans.len(), 2);
        assert!(contribution.tool_errors && contribution.tokens.is_none());
        assert_eq!(summary.numbers.timestamp_us, 1_750_000_000_000_000);
        assert_eq!(summary.numbers.status, Some(Status::Succeeded));
        assert_eq!(summary.numbers.span_count, 2);
        assert!(summary.numbers.errors_logged, "the tool call has an error");
        assert_eq!(summary.tags, ["a", "b"]);
        // No trace-level usage: summed from the LLM span only.
        assert_eq!(
            (
                summary.numbers.prompt_tokens,
                summary.numbers.completion_tokens,
                summary.numbers.total_tokens
            ),
            (Some(10), Some(5), Some(15))
        );
        assert_eq!(summary.numbers.cost_usd, Some(0.25));
    }

    /// {agent_name, status, tags, tool_calls:[{tool_name, error}], spans:[LLM with usage, TOOL
    /// with usage that must not count]} as msgpack.
    fn sample_fragment() -> Vec<u8> {
        let mut out = Vec::new();
        let s = |out: &mut Vec<u8>, t: &str| crate::msgpack::write_str(out, t);
        out.push(0x85);
        s(&mut out, "agent_name");
        s(&mut out, "bot");
        s(&mut out, "status");
        s(&mut out, "succeeded");
        s(&mut out, "tags");
        out.push(0x93);
        for tag in ["a", "b", "a"] {
            s(&mut out, tag);
        }
        s(&mut out, "tool_calls");
        out.extend_from_slice(&[0x91, 0x82]);
        s(&mut out, "tool_name");
        s(&mut out, "search");
        s(&mut out, "error");
        s(&mut out, "timeout");
        s(&mut out, "spans");
        out.push(0x92);
        for (kind, tokens) in [("LLM", 10u8), ("TOOL", 99u8)] {
            out.push(0x83);
            s(&mut out, "name");
            s(&mut out, "step");
            s(&mut out, "kind");
            s(&mut out, kind);
            s(&mut out, "attributes");
            out.push(0x83);
            s(&mut out, "gen_ai.usage.input_tokens");
            out.push(tokens);
            s(&mut out, "gen_ai.usage.output_tokens");
            out.push(tokens / 2);
            s(&mut out, "gen_ai.usage.cost");
            crate::msgpack::write_f64(&mut out, 0.25);
        }
        out
    }

    #[test]
    fn index_keys_group_by_value_and_sort_by_time() {
        let id = [7u8; 16];
        let earlier = index_key(Field::AgentName, b"bot", -5, &id);
        let later = index_key(Field::AgentName, b"bot", 5, &id);
        let other = index_key(Field::AgentName, b"bot2", -10, &id);
        assert!(earlier < later, "time order holds across the epoch");
        assert!(earlier.starts_with(&index_prefix(Field::AgentName, b"bot")));
        assert!(!other.starts_with(&index_prefix(Field::AgentName, b"bot")));
        assert_eq!(parse_time_key(&later), Some((5, id)));
        let long = vec![b'x'; 300];
        let hashed = index_key(Field::RunId, &long, 0, &id);
        assert!(hashed.len() <= 511 && hashed[1] == HASHED);
        assert_eq!(full().index_keys(&id).len(), 1 + 3 + 1 + 1 + 2);
        let clean = Summary { agent_name: "a".into(), ..Summary::default() };
        assert_eq!(clean.index_keys(&id).len(), 1, "only errors are indexed under has_errors");
    }

    /// A trace map of an agent name and these tags, as canonical msgpack.
    fn tagged(tags: impl ExactSizeIterator<Item = String>) -> Vec<u8> {
        let mut out = vec![0x82];
        crate::msgpack::write_str(&mut out, "agent_name");
        crate::msgpack::write_str(&mut out, "a");
        crate::msgpack::write_str(&mut out, "tags");
        crate::msgpack::write_array_header(&mut out, tags.len() as u32);
        for tag in tags {
            crate::msgpack::write_str(&mut out, &tag);
        }
        out
    }

    #[test]
    fn a_summary_keeps_and_indexes_the_first_65534_distinct_tags() {
        // 150,000 distinct tags (1.2 MB, well inside max_trace_bytes), each sent twice.
        // Deduplicating by comparing each tag with every earlier one took over a minute.
        let tags = (0..300_000).map(|i| format!("tag-{}", i % 150_000));
        let (summary, _) = Summary::of_fragment(&tagged(tags)).unwrap();
        let mut merged = summary.clone();
        merged.merge(&summary);
        assert_eq!(merged, summary);
        assert_eq!(summary.tags.len(), MAX_TAGS);
        assert_eq!((&*summary.tags[0], &*summary.tags[MAX_TAGS - 1]), ("tag-0", "tag-65533"));
        // What is indexed is what the stored summary holds, so deleting the trace (which
        // removes the keys of its stored summary) leaves no index entry behind.
        let stored = Summary::decode(&summary.encode()).unwrap();
        assert_eq!(stored, summary);
        assert_eq!(stored.index_keys(&[1; 16]), summary.index_keys(&[1; 16]));
        assert_eq!(summary.index_keys(&[1; 16]).len(), 1 + MAX_TAGS);
    }
}
