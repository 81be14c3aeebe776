//! A small MessagePack reader over `&[u8]` that never panics, plus the few writers the
//! canonicalizer needs.
//!
//! The reader yields one token at a time (a container yields only its header), borrowing
//! payloads from the input, so a caller can validate a value and then copy its raw byte
//! range unchanged. Every read is bounds-checked; a declared length the remaining input
//! cannot hold is an error, never an allocation or an out-of-bounds read.

use std::fmt;

use DecodeErrorKind::{ReservedByte, TooLong, TrailingBytes, Truncated};

/// The extension type msgpack reserves for timestamps.
pub const TIMESTAMP_EXT: i8 = -1;

/// One msgpack token. Integers are split by sign so every encodable value fits:
/// `UInt` for >= 0 (whatever width the encoder chose), `NegInt` for < 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Token<'a> {
    Nil,
    Bool(bool),
    UInt(u64),
    NegInt(i64),
    /// float32 values are widened (exactly) to f64.
    Float(f64),
    /// The raw bytes; UTF-8 is for the caller to check.
    Str(&'a [u8]),
    Bin(&'a [u8]),
    /// Number of elements that follow.
    Array(u32),
    /// Number of key/value pairs that follow.
    Map(u32),
    Ext(i8, &'a [u8]),
}

impl Token<'_> {
    /// The JSON-ish name of this token's type, for error messages ("got int").
    pub fn kind(&self) -> &'static str {
        match self {
            Token::Nil => "nil",
            Token::Bool(_) => "bool",
            Token::UInt(_) | Token::NegInt(_) => "int",
            Token::Float(_) => "float",
            Token::Str(_) => "string",
            Token::Bin(_) => "bytes",
            Token::Array(_) => "array",
            Token::Map(_) => "map",
            Token::Ext(TIMESTAMP_EXT, _) => "timestamp",
            Token::Ext(..) => "extension",
        }
    }
}

/// Input that is not well-formed msgpack. Kept to two words so that a
/// `Result<Token, DecodeError>` is no larger than a `Token` (this is the hot path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset of the token that could not be read.
    pub offset: usize,
    pub kind: DecodeErrorKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeErrorKind {
    Truncated,
    ReservedByte,
    /// A container declares more items than the remaining bytes could hold.
    TooLong,
    TrailingBytes,
}

impl DecodeErrorKind {
    pub fn reason(self) -> &'static str {
        match self {
            DecodeErrorKind::Truncated => "unexpected end of input",
            DecodeErrorKind::ReservedByte => "reserved byte 0xc1",
            DecodeErrorKind::TooLong => "container length exceeds the remaining input",
            DecodeErrorKind::TrailingBytes => "trailing bytes after the value",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed msgpack at byte {}: {}", self.offset, self.kind.reason())
    }
}

impl std::error::Error for DecodeError {}

fn truncated(start: usize) -> DecodeError {
    DecodeError { offset: start, kind: Truncated }
}

