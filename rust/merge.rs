//! Ingest or update (SPEC §4): what a fragment contributes to its trace's numbers, the state
//! the writer keeps for traces logged in several fragments, and the rules an update follows.
//!
//! A summary alone cannot be merged exactly: spans are a union keyed by `span_id` (a re-sent
//! span replaces its earlier version, so its status and usage must be replaced, not added),
//! and trace-level tokens and cost fall back to the LLM spans' usage only while no fragment
//! reported them. So for every trace that has (or may get) more than one fragment, the writer
//! keeps a [`MergeState`] in the `merges` database: one small fact per span, the trace-level
//! usage as reported, and the resend keys of its fragments. Traces logged once under a minted
//! id (the common case) never get one. Layout in docs/format.md.

use crate::error::FieldError;
use crate::summary::{Numbers, Status, Summary};

const VERSION: u8 = 1;

const TOOL_ERROR: u8 = 1;
const TOKENS: u8 = 1 << 1;
const COST: u8 = 1 << 2;

const SPAN_ERROR: u8 = 1;
const SPAN_PROMPT: u8 = 1 << 1;
const SPAN_COMPLETION: u8 = 1 << 2;
const SPAN_TOTAL: u8 = 1 << 3;
const SPAN_COST: u8 = 1 << 4;
const SPAN_TOKENS: u8 = 1 << 5;

/// Token counts as reported; a count that was not reported is `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub prompt: Option<u64>,
    pub completion: Option<u64>,
    pub total: Option<u64>,
}

/// What the summary needs of one span: whether it is in error, and the usage an LLM span
/// reported in its `gen_ai.usage.*` attributes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SpanFact {
    pub id: [u8; 8],
    pub error: bool,
    /// Only for LLM spans that reported token counts.
    pub tokens: Option<Tokens>,
    /// Only for LLM spans that reported a cost.
    pub cost: Option<f64>,
}

/// What one fragment contributes to the merged numbers beyond what its summary merges.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Contribution {
    /// Unique by id within a fragment (the schema refuses duplicates).
    pub spans: Vec<SpanFact>,
    /// The trace-level `token_usage`, when this fragment reported one.
    pub tokens: Option<Tokens>,
    /// The trace-level `cost_usd`, when this fragment reported one.
    pub cost: Option<f64>,
    /// Whether a tool call of this fragment reported an error (tool calls are appended, so
    /// this never goes away).
    pub tool_errors: bool,
    /// Each span's id and parent id, in the fragment's order (kept only to check parents
    /// that name spans of earlier fragments).
    pub links: Vec<SpanLink>,
}

/// A span's id and the id its `parent_span_id` names.
pub type SpanLink = ([u8; 8], Option<[u8; 8]>);

impl Contribution {
    /// Sets the numbers a summary derives from spans and usage, for a trace made of this
    /// fragment alone.
    pub fn apply(&self, numbers: &mut Numbers) {
        derive(numbers, self.tool_errors, self.tokens, self.cost, &self.spans);
    }
}

/// The merged contribution of every stored fragment of one trace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MergeState {
    tool_errors: bool,
    tokens: Option<Tokens>,
    cost: Option<f64>,
    /// Sorted by id; the newest version of each span.
    spans: Vec<SpanFact>,
    /// The resend keys of the stored fragments that had one (see `schema::Canonical`).
    resends: Vec<u128>,
}

impl MergeState {
    /// Folds a newer fragment in: a re-sent span replaces its earlier version, reported
    /// usage replaces the earlier report, tool errors accumulate.
    pub fn fold(&mut self, fragment: &Contribution, resend_key: Option<u128>) {
        self.tool_errors |= fragment.tool_errors;
        if fragment.tokens.is_some() {
            self.tokens = fragment.tokens;
        }
        if fragment.cost.is_some() {
            self.cost = fragment.cost;
        }
        self.spans = merge_spans(std::mem::take(&mut self.spans), &fragment.spans);
        if let Some(key) = resend_key {
            if !self.is_resend(key) {
                self.resends.push(key);
            }
        }
    }

    /// Whether a fragment with this resend key is already stored: sending it again changes
    /// nothing, so the writer drops it.
    pub fn is_resend(&self, key: u128) -> bool {
        self.resends.contains(&key)
    }

    /// The resend keys of the stored fragments.
    pub fn resends(&self) -> &[u128] {
        &self.resends
    }

