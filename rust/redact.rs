//! Secret detection and redaction: what a trace's strings may not carry to disk.
//!
//! Two detectors run on the free text of a trace (`schema.rs` says which fields):
//!
//! * a value under a secret-looking key name (`password`, `x-api-key`, `clientSecret`, ...)
//!   is replaced whole by `"[REDACTED]"`, whatever its type;
//! * a substring in a known secret format (the rules of `redact_rules.txt`: API keys and
//!   tokens, JWTs, PEM private keys, passwords in URLs, ...) becomes `"[REDACTED:<kind>]"`.
//!
//! Clean text must cost little, so the rules are prefiltered by keyword: one keyword search
//! over the whole encoded trace ([`Redaction::scan`]) finds them all, and a string runs only
//! the regexes of the rules whose keywords it holds. Patterns added on open have no
//! keywords: they run on every string.

use std::cell::RefCell;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use aho_corasick::{AhoCorasick, Input, MatchKind};
use regex::bytes::{Regex, RegexBuilder};

use crate::error::FieldError;
use crate::msgpack::{self, DecodeError, Reader, Token};

/// What replaces a value under a secret-looking key name.
pub const REDACTED: &str = "[REDACTED]";

/// The kind reported (in `reject` mode) for a value under a secret-looking key name.
pub const KEY_NAME: &str = "key_name";

/// Key names whose values are secrets: the product spec's list, plus `passphrase` and the
/// plurals that are just as common. Matched as the last words of a key (see [`KeyNames`]).
const SECRET_KEYS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "access_token",
    "refresh_token",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
    "cookies",
    "private_key",
    "client_secret",
    "credential",
    "credentials",
];

const BUILTIN_RULES: &str = include_str!("redact_rules.txt");

/// The longest kind a caller may name: kinds are written into every replacement.
const MAX_KIND_CHARS: usize = 32;

/// What `log()` does with a secret it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Replace it and store the trace (the default).
    Redact,
    /// Refuse the trace, naming where and what kind, never the secret.
    Reject,
    /// Store strings as given.
    Off,
}

impl Mode {
    pub fn parse(text: &str) -> Result<Mode, FieldError> {
        match text {
            "redact" => Ok(Mode::Redact),
            "reject" => Ok(Mode::Reject),
            "off" => Ok(Mode::Off),
            other => Err(FieldError::new(
                "redaction",
                format!("expected 'redact', 'reject' or 'off', got {other:?}"),
            )),
        }
    }
}

/// A store's redaction policy: the mode, and the caller's key names and patterns on top of
/// the built-in ones.
#[derive(Clone)]
pub struct Redaction {
    mode: Mode,
    keys: Arc<KeyNames>,
    /// Patterns added on open: they run on every string.
    patterns: Arc<[Rule]>,
}

impl Default for Redaction {
    fn default() -> Self {
        Redaction {
            mode: Mode::Redact,
            keys: Arc::new(KeyNames::new(SECRET_KEYS.iter().copied())),
            patterns: Arc::from([]),
        }
    }
}

impl fmt::Debug for Redaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds: Vec<&str> = self.patterns.iter().map(|rule| &*rule.kind).collect();
        f.debug_struct("Redaction")
            .field("mode", &self.mode)
            .field("key_names", &self.keys.names.len())
            .field("patterns", &kinds)
            .finish()
    }
}

impl Redaction {
    /// The policy for `mode`, with extra key names and `(kind, regex)` patterns; errors name
    /// the open option at fault (`redaction_keys[1]`, `redaction_patterns.my_kind`).
    pub fn new(
        mode: Mode,
        keys: &[String],
        patterns: &[(String, String)],
    ) -> Result<Redaction, FieldError> {
        if let Some((i, key)) =
            keys.iter().enumerate().find(|(_, key)| !key.chars().any(char::is_alphanumeric))
        {
            return Err(FieldError::new(
                format!("redaction_keys[{i}]"),
                format!("must be a key name with a letter or digit, got {key:?}"),
            ));
        }
        let patterns = patterns
            .iter()
            .map(|(kind, regex)| Rule::custom(kind, regex))
            .collect::<Result<Vec<_>, _>>()?;
        let names = SECRET_KEYS.iter().copied().chain(keys.iter().map(String::as_str));
        builtin();
        Ok(Redaction { mode, keys: Arc::new(KeyNames::new(names)), patterns: patterns.into() })
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Starts on one encoded trace by finding every rule keyword in it at once; then
    /// [`Scan::text`] takes its strings in order. `None` when redaction is off.
    pub fn scan(&self, input: &[u8]) -> Option<Scan<'_>> {
        if self.mode == Mode::Off {
            return None;
        }
        let rules = builtin();
        let hits = FOLDED.with_borrow_mut(|folded| {
            // Folded once, so that a case-sensitive search (which runs on SIMD, several times
            // faster than a case-insensitive one) finds the keywords in any case.
            folded.clear();
            folded.extend(input.iter().map(u8::to_ascii_lowercase));
            let hits = rules.find_keywords(folded);
            if folded.capacity() > KEEP_FOLDED_BYTES {
                *folded = Vec::new();
            }
            hits
        });
        Some(Scan { redaction: self, rules, hits, next: 0 })
    }
}

thread_local! {
    /// The lowercase copy of the trace being scanned, kept from one trace to the next:
    /// allocating it for every trace cost a third as much as the search (page faults).
    static FOLDED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Larger copies are freed after use rather than kept.
const KEEP_FOLDED_BYTES: usize = 1 << 20;

/// A rule keyword found in the input.
#[derive(Clone, Copy)]
struct Hit {
    start: usize,
    end: usize,
    /// The rules it belongs to, as bits of the built-in rule indexes.
    rules: u64,
}

/// The secrets of one encoded trace, found string by string in input order.
pub struct Scan<'r> {
    redaction: &'r Redaction,
    rules: &'static Rules,
    /// By start.
    hits: Vec<Hit>,
    /// The first hit not yet passed.
    next: usize,
}