/// A cursor over msgpack bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Offset of the next unread byte.
    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn is_at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// The raw bytes read since `start` (an earlier [`position`](Self::position)).
    #[inline]
    pub fn since(&self, start: usize) -> &'a [u8] {
        self.buf.get(start..self.pos).unwrap_or_default()
    }

    #[inline]
    fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    /// Fails unless every byte has been read.
    pub fn expect_end(&self) -> Result<(), DecodeError> {
        if self.is_at_end() {
            Ok(())
        } else {
            Err(DecodeError { offset: self.pos, kind: TrailingBytes })
        }
    }

    #[inline]
    fn fixed<const N: usize>(&mut self, start: usize) -> Result<[u8; N], DecodeError> {
        let (head, _) = self.rest().split_first_chunk::<N>().ok_or(truncated(start))?;
        self.pos += N;
        Ok(*head)
    }

    #[inline]
    fn bytes(&mut self, len: usize, start: usize) -> Result<&'a [u8], DecodeError> {
        let bytes = self.rest().get(..len).ok_or(truncated(start))?;
        self.pos += len;
        Ok(bytes)
    }

    fn len8(&mut self, start: usize) -> Result<usize, DecodeError> {
        Ok(usize::from(self.fixed::<1>(start)?[0]))
    }

    fn len16(&mut self, start: usize) -> Result<usize, DecodeError> {
        Ok(usize::from(u16::from_be_bytes(self.fixed(start)?)))
    }

    fn len32(&mut self, start: usize) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.fixed(start)?))
    }

    fn ext(&mut self, len: usize, start: usize) -> Result<Token<'a>, DecodeError> {
        let [ty] = self.fixed::<1>(start)?;
        Ok(Token::Ext(ty as i8, self.bytes(len, start)?))
    }

    /// A container header, refused when even one byte per item would overrun the input.
    #[inline]
    fn container(&mut self, items: u32, map: bool, start: usize) -> Result<Token<'a>, DecodeError> {
        let needed = u64::from(items) << u32::from(map);
        if needed > self.rest().len() as u64 {
            return Err(DecodeError { offset: start, kind: TooLong });
        }
        Ok(if map { Token::Map(items) } else { Token::Array(items) })
    }

    /// Reads the next token.
    #[inline(always)]
    pub fn read_token(&mut self) -> Result<Token<'a>, DecodeError> {
        let start = self.pos;
        let [marker] = self.fixed::<1>(start)?;
        Ok(match marker {
            0x00..=0x7f => Token::UInt(u64::from(marker)),
            0x80..=0x8f => self.container(u32::from(marker & 0x0f), true, start)?,
            0x90..=0x9f => self.container(u32::from(marker & 0x0f), false, start)?,
            0xa0..=0xbf => Token::Str(self.bytes(usize::from(marker & 0x1f), start)?),
            0xc0 => Token::Nil,
            0xc1 => return Err(DecodeError { offset: start, kind: ReservedByte }),
            0xc2 => Token::Bool(false),
            0xc3 => Token::Bool(true),
            0xc4 => {
                let len = self.len8(start)?;
                Token::Bin(self.bytes(len, start)?)
            }
            0xc5 => {
                let len = self.len16(start)?;
                Token::Bin(self.bytes(len, start)?)
            }
            0xc6 => {
                let len = self.len32(start)? as usize;
                Token::Bin(self.bytes(len, start)?)
            }
            0xc7 => {
                let len = self.len8(start)?;
                self.ext(len, start)?
            }
            0xc8 => {
                let len = self.len16(start)?;
                self.ext(len, start)?
            }
            0xc9 => {
                let len = self.len32(start)? as usize;
                self.ext(len, start)?
            }
            0xca => Token::Float(f64::from(f32::from_be_bytes(self.fixed(start)?))),
            0xcb => Token::Float(f64::from_be_bytes(self.fixed(start)?)),
            0xcc => Token::UInt(u64::from(u8::from_be_bytes(self.fixed(start)?))),
            0xcd => Token::UInt(u64::from(u16::from_be_bytes(self.fixed(start)?))),
            0xce => Token::UInt(u64::from(u32::from_be_bytes(self.fixed(start)?))),
            0xcf => Token::UInt(u64::from_be_bytes(self.fixed(start)?)),
            0xd0 => signed(i64::from(i8::from_be_bytes(self.fixed(start)?))),
            0xd1 => signed(i64::from(i16::from_be_bytes(self.fixed(start)?))),
            0xd2 => signed(i64::from(i32::from_be_bytes(self.fixed(start)?))),
            0xd3 => signed(i64::from_be_bytes(self.fixed(start)?)),
            0xd4 => self.ext(1, start)?,
            0xd5 => self.ext(2, start)?,
            0xd6 => self.ext(4, start)?,
            0xd7 => self.ext(8, start)?,
            0xd8 => self.ext(16, start)?,
            0xd9 => {
                let len = self.len8(start)?;
                Token::Str(self.bytes(len, start)?)
            }
            0xda => {
                let len = self.len16(start)?;
                Token::Str(self.bytes(len, start)?)
            }
            0xdb => {
                let len = self.len32(start)? as usize;
                Token::Str(self.bytes(len, start)?)
            }
            0xdc => {
                let items = self.len16(start)? as u32;
                self.container(items, false, start)?
            }
            0xdd => {
                let items = self.len32(start)?;
                self.container(items, false, start)?
            }
            0xde => {
                let items = self.len16(start)? as u32;
                self.container(items, true, start)?
            }
            0xdf => {
                let items = self.len32(start)?;
                self.container(items, true, start)?
            }
            0xe0..=0xff => Token::NegInt(i64::from(marker as i8)),
        })
    }

    /// Skips what follows an already-read token: the elements of an array or the entries
    /// of a map, however deeply nested (iteratively, so depth cannot overflow the stack).
    pub fn skip_contents(&mut self, token: &Token<'_>) -> Result<(), DecodeError> {
        let mut pending = items_of(token);
        while pending > 0 {
            let start = self.pos;
            pending = pending - 1 + items_of(&self.read_token()?);
            // Each pending value needs at least one byte: this also keeps `pending` small.
            if pending > self.rest().len() as u64 {
                return Err(DecodeError { offset: start, kind: TooLong });
            }
        }
        Ok(())
    }

    /// Skips one whole value.
    pub fn skip_value(&mut self) -> Result<(), DecodeError> {
        let token = self.read_token()?;
        self.skip_contents(&token)
    }
}

