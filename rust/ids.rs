//! Trace, span and event ids: minting, parsing and hex formatting.
//!
//! Trace ids are 128 bits laid out like UUIDv7: a 48-bit big-endian Unix millisecond
//! timestamp, then random bits (with the UUID version and variant nibbles set), so ids
//! minted later sort later and recent traces cluster in LMDB's B-tree.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::fork;

pub type TraceId = [u8; 16];
pub type SpanId = [u8; 8];

thread_local! {
    /// (fork generation, xorshift state); reseeded from the OS after a fork so that a
    /// parent and its child never mint the same ids.
    static RNG: Cell<(u64, u64)> = const { Cell::new((u64::MAX, 0)) };
}

fn seed() -> u64 {
    let mut buf = [0u8; 8];
    if getrandom::fill(&mut buf).is_err() {
        // No OS entropy: fall back to time and address bits, still unique per thread.
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let local = 0u8;
        return (nanos as u64) ^ ((&local as *const u8 as u64) << 17) | 1;
    }
    u64::from_le_bytes(buf) | 1
}

/// A fast non-cryptographic generator (xorshift64*), seeded from the OS once per thread
/// and per fork generation. Ids need uniqueness, not secrecy.
fn next_random() -> u64 {
    let generation = fork::generation();
    RNG.with(|cell| {
        let (seen, mut x) = cell.get();
        if seen != generation {
            x = seed();
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        cell.set((generation, x));
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

pub fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A new time-ordered trace id (UUIDv7 layout).
pub fn new_trace_id() -> TraceId {
    let mut id = [0u8; 16];
    id[..6].copy_from_slice(&now_millis().to_be_bytes()[2..]);
    id[6..14].copy_from_slice(&next_random().to_le_bytes());
    id[14..].copy_from_slice(&next_random().to_le_bytes()[..2]);
    id[6] = (id[6] & 0x0f) | 0x70; // version 7
    id[8] = (id[8] & 0x3f) | 0x80; // RFC 4122 variant
    id
}

/// A new random, non-zero span id.
pub fn new_span_id() -> SpanId {
    loop {
        let x = next_random();
        if x != 0 {
            return x.to_be_bytes();
        }
    }
}

/// A new ULID-like id (decisions and their events): a 48-bit big-endian Unix millisecond
/// timestamp, then 80 random bits, so ids minted later sort later.
pub fn new_ulid() -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..6].copy_from_slice(&now_millis().to_be_bytes()[2..]);
    id[6..14].copy_from_slice(&next_random().to_le_bytes());
    id[14..].copy_from_slice(&next_random().to_le_bytes()[..2]);
    id
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// The 26-character Crockford base32 spelling of a 128-bit id (as ULIDs are written).
pub fn to_crockford(id: &[u8; 16]) -> String {
    let n = u128::from_be_bytes(*id);
    (0..26).rev().map(|i| CROCKFORD[((n >> (5 * i)) & 31) as usize] as char).collect()
}

/// Parses the spelling [`to_crockford`] writes (uppercase, 26 characters, at most 128 bits).
pub fn parse_crockford(text: &str) -> Option<[u8; 16]> {
    if text.len() != 26 {
        return None;
    }
    let mut n: u128 = 0;
    for (i, c) in text.bytes().enumerate() {
        let digit = CROCKFORD.iter().position(|&d| d == c)? as u128;
        // 26 digits hold 130 bits: the first may only use the low 3 of its 5.
        if i == 0 && digit > 7 {
            return None;
        }
        n = (n << 5) | digit;
    }
    Some(n.to_be_bytes())
}

/// The trace id a caller key (a run id, a request id, ...) always maps to, so that
/// re-sending the same run updates the same trace. First 16 bytes of
/// SHA-256("flightlog.trace_id_for\0" + key).
pub fn trace_id_for(key: &str) -> TraceId {
    let digest =
        Sha256::new().chain_update(b"flightlog.trace_id_for\0").chain_update(key).finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    if id == [0u8; 16] {
        id[15] = 1; // the all-zero id is invalid in W3C trace context
    }
    id
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex of any byte string.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 0x0f) as usize] as char);
    }
    out
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Parses exactly `N` bytes of lowercase hex that are not all zero (W3C rule).
pub fn parse_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let raw = text.as_bytes();
    if raw.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in raw.chunks_exact(2).enumerate() {
        out[i] = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
    }
    if out.iter().all(|&b| b == 0) {
        return None;
    }
    Some(out)
}

pub fn parse_trace_id(text: &str) -> Option<TraceId> {
    parse_hex::<16>(text)
}

pub fn parse_span_id(text: &str) -> Option<SpanId> {
    parse_hex::<8>(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn trace_ids_are_time_ordered_hex_uuid7() {
        let a = new_trace_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_trace_id();
        assert!(a < b, "a later id must sort later");
        let text = to_hex(&a);
        assert_eq!(text.len(), 32);
        assert_eq!(&text[12..13], "7");
        assert!(matches!(&text[16..17], "8" | "9" | "a" | "b"));
        assert_eq!(parse_trace_id(&text), Some(a));
    }

    #[test]
    fn trace_id_embeds_the_current_millisecond() {
        let before = now_millis();
        let id = new_trace_id();
        let after = now_millis();
        let mut ms = [0u8; 8];
        ms[2..].copy_from_slice(&id[..6]);
        let ms = u64::from_be_bytes(ms);
        assert!(before <= ms && ms <= after);
    }

    #[test]
    fn minted_ids_do_not_collide() {
        let traces: HashSet<_> = (0..100_000).map(|_| new_trace_id()).collect();
        assert_eq!(traces.len(), 100_000);
        let spans: HashSet<_> = (0..100_000).map(|_| new_span_id()).collect();
        assert_eq!(spans.len(), 100_000);
    }

    #[test]
    fn ulids_are_time_ordered_and_round_trip_through_crockford() {
        let a = new_ulid();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_ulid();
        let (ta, tb) = (to_crockford(&a), to_crockford(&b));
        assert!(a < b && ta < tb, "later ids sort later, as bytes and as text");
        assert_eq!(ta.len(), 26);
        assert_eq!(parse_crockford(&ta), Some(a));
        assert_eq!(parse_crockford(&to_crockford(&[0xff; 16])), Some([0xff; 16]));
        assert_eq!(parse_crockford("8ZZZZZZZZZZZZZZZZZZZZZZZZZ"), None, "over 128 bits");
        assert_eq!(parse_crockford(&ta.to_lowercase()), None);
        assert_eq!(parse_crockford(&ta[1..]), None);
    }

    #[test]
    fn trace_id_for_is_deterministic_and_key_specific() {
        assert_eq!(trace_id_for("run_abc"), trace_id_for("run_abc"));
        assert_ne!(trace_id_for("run_abc"), trace_id_for("run_abd"));
        assert_eq!(to_hex(&trace_id_for("")).len(), 32);
    }

    #[test]
    fn parse_rejects_wrong_length_uppercase_non_hex_and_zero() {
        assert_eq!(
            parse_span_id("00f067aa0ba902b7"),
            Some([0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
        );
        assert_eq!(parse_span_id("00F067AA0BA902B7"), None);
        assert_eq!(parse_span_id("00f067aa0ba902b"), None);
        assert_eq!(parse_span_id("00f067aa0ba902bz"), None);
        assert_eq!(parse_span_id("0000000000000000"), None);
        assert_eq!(
            parse_trace_id("4bf92f3577b34da6a3ce929d0e0e4736"),
            parse_hex("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(parse_trace_id("é"), None);
    }
}