/// A string with its secrets replaced.
#[derive(Debug, PartialEq, Eq)]
pub struct Redacted<'r> {
    pub text: String,
    /// The kinds replaced, each once, in order of appearance.
    pub kinds: Vec<&'r str>,
}

impl<'r> Scan<'r> {
    /// Whether a value under this map key is a secret.
    #[inline]
    pub fn is_secret_key(&self, key: &str) -> bool {
        self.redaction.keys.matches(key)
    }

    /// The secrets in `text`, a string at byte `at` of the scanned input; `None` if it has
    /// none. Strings must come in input order: keywords before `at` are passed over.
    #[inline]
    pub fn text(&mut self, at: usize, text: &str) -> Option<Redacted<'r>> {
        let end = at + text.len();
        let mut rules = 0;
        while let Some(hit) = self.hits.get(self.next) {
            if hit.start >= end {
                break;
            }
            // A keyword that straddles the string's edge is in two tokens, not in the text.
            if hit.start >= at && hit.end <= end {
                rules |= hit.rules;
            }
            self.next += 1;
        }
        if rules == 0 && self.redaction.patterns.is_empty() {
            return None;
        }
        self.find(text, rules)
    }

    /// Runs the given built-in rules and every custom pattern over `text`.
    #[cold]
    fn find(&self, text: &str, rules: u64) -> Option<Redacted<'r>> {
        let builtin: &'r [Rule] = &self.rules.rules;
        let chosen = builtin.iter().enumerate().filter(|(i, _)| rules & (1 << i) != 0);
        let custom =
            self.redaction.patterns.iter().enumerate().map(|(i, r)| (builtin.len() + i, r));
        // (secret, rule order, kind): on a tie the earlier rule names the replacement.
        let mut found: Vec<(Range<usize>, usize, &'r str)> = Vec::new();
        for (order, rule) in chosen.chain(custom) {
            rule.secrets(text.as_bytes(), |range| {
                found.push((char_boundaries(text, range), order, &*rule.kind));
            });
        }
        if found.is_empty() {
            return None;
        }
        found.sort_unstable_by_key(|(range, order, _)| (range.start, *order));
        let mut merged: Vec<(Range<usize>, &'r str)> = Vec::with_capacity(found.len());
        for (range, _, kind) in found {
            match merged.last_mut() {
                Some((last, _)) if range.start <= last.end => last.end = last.end.max(range.end),
                _ => merged.push((range, kind)),
            }
        }
        let mut redacted = Redacted { text: String::with_capacity(text.len()), kinds: Vec::new() };
        let mut copied = 0;
        for (range, kind) in merged {
            redacted.text.push_str(&text[copied..range.start]);
            redacted.text.push_str("[REDACTED:");
            redacted.text.push_str(kind);
            redacted.text.push(']');
            copied = range.end;
            if !redacted.kinds.contains(&kind) {
                redacted.kinds.push(kind);
            }
        }
        redacted.text.push_str(&text[copied..]);
        Some(redacted)
    }
}

/// `range` widened to the nearest character boundaries of `text`: the built-in regexes work
/// on bytes, and a replacement must never split a character.
fn char_boundaries(text: &str, range: Range<usize>) -> Range<usize> {
    let (mut start, mut end) = (range.start, range.end);
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    while !text.is_char_boundary(end) {
        end += 1;
    }
    start..end
}

/// One secret format.
struct Rule {
    id: Box<str>,
    kind: Box<str>,
    /// The fewest ASCII digits a secret holds.
    digits: usize,
    regex: Regex,
    /// The capture group named `secret`, if only that part of a match is secret.
    group: Option<usize>,
}

impl Rule {
    fn new(id: &str, kind: &str, digits: usize, regex: Regex) -> Rule {
        let group = regex.capture_names().position(|name| name == Some("secret"));
        Rule { id: id.into(), kind: kind.into(), digits, regex, group }
    }

    /// A pattern added on open; errors name the option.
    fn custom(kind: &str, pattern: &str) -> Result<Rule, FieldError> {
        let kind_chars = |b: u8| b.is_ascii_alphanumeric() || b"_.-".contains(&b);
        if kind.is_empty() || kind.len() > MAX_KIND_CHARS || !kind.bytes().all(kind_chars) {
            return Err(FieldError::new(
                "redaction_patterns",
                format!(
                    "a kind must be 1..{MAX_KIND_CHARS} letters, digits, '_', '.' or '-', \
                     got {kind:?}"
                ),
            ));
        }
        let path = format!("redaction_patterns.{kind}");
        let regex = RegexBuilder::new(pattern)
            .build()
            .map_err(|e| FieldError::new(&path, format!("invalid regex: {e}")))?;
        if regex.is_match(b"") {
            return Err(FieldError::new(path, "must not match the empty string"));
        }
        Ok(Rule::new(kind, kind, 0, regex))
    }

    /// Calls `each` with the byte range of every secret in `text`.
    fn secrets(&self, text: &[u8], mut each: impl FnMut(Range<usize>)) {
        let mut offer = |range: Range<usize>| {
            let secret = &text[range.clone()];
            let digits = secret.iter().filter(|b| b.is_ascii_digit()).count();
            // Already redacted: stays as it is, so that redacting twice changes nothing.
            if !secret.is_empty() && digits >= self.digits && !secret.starts_with(b"[REDACTED") {
                each(range);
            }
        };
        match self.group {
            None => self.regex.find_iter(text).for_each(|m| offer(m.range())),
            Some(group) => self
                .regex
                .captures_iter(text)
                .filter_map(|caps| caps.get(group))
                .for_each(|m| offer(m.range())),
        }
    }
}