/// A signed encoding of a value that may well be non-negative.
fn signed(value: i64) -> Token<'static> {
    if value >= 0 {
        Token::UInt(value as u64)
    } else {
        Token::NegInt(value)
    }
}

/// How many values follow a token before its value is complete.
fn items_of(token: &Token<'_>) -> u64 {
    match *token {
        Token::Array(n) => u64::from(n),
        Token::Map(n) => 2 * u64::from(n),
        _ => 0,
    }
}

/// Appends a string with the shortest header.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    // Strings we write are at most as long as strings we read, which msgpack caps at u32.
    let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
    match len {
        0..=31 => out.push(0xa0 | len as u8),
        32..=0xff => out.extend_from_slice(&[0xd9, len as u8]),
        0x100..=0xffff => {
            out.push(0xda);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0xdb);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    out.extend_from_slice(text.as_bytes());
}

/// Appends an array header with the shortest form.
pub fn write_array_header(out: &mut Vec<u8>, items: u32) {
    match items {
        0..=15 => out.push(0x90 | items as u8),
        16..=0xffff => {
            out.push(0xdc);
            out.extend_from_slice(&(items as u16).to_be_bytes());
        }
        _ => {
            out.push(0xdd);
            out.extend_from_slice(&items.to_be_bytes());
        }
    }
}

/// Appends a non-negative integer with the shortest form.
pub fn write_nil(out: &mut Vec<u8>) {
    out.push(0xc0);
}

pub fn write_bool(out: &mut Vec<u8>, value: bool) {
    out.push(if value { 0xc3 } else { 0xc2 });
}

/// A float64, or nil when absent.
pub fn write_optional_f64(out: &mut Vec<u8>, value: Option<f64>) {
    match value {
        Some(value) => write_f64(out, value),
        None => write_nil(out),
    }
}