    /// Sets the numbers a summary derives from the merged spans and usage.
    pub fn apply(&self, numbers: &mut Numbers) {
        derive(numbers, self.tool_errors, self.tokens, self.cost, &self.spans);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48 + self.spans.len() * 17 + self.resends.len() * 16);
        let mut flags = 0;
        for (set, bit) in [
            (self.tool_errors, TOOL_ERROR),
            (self.tokens.is_some(), TOKENS),
            (self.cost.is_some(), COST),
        ] {
            if set {
                flags |= bit;
            }
        }
        out.extend_from_slice(&[VERSION, flags]);
        if let Some(tokens) = self.tokens {
            write_tokens(&mut out, tokens);
        }
        if let Some(cost) = self.cost {
            out.extend_from_slice(&cost.to_le_bytes());
        }
        out.extend_from_slice(&(self.spans.len() as u32).to_le_bytes());
        for span in &self.spans {
            out.extend_from_slice(&span.id);
            let mut flags = 0;
            for (set, bit) in [
                (span.error, SPAN_ERROR),
                (span.tokens.is_some(), SPAN_TOKENS),
                (span.cost.is_some(), SPAN_COST),
            ] {
                if set {
                    flags |= bit;
                }
            }
            out.push(flags);
            if let Some(tokens) = span.tokens {
                write_tokens(&mut out, tokens);
            }
            if let Some(cost) = span.cost {
                out.extend_from_slice(&cost.to_le_bytes());
            }
        }
        out.extend_from_slice(&(self.resends.len() as u32).to_le_bytes());
        for key in &self.resends {
            out.extend_from_slice(&key.to_le_bytes());
        }
        out
    }

    /// Inverse of [`MergeState::encode`]; never panics on arbitrary bytes.
    pub fn decode(bytes: &[u8]) -> Result<MergeState, String> {
        let mut rest = bytes;
        let [version, flags] = take::<2>(&mut rest)?;
        if version != VERSION {
            return Err(format!("unknown merge state version {version}"));
        }
        let mut state = MergeState { tool_errors: flags & TOOL_ERROR != 0, ..Default::default() };
        if flags & TOKENS != 0 {
            state.tokens = Some(read_tokens(&mut rest)?);
        }
        if flags & COST != 0 {
            state.cost = Some(f64::from_le_bytes(take(&mut rest)?));
        }
        let spans = u32::from_le_bytes(take(&mut rest)?) as usize;
        // Bounded by the bytes present (9 per span at least), not by the stored count.
        state.spans.reserve(spans.min(rest.len() / 9));
        for _ in 0..spans {
            let id = take::<8>(&mut rest)?;
            let [flags] = take::<1>(&mut rest)?;
            let tokens =
                if flags & SPAN_TOKENS != 0 { Some(read_tokens(&mut rest)?) } else { None };
            let cost = if flags & SPAN_COST != 0 {
                Some(f64::from_le_bytes(take(&mut rest)?))
            } else {
                None
            };
            state.spans.push(SpanFact { id, error: flags & SPAN_ERROR != 0, tokens, cost });
        }
        if !state.spans.windows(2).all(|pair| pair[0].id < pair[1].id) {
            return Err("span ids are not sorted".into());
        }
        let resends = u32::from_le_bytes(take(&mut rest)?) as usize;
        state.resends.reserve(resends.min(rest.len() / 16));
        for _ in 0..resends {
            state.resends.push(u128::from_le_bytes(take(&mut rest)?));
        }
        if !rest.is_empty() {
            return Err(format!("{} unexpected bytes at the end", rest.len()));
        }
        Ok(state)
    }
}

/// The union by id of `known` (sorted by id) and a fragment's spans, a newer version
/// replacing an older one; sorted by id. One sort and one merge: inserting 100,000 spans
/// one by one into the sorted list took seconds of the writer's time.
fn merge_spans(known: Vec<SpanFact>, fragment: &[SpanFact]) -> Vec<SpanFact> {
    let mut newer = fragment.to_vec();
    // Reversed, the stable sort puts the last version of a repeated id first, and `dedup`
    // keeps the first of each run.
    newer.reverse();
    newer.sort_by_key(|span| span.id);
    newer.dedup_by_key(|span| span.id);
    let mut merged = Vec::with_capacity(known.len() + newer.len());
    let mut known = known.into_iter().peekable();
    for span in newer {
        while let Some(older) = known.next_if(|older| older.id < span.id) {
            merged.push(older);
        }
        known.next_if(|older| older.id == span.id);
        merged.push(span);
    }
    merged.extend(known);
    merged
}