/// The built-in rules, with their keyword prefilter.
pub struct Rules {
    rules: Vec<Rule>,
    keywords: Vec<KeywordGroup>,
}

/// Keywords searched for together.
///
/// The search runs on SIMD (aho-corasick's Teddy), which spots candidates by the first bytes
/// of the keywords, sorted into a few buckets: the more keywords share a bucket, the more
/// false starts it checks in ordinary text. On 5 KB of prose or code, two searches of 16
/// keywords were measured at 1.2 µs, one search of all 31 at 3.5 µs.
struct KeywordGroup {
    search: AhoCorasick,
    /// For each keyword (by pattern id), the rules that have it, as bits of rule indexes.
    rules: Vec<u64>,
}

const KEYWORDS_PER_GROUP: usize = 16;

/// The rules of `redact_rules.txt`, compiled on first use.
///
/// A `fork()` while another thread compiles them would leave the child's copy of the
/// `OnceLock` "in progress" forever, and the child's first `log()` would wait on it for
/// good: so [`Redaction::new`] compiles them on the thread that opens a store, and
/// `fork.rs` waits for a compilation in flight before every fork.
pub fn builtin() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(|| Rules::parse(BUILTIN_RULES).unwrap_or_else(|e| panic!("{e}")))
}

impl Rules {
    /// Every keyword in `folded` (lowercase), by start.
    fn find_keywords(&self, folded: &[u8]) -> Vec<Hit> {
        let mut hits = Vec::new();
        for group in &self.keywords {
            let mut from = 0;
            while let Some(m) = group.search.find(Input::new(folded).range(from..)) {
                let rules = group.rules[m.pattern().as_usize()];
                hits.push(Hit { start: m.start(), end: m.end(), rules });
                // Keywords may overlap in the text (`sk------BEGIN`): look again one byte on.
                from = m.start() + 1;
            }
        }
        if self.keywords.len() > 1 {
            hits.sort_unstable_by_key(|hit| hit.start);
        }
        hits
    }

    /// Reads the rule table (format in its header).
    fn parse(table: &str) -> Result<Rules, String> {
        let mut rules = Vec::new();
        let mut keywords: Vec<String> = Vec::new();
        let mut of_keyword: Vec<u64> = Vec::new();
        for (n, line) in table.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fail = |what: String| format!("redact_rules.txt line {}: {what}", n + 1);
            let [id, kind, words, digits, pattern] =
                columns(line).ok_or_else(|| fail("expected 5 columns".into()))?;
            let digits = digits.parse().map_err(|_| fail(format!("bad digits {digits:?}")))?;
            let regex = RegexBuilder::new(pattern)
                .unicode(false)
                .build()
                .map_err(|e| fail(format!("bad regex: {e}")))?;
            let bit = 1u64
                .checked_shl(rules.len() as u32)
                .filter(|&bit| bit != 0)
                .ok_or_else(|| fail("more than 64 rules".into()))?;
            for word in words.split(',') {
                if word.is_empty() || word.bytes().any(|b| b.is_ascii_uppercase()) {
                    return Err(fail(format!("keyword {word:?} must be lowercase, not empty")));
                }
                match keywords.iter().position(|known| known == word) {
                    Some(i) => of_keyword[i] |= bit,
                    None => {
                        keywords.push(word.to_owned());
                        of_keyword.push(bit);
                    }
                }
            }
            if rules.iter().any(|rule: &Rule| *rule.id == *id) {
                return Err(fail(format!("duplicate id {id}")));
            }
            rules.push(Rule::new(id, kind, digits, regex));
        }
        // At most one keyword matches at any position, so a leftmost-first search that steps
        // one byte past each match finds them all.
        for (a, b) in keywords.iter().flat_map(|a| keywords.iter().map(move |b| (a, b))) {
            if a != b && b.starts_with(a.as_str()) {
                return Err(format!("redact_rules.txt: keyword {a:?} starts keyword {b:?}"));
            }
        }
        let keywords = keywords
            .chunks(KEYWORDS_PER_GROUP)
            .zip(of_keyword.chunks(KEYWORDS_PER_GROUP))
            .map(|(words, rules)| {
                let search = AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostFirst)
                    .build(words)
                    .map_err(|e| format!("redact_rules.txt keywords: {e}"))?;
                Ok(KeywordGroup { search, rules: rules.to_vec() })
            })
            .collect::<Result<_, String>>()?;
        Ok(Rules { rules, keywords })
    }
}

/// The four space-separated columns of a rule line, then the rest of it (the regex).
fn columns(line: &str) -> Option<[&str; 5]> {
    let mut rest = line;
    let mut column = || {
        let (word, after) = rest.split_once(' ')?;
        rest = after.trim_start();
        Some(word)
    };
    let (id, kind, keywords, digits) = (column()?, column()?, column()?, column()?);
    Some([id, kind, keywords, digits, rest])
}

/// Secret-looking key names, matched as the last words of a key, in any case and with `_`,
/// `-`, `.` or a space between words, or in camelCase: `x-api-key`, `API_Key`,
/// `openaiApiKey` and `GITHUB_TOKEN` end in a secret name; `token_usage` and `max_tokens`
/// do not.
struct KeyNames {
    /// Folded (see [`fold`]); names of several words also without separators, for camelCase.
    names: Vec<Box<[u8]>>,
    /// For each byte, the names that end with it, folded.
    by_last: [Vec<usize>; 256],
    /// A bit for each pair of folded bytes that some name ends with (a one-byte name: every
    /// pair ending with it): most keys are ruled out by this lookup alone.
    endings: Box<[u64; 1024]>,
}