pub fn write_uint(out: &mut Vec<u8>, value: u64) {
    match value {
        0..=0x7f => out.push(value as u8),
        0x80..=0xff => out.extend_from_slice(&[0xcc, value as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend_from_slice(&(value as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xce);
            out.extend_from_slice(&(value as u32).to_be_bytes());
        }
        _ => {
            out.push(0xcf);
            out.extend_from_slice(&value.to_be_bytes());
        }
    }
}

/// Appends a float64 (always the 9-byte form, so readers see one float type).
pub fn write_f64(out: &mut Vec<u8>, value: f64) {
    out.push(0xcb);
    out.extend_from_slice(&value.to_be_bytes());
}

/// A map header reserved before the number of entries is known (records drop nil
/// fields and append defaults). Finish it with [`finish_map`].
#[derive(Debug)]
#[must_use = "a reserved map header must be finished"]
pub struct PendingMap {
    at: usize,
    width: usize,
}

/// The shortest map header for `entries`, and its length.
fn map_header(entries: usize) -> ([u8; 5], usize) {
    let n = u32::try_from(entries).unwrap_or(u32::MAX);
    match n {
        0..=15 => ([0x80 | n as u8, 0, 0, 0, 0], 1),
        16..=0xffff => {
            let [a, b] = (n as u16).to_be_bytes();
            ([0xde, a, b, 0, 0], 3)
        }
        _ => {
            let [a, b, c, d] = n.to_be_bytes();
            ([0xdf, a, b, c, d], 5)
        }
    }
}

/// Reserves room for a map header able to count up to `max_entries` entries.
pub fn begin_map(out: &mut Vec<u8>, max_entries: usize) -> PendingMap {
    let at = out.len();
    let width = map_header(max_entries).1;
    out.resize(at + width, 0);
    PendingMap { at, width }
}

/// Writes the header reserved by [`begin_map`] now that the count is known. Everything
/// written since `begin_map` shifts if the shortest header has another width (only when
/// the count crossed a size class, e.g. 16 possible entries but 14 written).
pub fn finish_map(out: &mut Vec<u8>, map: PendingMap, entries: usize) {
    let (header, len) = map_header(entries);
    let end = (map.at + map.width).min(out.len());
    let at = map.at.min(end);
    if len == end - at {
        out[at..end].copy_from_slice(&header[..len]);
    } else {
        out.splice(at..end, header[..len].iter().copied());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(bytes: &[u8]) -> Result<Vec<Token<'_>>, DecodeError> {
        let mut r = Reader::new(bytes);
        let mut all = Vec::new();
        while !r.is_at_end() {
            all.push(r.read_token()?);
        }
        Ok(all)
    }

    fn one(bytes: &[u8]) -> Token<'_> {
        let mut r = Reader::new(bytes);
        let token = r.read_token().expect("valid token");
        assert!(r.is_at_end(), "{bytes:02x?} left bytes unread");
        token
    }

    #[test]
    fn reads_every_scalar_form() {
        assert_eq!(one(&[0xc0]), Token::Nil);
        assert_eq!(one(&[0xc2]), Token::Bool(false));
        assert_eq!(one(&[0xc3]), Token::Bool(true));
        assert_eq!(one(&[0x7f]), Token::UInt(127));
        assert_eq!(one(&[0xe0]), Token::NegInt(-32));
        assert_eq!(one(&[0xff]), Token::NegInt(-1));
        assert_eq!(one(&[0xcc, 0xff]), Token::UInt(255));
        assert_eq!(one(&[0xcd, 1, 0]), Token::UInt(256));
        assert_eq!(one(&[0xce, 0, 1, 0, 0]), Token::UInt(65_536));
        assert_eq!(
            one(&[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            Token::UInt(u64::MAX)
        );
        assert_eq!(one(&[0xd0, 0x80]), Token::NegInt(-128));
        assert_eq!(one(&[0xd0, 0x05]), Token::UInt(5));
        assert_eq!(one(&[0xd1, 0xff, 0x00]), Token::NegInt(-256));
        assert_eq!(one(&[0xd2, 0x80, 0, 0, 0]), Token::NegInt(i64::from(i32::MIN)));
        assert_eq!(one(&[0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0]), Token::NegInt(i64::MIN));
        assert_eq!(one(&[0xca, 0x3f, 0xc0, 0, 0]), Token::Float(1.5));
        assert_eq!(one(&[0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]), Token::Float(1.5));
        assert_eq!(one(&[0xa2, b'h', b'i']), Token::Str(b"hi"));
        assert_eq!(one(&[0xd9, 1, b'x']), Token::Str(b"x"));
        assert_eq!(one(&[0xda, 0, 1, b'x']), Token::Str(b"x"));
        assert_eq!(one(&[0xdb, 0, 0, 0, 1, b'x']), Token::Str(b"x"));
        assert_eq!(one(&[0xc4, 1, 7]), Token::Bin(&[7]));
        assert_eq!(one(&[0xc5, 0, 1, 7]), Token::Bin(&[7]));
        assert_eq!(one(&[0xc6, 0, 0, 0, 1, 7]), Token::Bin(&[7]));
        assert_eq!(one(&[0xd4, 5, 1]), Token::Ext(5, &[1]));
        assert_eq!(one(&[0xd5, 5, 1, 2]), Token::Ext(5, &[1, 2]));
        assert_eq!(one(&[0xd6, 0xff, 1, 2, 3, 4]), Token::Ext(-1, &[1, 2, 3, 4]));
        assert_eq!(
            one(&[0xd7, 0xff, 0, 0, 0, 0, 0, 0, 0, 1]),
            Token::Ext(-1, &[0, 0, 0, 0, 0, 0, 0, 1])
        );
        assert_eq!(
            one(&[0xd8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Token::Ext(1, &[0; 16])
        );
        assert_eq!(one(&[0xc7, 1, 3, 9]), Token::Ext(3, &[9]));
        assert_eq!(one(&[0xc8, 0, 1, 3, 9]), Token::Ext(3, &[9]));
        assert_eq!(one(&[0xc9, 0, 0, 0, 1, 3, 9]), Token::Ext(3, &[9]));
    }

    #[test]
    fn reads_container_headers_without_their_contents() {
        assert_eq!(
            tokens(&[0x92, 0x01, 0xc0]),
            Ok(vec![Token::Array(2), Token::UInt(1), Token::Nil])
        );
        assert_eq!(tokens(&[0x81, 0xa1, b'k', 0x01]).map(|t| t[0]), Ok(Token::Map(1)));
        assert_eq!(tokens(&[0xdc, 0, 1, 0xc0]).map(|t| t[0]), Ok(Token::Array(1)));
        assert_eq!(tokens(&[0xdd, 0, 0, 0, 1, 0xc0]).map(|t| t[0]), Ok(Token::Array(1)));
        assert_eq!(tokens(&[0xde, 0, 1, 0xc0, 0xc0]).map(|t| t[0]), Ok(Token::Map(1)));
        assert_eq!(tokens(&[0xdf, 0, 0, 0, 1, 0xc0, 0xc0]).map(|t| t[0]), Ok(Token::Map(1)));
    }

    #[test]
    fn rejects_truncation_reserved_byte_and_impossible_lengths() {
        let err = |bytes: &[u8]| Reader::new(bytes).read_token().unwrap_err();
        assert_eq!(err(&[]), DecodeError { offset: 0, kind: Truncated });
        assert_eq!(err(&[0xc1]).kind, ReservedByte);
        assert_eq!(err(&[0xa3, b'a']).kind, Truncated);
        assert_eq!(err(&[0xdb, 0xff, 0xff, 0xff, 0xff, b'a']).kind, Truncated);
        assert_eq!(err(&[0xc9, 0xff, 0xff, 0xff, 0xff, 1]).kind, Truncated);
        assert_eq!(err(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0]).kind, TooLong);
        assert_eq!(err(&[0xdf, 0, 0, 0, 1, 0xc0]).kind, TooLong);
        assert_eq!(err(&[0x92, 0xc0]).kind, TooLong);
        let mut r = Reader::new(&[0xc0, 0xcd, 1]);
        assert_eq!(r.read_token(), Ok(Token::Nil));
        let e = r.read_token().unwrap_err();
        assert_eq!(e, DecodeError { offset: 1, kind: Truncated });
        assert_eq!(e.to_string(), "malformed msgpack at byte 1: unexpected end of input");
        let mut r = Reader::new(&[0xc0, 0xc0]);
        r.skip_value().unwrap();
        assert_eq!(r.expect_end(), Err(DecodeError { offset: 1, kind: TrailingBytes }));
        r.skip_value().unwrap();
        assert_eq!(r.expect_end(), Ok(()));
        assert_eq!(
            std::mem::size_of::<Result<Token<'_>, DecodeError>>(),
            std::mem::size_of::<Token<'_>>()
        );
    }

    #[test]
    fn every_prefix_of_every_form_fails_cleanly() {
        let forms: &[&[u8]] = &[
            &[0xcf, 1, 2, 3, 4, 5, 6, 7, 8],
            &[0xcb, 1, 2, 3, 4, 5, 6, 7, 8],
            &[0xdb, 0, 0, 0, 2, b'a', b'b'],
            &[0xc9, 0, 0, 0, 1, 3, 9],
            &[0xd8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[0xdf, 0, 0, 0, 1, 0xc0, 0xc0],
        ];
        for form in forms {
            for cut in 0..form.len() {
                let mut r = Reader::new(&form[..cut]);
                assert!(r.skip_value().is_err(), "{:02x?}", &form[..cut]);
            }
        }
    }

    #[test]
    fn skips_nested_values_and_reports_overruns() {
        // [ {"a": [1, 2]}, "x" ] then a trailing nil
        let bytes = [0x92, 0x81, 0xa1, b'a', 0x92, 0x01, 0x02, 0xa1, b'x', 0xc0];
        let mut r = Reader::new(&bytes);
        r.skip_value().unwrap();
        assert_eq!(r.position(), 9);
        assert_eq!(r.since(7), &[0xa1, b'x']);
        // Nested arrays each claiming as many items as bytes remain.
        let mut nested = vec![0xdc, 0x00, 0x05, 0x9f, 0x9f, 0x9f];
        nested.extend([0xc0; 3]);
        assert_eq!(Reader::new(&nested).skip_value().unwrap_err().kind, TooLong);
        // Deep nesting does not recurse.
        let mut deep = vec![0x91; 1_000_000];
        deep.push(0xc0);
        let mut r = Reader::new(&deep);
        r.skip_value().unwrap();
        assert!(r.is_at_end());
    }

    #[test]
    fn writers_use_the_shortest_forms() {
        let mut out = Vec::new();
        write_str(&mut out, "abc");
        assert_eq!(out, [0xa3, b'a', b'b', b'c']);
        for (len, header) in [(31, vec![0xbf]), (32, vec![0xd9, 32]), (256, vec![0xda, 1, 0])] {
            let mut out = Vec::new();
            write_str(&mut out, &"x".repeat(len));
            assert_eq!(out[..header.len()], header[..]);
            assert_eq!(out.len(), header.len() + len);
        }
        let mut out = Vec::new();
        write_str(&mut out, &"x".repeat(65_536));
        assert_eq!(out[..5], [0xdb, 0, 1, 0, 0]);
        for (value, bytes) in [
            (0u64, vec![0x00]),
            (127, vec![0x7f]),
            (128, vec![0xcc, 0x80]),
            (65_535, vec![0xcd, 0xff, 0xff]),
            (65_536, vec![0xce, 0, 1, 0, 0]),
            (1 << 32, vec![0xcf, 0, 0, 0, 1, 0, 0, 0, 0]),
        ] {
            let mut out = Vec::new();
            write_uint(&mut out, value);
            assert_eq!(out, bytes);
            assert_eq!(one(&out), Token::UInt(value));
        }
        for (items, bytes) in
            [(3, vec![0x93]), (16, vec![0xdc, 0, 16]), (1 << 16, vec![0xdd, 0, 1, 0, 0])]
        {
            let mut out = Vec::new();
            write_array_header(&mut out, items);
            assert_eq!(out, bytes);
        }
        let mut out = Vec::new();
        write_f64(&mut out, 0.25);
        assert_eq!(one(&out), Token::Float(0.25));
    }

    #[test]
    fn pending_maps_take_the_shortest_header_for_the_final_count() {
        let mut out = vec![0xee];
        let map = begin_map(&mut out, 3);
        out.extend([0xa1, b'k', 0x01]);
        finish_map(&mut out, map, 1);
        assert_eq!(out, [0xee, 0x81, 0xa1, b'k', 0x01]);

        // Reserved for 20 (map16) but only 2 written: the body shifts left.
        let mut out = vec![0xee];
        let map = begin_map(&mut out, 20);
        out.extend([0x01, 0x02, 0x03, 0x04]);
        finish_map(&mut out, map, 2);
        assert_eq!(out, [0xee, 0x82, 0x01, 0x02, 0x03, 0x04]);

        // Reserved for 15 (fixmap) but 16 written: the body shifts right.
        let mut out = Vec::new();
        let map = begin_map(&mut out, 15);
        out.push(0x01);
        finish_map(&mut out, map, 16);
        assert_eq!(out, [0xde, 0, 16, 0x01]);
    }
}