/// Why an update cannot be stored (SPEC §4): the agent is fixed by the first fragment, and a
/// trace that finished cannot be running again. `stored` is the merged summary so far.
pub fn check_update(stored: &Summary, fragment: &Summary) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    if fragment.agent_name != stored.agent_name {
        errors.push(FieldError::new(
            "agent_name",
            format!(
                "cannot change an existing trace's agent_name from {:?} to {:?}",
                stored.agent_name, fragment.agent_name
            ),
        ));
    }
    if let (Some(done @ (Status::Succeeded | Status::Failed)), Some(Status::Running)) =
        (stored.numbers.status, fragment.numbers.status)
    {
        errors.push(FieldError::new(
            "status",
            format!("the trace already {}; it cannot go back to \"running\"", done.name()),
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The SPEC rules for derived numbers: spans count once each; errors come from ERROR spans
/// and tool calls (a failed status is read from the status itself); trace-level token usage
/// and cost are authoritative when reported, otherwise LLM spans' usage is summed.
fn derive(
    numbers: &mut Numbers,
    tool_errors: bool,
    tokens: Option<Tokens>,
    cost: Option<f64>,
    spans: &[SpanFact],
) {
    numbers.span_count = u32::try_from(spans.len()).unwrap_or(u32::MAX);
    numbers.errors_logged = tool_errors || spans.iter().any(|span| span.error);
    let tokens = tokens.or_else(|| {
        let mut reported = spans.iter().filter_map(|span| span.tokens).peekable();
        reported.peek()?;
        let (mut prompt, mut completion, mut total) = (0u64, 0u64, 0u64);
        for span in reported {
            let (p, c) = (span.prompt.unwrap_or(0), span.completion.unwrap_or(0));
            prompt = prompt.saturating_add(p);
            completion = completion.saturating_add(c);
            total = total.saturating_add(span.total.unwrap_or(p.saturating_add(c)));
        }
        Some(Tokens { prompt: Some(prompt), completion: Some(completion), total: Some(total) })
    });
    let tokens = tokens.unwrap_or_default();
    numbers.prompt_tokens = tokens.prompt;
    numbers.completion_tokens = tokens.completion;
    numbers.total_tokens = tokens.total;
    numbers.cost_usd = cost.or_else(|| {
        let mut costs = spans.iter().filter_map(|span| span.cost).peekable();
        costs.peek()?;
        Some(costs.sum())
    });
}

fn write_tokens(out: &mut Vec<u8>, tokens: Tokens) {
    let mut flags = 0;
    for (set, bit) in [
        (tokens.prompt.is_some(), SPAN_PROMPT),
        (tokens.completion.is_some(), SPAN_COMPLETION),
        (tokens.total.is_some(), SPAN_TOTAL),
    ] {
        if set {
            flags |= bit;
        }
    }
    out.push(flags);
    for count in [tokens.prompt, tokens.completion, tokens.total].into_iter().flatten() {
        out.extend_from_slice(&count.to_le_bytes());
    }
}

fn read_tokens(rest: &mut &[u8]) -> Result<Tokens, String> {
    let [flags] = take::<1>(rest)?;
    let mut count = |bit: u8| -> Result<Option<u64>, String> {
        Ok(if flags & bit != 0 { Some(u64::from_le_bytes(take(rest)?)) } else { None })
    };
    Ok(Tokens {
        prompt: count(SPAN_PROMPT)?,
        completion: count(SPAN_COMPLETION)?,
        total: count(SPAN_TOTAL)?,
    })
}

fn take<const N: usize>(rest: &mut &[u8]) -> Result<[u8; N], String> {
    let Some((head, tail)) = rest.split_first_chunk::<N>() else {
        return Err(format!("truncated: {} bytes left where {N} were expected", rest.len()));
    };
    *rest = tail;
    Ok(*head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: u8, error: bool, tokens: Option<(u64, u64)>, cost: Option<f64>) -> SpanFact {
        SpanFact {
            id: [id; 8],
            error,
            tokens: tokens.map(|(p, c)| Tokens {
                prompt: Some(p),
                completion: Some(c),
                total: None,
            }),
            cost,
        }
    }

    fn numbers(state: &MergeState) -> Numbers {
        let mut numbers = Numbers::default();
        state.apply(&mut numbers);
        numbers
    }

    #[test]
    fn a_resent_span_replaces_its_earlier_version() {
        let mut state = MergeState::default();
        state.fold(
            &Contribution {
                spans: vec![span(1, true, Some((10, 5)), Some(0.5)), span(2, false, None, None)],
                ..Default::default()
            },
            None,
        );
        let first = numbers(&state);
        assert_eq!((first.span_count, first.errors_logged), (2, true));
        assert_eq!(
            (first.prompt_tokens, first.total_tokens, first.cost_usd),
            (Some(10), Some(15), Some(0.5))
        );

        state.fold(
            &Contribution {
                spans: vec![span(1, false, Some((20, 5)), None)],
                ..Default::default()
            },
            None,
        );
        let second = numbers(&state);
        assert_eq!((second.span_count, second.errors_logged), (2, false));
        assert_eq!(
            (second.prompt_tokens, second.total_tokens, second.cost_usd),
            (Some(20), Some(25), None)
        );
    }

    #[test]
    fn reported_usage_wins_over_spans_and_tool_errors_stay() {
        let mut state = MergeState::default();
        let reported = Tokens { prompt: Some(1), completion: Some(2), total: Some(3) };
        state.fold(
            &Contribution {
                spans: vec![span(1, false, Some((10, 5)), Some(0.5))],
                tokens: Some(reported),
                tool_errors: true,
                ..Default::default()
            },
            Some(7),
        );
        state.fold(&Contribution { cost: Some(2.0), ..Default::default() }, Some(8));
        let merged = numbers(&state);
        assert_eq!(
            (merged.prompt_tokens, merged.completion_tokens, merged.total_tokens),
            (Some(1), Some(2), Some(3))
        );
        assert_eq!(merged.cost_usd, Some(2.0));
        assert!(merged.errors_logged);
        assert!(state.is_resend(7) && state.is_resend(8) && !state.is_resend(9));
    }

    #[test]
    fn states_round_trip_and_garbage_is_an_error() {
        let mut state = MergeState::default();
        state.fold(
            &Contribution {
                spans: vec![span(3, true, None, Some(1.5)), span(1, false, Some((4, 4)), None)],
                tokens: Some(Tokens { prompt: None, completion: Some(9), total: Some(9) }),
                cost: Some(0.25),
                tool_errors: true,
                links: Vec::new(),
            },
            Some(u128::MAX - 1),
        );
        let bytes = state.encode();
        assert_eq!(MergeState::decode(&bytes), Ok(state.clone()));
        assert_eq!(MergeState::decode(&MergeState::default().encode()), Ok(MergeState::default()));
        for cut in 0..bytes.len() {
            assert!(MergeState::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(MergeState::decode(&longer).is_err());
        for byte in 0..=255u8 {
            let mut flipped = bytes.clone();
            flipped[1] ^= byte;
            let _ = MergeState::decode(&flipped);
        }
    }

    #[test]
    fn updates_keep_the_agent_and_never_reopen_a_finished_trace() {
        let summary = |agent: &str, status: Option<Status>| {
            let mut s = Summary { agent_name: agent.into(), ..Default::default() };
            s.numbers.status = status;
            s
        };
        let done = summary("a", Some(Status::Succeeded));
        assert!(check_update(&done, &summary("a", None)).is_ok());
        assert!(check_update(&done, &summary("a", Some(Status::Failed))).is_ok());
        assert!(check_update(
            &summary("a", Some(Status::Running)),
            &summary("a", Some(Status::Running))
        )
        .is_ok());
        let errors = check_update(&done, &summary("b", Some(Status::Running))).unwrap_err();
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["agent_name", "status"]);
    }

    #[test]
    fn folding_many_spans_keeps_the_newest_version_of_each() {
        // 200,000 spans in random order (max_spans defaults to 100,000 per fragment).
        // Inserting them one by one into the sorted list took about a minute.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let ids: Vec<[u8; 8]> = (0..200_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_be_bytes()
            })
            .collect();
        let fact = |id: [u8; 8], error: bool| SpanFact { id, error, ..Default::default() };
        let mut state = MergeState::default();
        state.fold(
            &Contribution {
                spans: ids.iter().map(|&id| fact(id, false)).collect(),
                ..Default::default()
            },
            None,
        );
        // A re-sent half, in error; an id repeated within one fragment: its last version.
        let mut resent: Vec<SpanFact> = ids[..100_000].iter().map(|&id| fact(id, true)).collect();
        resent.push(fact(ids[0], false));
        state.fold(&Contribution { spans: resent, ..Default::default() }, None);
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(state.spans.iter().map(|s| s.id).collect::<Vec<_>>(), sorted);
        let errors: Vec<bool> = ids
            .iter()
            .map(|id| state.spans[state.spans.binary_search_by_key(id, |s| s.id).unwrap()].error)
            .collect();
        assert!(!errors[0] && errors[1..100_000].iter().all(|&e| e));
        assert!(errors[100_000..].iter().all(|&e| !e));
        assert_eq!(MergeState::decode(&state.encode()).unwrap(), state);
    }
}