impl KeyNames {
    fn new<'k>(names: impl IntoIterator<Item = &'k str>) -> KeyNames {
        let mut keys = KeyNames {
            names: Vec::new(),
            by_last: std::array::from_fn(|_| Vec::new()),
            endings: Box::new([0; 1024]),
        };
        for name in names {
            let folded: Vec<u8> = name.bytes().map(fold).collect();
            let words: Vec<&[u8]> =
                folded.split(|&b| b == b'_').filter(|w| !w.is_empty()).collect();
            for variant in [words.join(&b'_'), words.concat()] {
                let Some(&last) = variant.last() else { continue };
                if keys.names.iter().any(|known| **known == *variant) {
                    continue;
                }
                keys.by_last[usize::from(last)].push(keys.names.len());
                match variant.len() {
                    1 => (0..=255).for_each(|before| keys.set_ending(before, last)),
                    n => keys.set_ending(variant[n - 2], last),
                }
                keys.names.push(variant.into());
            }
        }
        keys
    }

    fn set_ending(&mut self, before: u8, last: u8) {
        let pair = usize::from(before) << 8 | usize::from(last);
        self.endings[pair / 64] |= 1 << (pair % 64);
    }

    fn matches(&self, key: &str) -> bool {
        let key = key.as_bytes();
        let Some(&last) = key.last() else { return false };
        let (before, last) = (key.len().checked_sub(2).map_or(0, |i| fold(key[i])), fold(last));
        let pair = usize::from(before) << 8 | usize::from(last);
        if self.endings[pair / 64] & (1 << (pair % 64)) == 0 {
            return false;
        }
        self.by_last[usize::from(last)].iter().any(|&i| ends_with_word(key, &self.names[i]))
    }
}

/// One spelling of a key name: ASCII lowercase, with `-`, `.` and space as `_`.
fn fold(b: u8) -> u8 {
    match b {
        b'-' | b'.' | b' ' => b'_',
        _ => b.to_ascii_lowercase(),
    }
}

/// Whether `key` ends with the folded `name` and the name starts a word there: at the key's
/// start, after a separator, or where lower case turns upper (`xApiKey`).
fn ends_with_word(key: &[u8], name: &[u8]) -> bool {
    let Some(at) = key.len().checked_sub(name.len()) else { return false };
    if !key[at..].iter().zip(name).all(|(&k, &n)| fold(k) == n) {
        return false;
    }
    match at.checked_sub(1).map(|i| key[i]) {
        None => true,
        Some(before) => {
            fold(before) == b'_'
                || (key[at].is_ascii_uppercase()
                    && (before.is_ascii_lowercase() || before.is_ascii_digit()))
        }
    }
}

/// Redaction of values outside a trace (a decision's fields), field by field: in `redact`
/// mode the value is rewritten in place, in `reject` mode each secret is reported under the
/// value's path, and with redaction off nothing happens.
impl Redaction {
    /// Cleans one free-text string stored under `path`.
    pub fn clean_text(&self, path: &str, text: &mut String, secrets: &mut Vec<FieldError>) {
        let Some(found) = self.scan(text.as_bytes()).and_then(|mut scan| scan.text(0, text)) else {
            return;
        };
        if self.mode == Mode::Reject {
            secrets.extend(found.kinds.iter().map(|kind| FieldError::secret(path, kind)));
        } else {
            *text = found.text;
        }
    }

    /// Cleans one msgpack value stored under `path`, which must be well formed (validated
    /// before): its strings are scanned like a trace's metadata, and the value under a
    /// secret-looking key is replaced whole. Map keys are not scanned.
    pub fn clean_value(&self, path: &str, value: &mut Vec<u8>, secrets: &mut Vec<FieldError>) {
        let Some(scan) = self.scan(value) else { return };
        let mut walk = LooseWalk {
            scan,
            reject: self.mode == Mode::Reject,
            reader: Reader::new(value),
            frames: Vec::new(),
            patches: Vec::new(),
            secrets,
            root: path,
        };
        if walk.run().is_err() {
            return;
        }
        let patches = std::mem::take(&mut walk.patches);
        if patches.is_empty() {
            return;
        }
        let mut out = Vec::with_capacity(value.len());
        let mut copied = 0;
        for (range, bytes) in patches {
            out.extend_from_slice(&value[copied..range.start]);
            out.extend_from_slice(&bytes);
            copied = range.end;
        }
        out.extend_from_slice(&value[copied..]);
        *value = out;
    }
}

/// An open container of a loose value, during [`LooseWalk`].
struct Frame {
    /// Tokens still to come: two per map entry.
    left: u64,
    map: bool,
    /// Where the value being read sits in this container: its key, or its index.
    child: String,
    next_index: usize,
}

/// One pass over a loose msgpack value, in input order (as [`Scan::text`] needs), without
/// recursion: a caller's nesting cannot overflow the stack.
struct LooseWalk<'r, 'v, 's> {
    scan: Scan<'r>,
    reject: bool,
    reader: Reader<'v>,
    frames: Vec<Frame>,
    /// Replacements by input range, in input order, never overlapping.
    patches: Vec<(Range<usize>, Vec<u8>)>,
    secrets: &'s mut Vec<FieldError>,
    root: &'s str,
}

impl LooseWalk<'_, '_, '_> {
    fn run(&mut self) -> Result<(), DecodeError> {
        let start = self.reader.position();
        let root = self.reader.read_token()?;
        self.value(start, root, false)?;
        let mut under_secret_key = false;
        while let Some(frame) = self.frames.last_mut() {
            if frame.left == 0 {
                self.frames.pop();
                continue;
            }
            let start = self.reader.position();
            let token = self.reader.read_token()?;
            frame.left -= 1;
            if frame.map && frame.left % 2 == 1 {
                frame.child = match token {
                    Token::Str(key) => String::from_utf8_lossy(key).into_owned(),
                    other => format!("<{} key>", other.kind()),
                };
                under_secret_key = matches!(token, Token::Str(key)
                    if std::str::from_utf8(key).is_ok_and(|k| self.scan.is_secret_key(k)));
                self.reader.skip_contents(&token)?;
                continue;
            }
            if !frame.map {
                frame.child = format!("[{}]", frame.next_index);
                frame.next_index += 1;
            }
            self.value(start, token, std::mem::take(&mut under_secret_key))?;
        }
        Ok(())
    }

    /// Handles a value whose first token, starting at `start`, was just read.
    fn value(&mut self, start: usize, token: Token<'_>, secret: bool) -> Result<(), DecodeError> {
        if secret {
            let nothing_to_hide = match token {
                Token::Nil => true,
                Token::Str(b) => b.is_empty() || b == REDACTED.as_bytes(),
                _ => false,
            };
            self.reader.skip_contents(&token)?;
            if !nothing_to_hide {
                let end = self.reader.position();
                self.redact_whole(start..end);
            }
            return Ok(());
        }
        match token {
            Token::Str(bytes) => {
                let end = self.reader.position();
                let at = end - bytes.len();
                let Ok(text) = std::str::from_utf8(bytes) else { return Ok(()) };
                if let Some(found) = self.scan.text(at, text) {
                    if self.reject {
                        let path = self.path();
                        self.secrets
                            .extend(found.kinds.iter().map(|k| FieldError::secret(&path, k)));
                    } else {
                        let mut encoded = Vec::with_capacity(found.text.len() + 5);
                        msgpack::write_str(&mut encoded, &found.text);
                        self.patches.push((start..end, encoded));
                    }
                }
            }
            Token::Array(n) | Token::Map(n) if n > 0 => {
                let map = matches!(token, Token::Map(_));
                let left = u64::from(n) << u32::from(map);
                self.frames.push(Frame { left, map, child: String::new(), next_index: 0 });
            }
            _ => {}
        }
        Ok(())
    }

    /// The value in `range` sits under a secret-looking key: replaced whole, or reported.
    fn redact_whole(&mut self, range: Range<usize>) {
        if self.reject {
            let path = self.path();
            self.secrets.push(FieldError::secret(path, KEY_NAME));
        } else {
            let mut encoded = Vec::with_capacity(REDACTED.len() + 1);
            msgpack::write_str(&mut encoded, REDACTED);
            self.patches.push((range, encoded));
        }
    }

    /// The path of the value being read: `context.db[2].password`.
    fn path(&self) -> String {
        let mut path = self.root.to_owned();
        for frame in &self.frames {
            if !frame.map {
                path.push_str(&frame.child);
            } else {
                path.push('.');
                path.push_str(&frame.child);
            }
        }
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 48 letters and digits, sliced to make fake secrets of the right shapes.
    const ALNUM: &str = "aB3dE5fG7hJ9kL2mN4pQ6rS8tU0vW1xY3zA5bC7dE9fG2hJ4";
    const LETTERS: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

    fn alnum(n: usize) -> String {
        ALNUM.repeat(n / ALNUM.len() + 1)[..n].to_owned()
    }

    fn redact_with(redaction: &Redaction, text: &str) -> Option<Redacted<'static>> {
        let mut scan = redaction.scan(text.as_bytes())?;
        scan.text(0, text).map(|found| Redacted {
            text: found.text,
            kinds: found.kinds.iter().map(|k| &*String::from(*k).leak()).collect(),
        })
    }

    /// `text` with its secrets replaced under the default policy.
    fn redact(text: &str) -> String {
        redact_with(&Redaction::default(), text).map_or_else(|| text.to_owned(), |r| r.text)
    }

    fn kinds(text: &str) -> Vec<&'static str> {
        redact_with(&Redaction::default(), text).map_or_else(Vec::new, |r| r.kinds)
    }

    /// An example secret of each built-in rule: (rule id, text, the text once redacted).
    fn examples() -> Vec<(&'static str, String, String)> {
        let pem_body = "MIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM9Oi";
        let jwt = format!(
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.{}.{}",
            "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ",
            "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
        );
        let same = |id: &'static str, secret: String, kind: &str| {
            let text = format!("key {secret} here");
            (id, text, format!("key [REDACTED:{kind}] here"))
        };
        vec![
            (
                "private-key",
                format!(
                    "k: -----BEGIN RSA PRIVATE KEY-----\n{pem_body}\n-----END RSA PRIVATE KEY----- ok"
                ),
                "k: [REDACTED:private_key] ok".into(),
            ),
            same("anthropic-api-key", format!("sk-ant-api03-{}AA", alnum(93)), "anthropic_api_key"),
            same("openai-api-key", format!("sk-proj-{}", alnum(120)), "openai_api_key"),
            same("aws-access-token", "AKIAIOSFODNN7EXAMPLE".into(), "aws_access_key"),
            same("github-pat", format!("ghp_{}", alnum(36)), "github_token"),
            same("github-oauth", format!("gho_{}", alnum(36)), "github_token"),
            same("github-app-token", format!("ghs_{}", alnum(36)), "github_token"),
            same("github-refresh-token", format!("ghr_{}", alnum(36)), "github_token"),
            same("github-fine-grained-pat", format!("github_pat_{}", alnum(82)), "github_token"),
            same("gitlab-pat", format!("glpat-{}", alnum(20)), "gitlab_token"),
            same("slack-bot-token", format!("xoxb-1234567890-9876543210-{}", alnum(24)), "slack_token"),
            same("slack-user-token", format!("xoxp-1234567890-98765-{}", alnum(32)), "slack_token"),
            same("slack-legacy-token", format!("xoxs-1234567890-{}", alnum(20)), "slack_token"),
            same("slack-app-token", format!("xapp-1-A0123-4567-{}", alnum(20)), "slack_token"),
            same(
                "slack-webhook-url",
                format!("https://hooks.slack.com/services/T0A1B2C3D/B0A1B2C3D/{}", alnum(24)),
                "slack_webhook",
            ),
            same("stripe-access-token", format!("sk_live_{}", alnum(24)), "stripe_key"),
            same("gcp-api-key", format!("AIza{}", alnum(35)), "google_api_key"),
            same("huggingface-access-token", format!("hf_{}", &LETTERS[..34]), "huggingface_token"),
            same("npm-access-token", format!("npm_{}", alnum(36)), "npm_token"),
            same("jwt", jwt, "jwt"),
            (
                "bearer-token",
                format!("Authorization: Bearer {}", alnum(40)),
                "Authorization: Bearer [REDACTED:bearer_token]".into(),
            ),
            (
                "url-credentials",
                "dsn postgres://admin:s3cr3t-Pa55@db.internal:5432/app".into(),
                "dsn postgres://admin:[REDACTED:url_password]@db.internal:5432/app".into(),
            ),
            (
                "credential-assignment",
                "export DB_PASSWORD=hunter22; next".into(),
                "export DB_PASSWORD=[REDACTED:credential]; next".into(),
            ),
        ]
    }

    #[test]
    fn every_rule_redacts_its_example() {
        let examples = examples();
        for (id, text, expected) in &examples {
            assert_eq!(redact(text), *expected, "rule {id}");
        }
        let ids: Vec<&str> = builtin().rules.iter().map(|rule| &*rule.id).collect();
        let covered: Vec<&str> = examples.iter().map(|(id, ..)| *id).collect();
        assert_eq!(covered, ids, "one example per rule, in table order");
    }

    #[test]
    fn secrets_are_found_inside_json_escaped_text_and_prose() {
        let key = format!("sk-proj-{}", alnum(80));
        let json = format!(r#"{{"config": {{"openai": "{key}"}}, "n": 1}}"#);
        assert_eq!(redact(&json), r#"{"config": {"openai": "[REDACTED:openai_api_key]"}, "n": 1}"#);
        // A PEM key inside a JSON string: its newlines are `\n` escapes.
        let pem = "-----BEGIN OPENSSH PRIVATE KEY-----\\nb3BlbnNzaC1rZXktdjEAAAAA\\n\
                   -----END OPENSSH PRIVATE KEY-----\\n";
        assert_eq!(
            redact(&format!(r#"{{"key": "{pem}"}}"#)),
            r#"{"key": "[REDACTED:private_key]\n"}"#
        );
        // Cut off before its END line: everything that looks like its body goes.
        assert_eq!(
            redact("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n(cut)"),
            "[REDACTED:private_key](cut)"
        );
        let prose =
            format!("Sure! I used {} and ghp_{} to deploy.", "AKIAIOSFODNN7EXAMPLE", alnum(36));
        assert_eq!(
            redact(&prose),
            "Sure! I used [REDACTED:aws_access_key] and [REDACTED:github_token] to deploy."
        );
        assert_eq!(kinds(&prose), ["aws_access_key", "github_token"]);
        let assigned = r#"{\"api_key\": \"a1b2c3d4e5f6\", \"password\": \"hunter22\"}"#;
        assert_eq!(
            redact(assigned),
            r#"{\"api_key\": \"[REDACTED:credential]\", \"password\": \"[REDACTED:credential]\"}"#
        );
    }

    #[test]
    fn look_alikes_are_left_alone() {
        let benign = [
            "use sk-learn for the baseline; a risk-free-rate-of-return-model applies",
            "sk-proj-management is the next milestone",
            "AKIA is not a key, nor is AKIAIOSFODNN7EXAMPL",
            "ghp_short and github_pat_tooshort",
            "He was the bearer of bad news-and-more-news-to-come.",
            "https://example.com:8080/path?q=1 and git@github.com:org/repo.git",
            "max_tokens: 4096, total_tokens: 1234567, token_usage: high",
            "the secret is out; password reset requested",
            "xoxo-hugs-and-kisses, hf_hub_download(repo_id), npm_install",
            "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END PUBLIC KEY-----",
            "550e8400-e29b-41d4-a716-446655440000 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "password = get_password(user_2)",
            "eyJhbGciOiJIUzI1NiJ9 alone is a header, not a token",
        ];
        for text in benign {
            assert_eq!(kinds(text), Vec::<&str>::new(), "{text}");
        }
    }

    #[test]
    fn redacting_twice_changes_nothing() {
        for (id, text, _) in examples() {
            let once = redact(&text);
            assert_eq!(kinds(&once), Vec::<&str>::new(), "rule {id}: {once}");
        }
    }

    #[test]
    fn overlapping_matches_merge_and_the_earlier_rule_names_them() {
        // The Anthropic rule comes before the OpenAI one, which also matches `sk-ant-...`.
        let key = format!("sk-ant-api03-{}", alnum(60));
        assert_eq!(kinds(&key), ["anthropic_api_key"]);
        // `Bearer <jwt>`: the JWT rule comes first.
        let header =
            format!("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.{}", alnum(20));
        assert_eq!(redact(&header), "Bearer [REDACTED:jwt]");
        // Adjacent secrets become one replacement.
        let two = format!("ghp_{},AKIAIOSFODNN7EXAMPLE", alnum(36));
        assert_eq!(redact(&two), "[REDACTED:github_token],[REDACTED:aws_access_key]");
    }

    #[test]
    fn replacements_never_split_a_character() {
        let text = format!("mot de passe: postgres://é:pässwörd€@hôte/db — clé ghp_{}é", alnum(36));
        let redacted = redact(&text);
        assert_eq!(
            redacted,
            "mot de passe: postgres://é:[REDACTED:url_password]@hôte/db — clé [REDACTED:github_token]é"
        );
    }

    #[test]
    fn keywords_that_straddle_a_string_edge_do_not_count() {
        let input = "xsk-\u{a0}";
        let redaction = Redaction::default();
        let mut scan = redaction.scan(input.as_bytes()).unwrap();
        assert!(scan.hits.len() == 1);
        // Only the text after the keyword's start is this string.
        assert_eq!(scan.text(2, &input[2..]), None);
        assert_eq!(scan.next, 1, "the keyword was passed over");
    }

    #[test]
    fn key_names_match_as_last_words_in_any_spelling() {
        let keys = Redaction::default().keys;
        let secret = [
            "password",
            "PASSWORD",
            "db_password",
            "passwd",
            "secret",
            "client_secret",
            "clientSecret",
            "token",
            "access_token",
            "accessToken",
            "refresh-token",
            "GITHUB_TOKEN",
            "api_key",
            "apikey",
            "API-Key",
            "x-api-key",
            "X-API-KEY",
            "openaiApiKey",
            "api.key",
            "Authorization",
            "proxy-authorization",
            "cookie",
            "Set-Cookie",
            "cookies",
            "private_key",
            "privateKey",
            "credential",
            "aws credentials",
            "passphrase",
        ];
        for key in secret {
            assert!(keys.matches(key), "{key} is a secret key name");
        }
        let plain = [
            "",
            "tokens",
            "max_tokens",
            "input_tokens",
            "token_usage",
            "tokenizer",
            "mytoken",
            "secretary",
            "password_hint",
            "api_keys_count",
            "keyword",
            "cookie_consent_given",
            "credentialed",
            "gen_ai.usage.input_tokens",
            "XAPIKey",
        ];
        for key in plain {
            assert!(!keys.matches(key), "{key} is not a secret key name");
        }
    }

    #[test]
    fn extra_key_names_and_patterns_are_added_to_the_built_in_ones() {
        let redaction = Redaction::new(
            Mode::Redact,
            &["session-id".into(), "SSN".into()],
            &[
                ("employee_id".into(), r"\bEMP-[0-9]{6}\b".into()),
                ("ticket".into(), r"ticket #(?P<secret>[0-9]+)".into()),
            ],
        )
        .unwrap();
        assert!(redaction.keys.matches("user_session_id"));
        assert!(redaction.keys.matches("userSessionId"));
        assert!(redaction.keys.matches("ssn"));
        assert!(redaction.keys.matches("password"), "built-in names stay");
        let other = Redaction::new(Mode::Redact, &["Пароль".into()], &[]).unwrap();
        assert!(
            other.keys.matches("Пароль") && !other.keys.matches("пароль"),
            "ASCII folding only"
        );
        let text = format!("EMP-123456 filed ticket #42 with ghp_{}", alnum(36));
        let found = redact_with(&redaction, &text).unwrap();
        assert_eq!(
            found.text,
            "[REDACTED:employee_id] filed ticket #[REDACTED:ticket] with [REDACTED:github_token]"
        );
        assert_eq!(found.kinds, ["employee_id", "ticket", "github_token"]);
        // Custom patterns are Unicode-aware.
        let unicode =
            Redaction::new(Mode::Redact, &[], &[("name".into(), r"\w+ë".into())]).unwrap();
        assert_eq!(redact_with(&unicode, "hi Zoë!").unwrap().text, "hi [REDACTED:name]!");
    }

    #[test]
    fn bad_options_are_refused_with_the_option_named() {
        let refused = |keys: &[&str], patterns: &[(&str, &str)]| {
            let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
            let patterns: Vec<(String, String)> =
                patterns.iter().map(|(k, p)| ((*k).to_owned(), (*p).to_owned())).collect();
            Redaction::new(Mode::Redact, &keys, &patterns).unwrap_err()
        };
        let e = refused(&["ok", "-"], &[]);
        assert_eq!(
            (e.path.as_str(), e.message.as_str()),
            ("redaction_keys[1]", "must be a key name with a letter or digit, got \"-\"")
        );
        let e = refused(&[], &[("x", "(unclosed")]);
        assert_eq!(e.path, "redaction_patterns.x");
        assert!(e.message.starts_with("invalid regex: "), "{}", e.message);
        let e = refused(&[], &[("x", "a*")]);
        assert_eq!(
            (e.path.as_str(), e.message.as_str()),
            ("redaction_patterns.x", "must not match the empty string")
        );
        let e = refused(&[], &[("has space", "a")]);
        assert_eq!(e.path, "redaction_patterns");
        assert!(e.message.contains("\"has space\""), "{}", e.message);
        assert!(refused(&[], &[(&"k".repeat(33), "a")]).message.contains("1..32"));
        assert_eq!(
            Mode::parse("loud").unwrap_err().to_string(),
            "redaction: expected 'redact', 'reject' or 'off', got \"loud\""
        );
    }

    #[test]
    fn the_keywords_take_two_searches() {
        // Each search costs ~0.7 µs per 5 KB trace; see the table's header.
        assert_eq!(builtin().keywords.len(), 2);
    }

    #[test]
    fn off_finds_nothing() {
        let off = Redaction::new(Mode::Off, &[], &[]).unwrap();
        assert!(off.scan(b"AKIAIOSFODNN7EXAMPLE").is_none());
    }

    #[test]
    fn a_malformed_table_is_refused_with_its_line() {
        let parse = |table: &str| Rules::parse(table).err().unwrap_or_default();
        assert_eq!(parse("# c\n\nonly-two columns"), "redact_rules.txt line 3: expected 5 columns");
        assert!(parse("a k w x re").contains("bad digits"));
        assert!(parse("a k w 0 (").contains("bad regex"));
        assert!(parse("a k w 0 x\na k w 0 y").contains("duplicate id a"));
        let many: String = (0..65).map(|i| format!("r{i} k w 0 x\n")).collect();
        assert!(parse(&many).contains("more than 64 rules"));
        assert!(parse("a k Sk- 0 x").contains("keyword \"Sk-\" must be lowercase"));
        assert!(parse("a k sk-,sk-ant 0 x").contains("keyword \"sk-\" starts keyword \"sk-ant\""));
    }

    /// `{"db": {"url": .., "password": ..}, "notes": [.., ..]}`, hand-encoded.
    fn loose_value(url: &str, password: &str, notes: [&str; 2]) -> Vec<u8> {
        let mut out = vec![0x82];
        msgpack::write_str(&mut out, "db");
        out.push(0x82);
        for (key, value) in [("url", url), ("password", password)] {
            msgpack::write_str(&mut out, key);
            msgpack::write_str(&mut out, value);
        }
        msgpack::write_str(&mut out, "notes");
        msgpack::write_array_header(&mut out, 2);
        for note in notes {
            msgpack::write_str(&mut out, note);
        }
        out
    }

    #[test]
    fn a_loose_value_is_redacted_at_any_depth_and_under_secret_keys() {
        let key = format!("sk-proj-{}", alnum(40));
        let mut value =
            loose_value("postgres://app:hunter2@db/x", "pw1", ["fine", &format!("use {key}")]);
        let mut secrets = Vec::new();
        Redaction::default().clean_value("context", &mut value, &mut secrets);
        assert!(secrets.is_empty());
        let expected = loose_value(
            "postgres://app:[REDACTED:url_password]@db/x",
            REDACTED,
            ["fine", "use [REDACTED:openai_api_key]"],
        );
        assert_eq!(value, expected);
    }

    #[test]
    fn rejecting_a_loose_value_names_each_secret_by_path_and_changes_nothing() {
        let key = format!("sk-proj-{}", alnum(40));
        let original = loose_value("postgres://app:hunter2@db/x", "pw1", ["fine", &key]);
        let mut value = original.clone();
        let mut secrets = Vec::new();
        let reject = Redaction::new(Mode::Reject, &[], &[]).unwrap();
        reject.clean_value("context", &mut value, &mut secrets);
        assert_eq!(value, original);
        let found: Vec<(String, Option<String>)> =
            secrets.into_iter().map(|e| (e.path, e.kind)).collect();
        assert_eq!(
            found,
            [
                ("context.db.url".to_owned(), Some("url_password".to_owned())),
                ("context.db.password".to_owned(), Some(KEY_NAME.to_owned())),
                ("context.notes[1]".to_owned(), Some("openai_api_key".to_owned())),
            ]
        );
    }

    #[test]
    fn a_clean_or_unscanned_loose_value_is_left_alone() {
        let clean = loose_value("https://example.com/a", "", ["fine", "[REDACTED]"]);
        for mode in [Mode::Redact, Mode::Reject, Mode::Off] {
            let mut value = clean.clone();
            let mut secrets = Vec::new();
            Redaction::new(mode, &[], &[]).unwrap().clean_value("m", &mut value, &mut secrets);
            assert_eq!((value, secrets), (clean.clone(), Vec::new()));
        }
        let secret = loose_value("postgres://app:hunter2@db/x", "pw1", ["a", "b"]);
        let mut value = secret.clone();
        let mut secrets = Vec::new();
        let off = Redaction::new(Mode::Off, &[], &[]).unwrap();
        off.clean_value("m", &mut value, &mut secrets);
        assert_eq!((value, secrets), (secret, Vec::new()));
    }

    #[test]
    fn deep_loose_values_do_not_overflow_the_stack() {
        let depth = 200_000;
        let mut value = vec![0x91; depth];
        msgpack::write_str(&mut value, "postgres://app:hunter2@db/x");
        let mut secrets = Vec::new();
        Redaction::default().clean_value("context", &mut value, &mut secrets);
        assert_eq!(&value[..depth], &vec![0x91; depth][..]);
        assert!(value.ends_with(b"[REDACTED:url_password]@db/x"));
    }

    #[test]
    fn loose_text_is_redacted_or_reported() {
        let mut text = "token ghp_".to_owned() + &alnum(36);
        let mut secrets = Vec::new();
        Redaction::new(Mode::Reject, &[], &[]).unwrap().clean_text(
            "reason",
            &mut text,
            &mut secrets,
        );
        assert_eq!(secrets, [FieldError::secret("reason", "github_token")]);
        Redaction::default().clean_text("reason", &mut text, &mut secrets);
        assert_eq!(text, "token [REDACTED:github_token]");
    }

    /// `cargo test --release -- --ignored --nocapture keyword_scan_timing`
    #[test]
    #[ignore = "timing; run in release mode"]
    fn keyword_scan_timing() {
        let text: String = "the customer asked about the refund for order 1234; ".repeat(110);
        let rounds = 100_000;
        let redaction = Redaction::default();
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            let scan = redaction.scan(std::hint::black_box(text.as_bytes()));
            std::hint::black_box(scan.map(|s| s.hits.len()));
        }
        let us = start.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
        println!("keyword pass over {} bytes of clean text: {us:.2} µs", text.len());
    }
}
