//! Record values: the 6- or 10-byte header and zstd compression, with a dictionary trained
//! on the store's own first records once there are enough of them.
//!
//! Why a dictionary: an agent trace compresses to ~2.3–2.8 KB on its own, just over LMDB's
//! ~2 KB limit for a value kept inside a leaf page, so each would take a whole 4 KB overflow
//! page. With a dictionary of what traces have in common (field names, prompts, phrasing) the
//! same trace takes ~1.2–1.5 KB, two or three share a page, and compression is faster too.

use std::cell::RefCell;

use zstd::zstd_safe::{CCtx, CDict, DCtx, DDict};

/// First byte of every record value.
const VERSION: u8 = 1;
const CODEC_RAW: u8 = 0;
const CODEC_ZSTD: u8 = 1;
const CODEC_ZSTD_DICT: u8 = 2;
const HEADER: usize = 6;
const DICT_HEADER: usize = HEADER + 4;
/// Without a dictionary: the fast level -1 (~16 µs for a 5 KB trace); level 1 costs 40% more
/// for 20% less.
const LEVEL: i32 = -1;
/// With a dictionary, level 1 is both smaller and faster than the negative levels.
const DICT_LEVEL: i32 = 1;
/// Records smaller than this are stored raw: compression would not pay for its header.
const COMPRESS_MIN: usize = 128;
/// Refuse to inflate a value to more than this (a corrupt length must not allocate GiBs).
const MAX_RECORD_BYTES: usize = 1 << 30;

/// How many records to collect before training. 256 standard traces train in ~80 ms and
/// compress as well as 1,000 (~320 ms), and every record stored while training runs is
/// ~2.3x larger until the writer recompresses it.
pub const TRAINING_SAMPLES: usize = 256;
/// Bytes of samples kept for training at most (large traces would otherwise hold memory).
pub const TRAINING_BYTES: usize = 16 << 20;
const DICTIONARY_BYTES: usize = 64 << 10;

/// A trained dictionary, prepared for both directions.
pub struct Dictionary {
    pub id: u32,
    compress: CDict<'static>,
    decompress: DDict<'static>,
}

impl Dictionary {
    /// Prepares stored dictionary bytes. They are read from disk, so they may be anything:
    /// zstd refusing them is an error, never a panic (the `zstd` crate's own dictionary
    /// constructors panic when zstd returns null).
    pub fn new(id: u32, raw: &[u8]) -> Result<Dictionary, String> {
        let unusable = || format!("dicts[{id}] is not a usable zstd dictionary");
        Ok(Dictionary {
            id,
            compress: CDict::try_create(raw, DICT_LEVEL).ok_or_else(unusable)?,
            decompress: DDict::try_create(raw).ok_or_else(unusable)?,
        })
    }

    /// Trains a dictionary on sample records; `None` if zstd finds too little in common.
    pub fn train(samples: &[Vec<u8>]) -> Option<Vec<u8>> {
        zstd::dict::from_samples(samples, DICTIONARY_BYTES).ok()
    }
}

/// Compresses record values; one per thread that encodes (a zstd context is ~1 MB of state
/// that should be reused, not rebuilt per record).
pub struct Encoder {
    context: CCtx<'static>,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder { context: CCtx::create() }
    }
}

impl Encoder {
    /// The stored value for a record's canonical bytes.
    pub fn encode(&mut self, canonical: &[u8], dictionary: Option<&Dictionary>) -> Vec<u8> {
        if canonical.len() >= COMPRESS_MIN {
            let header = if dictionary.is_some() { DICT_HEADER } else { HEADER };
            let mut value = vec![0u8; header + zstd::zstd_safe::compress_bound(canonical.len())];
            let written = match dictionary {
                Some(dict) => self.context.compress_using_cdict(
                    &mut value[header..],
                    canonical,
                    &dict.compress,
                ),
                None => self.context.compress(&mut value[header..], canonical, LEVEL),
            };
            if let Ok(written) = written {
                if written < canonical.len() {
                    value.truncate(header + written);
                    let codec = if dictionary.is_some() { CODEC_ZSTD_DICT } else { CODEC_ZSTD };
                    write_header(&mut value, codec, canonical.len(), dictionary.map(|d| d.id));
                    return value;
                }
            }
        }
        let mut value = vec![0u8; HEADER];
        write_header(&mut value, CODEC_RAW, canonical.len(), None);
        value.extend_from_slice(canonical);
        value
    }
}

thread_local! {
    static CALLER_ENCODER: RefCell<Encoder> = RefCell::new(Encoder::default());
    static DECOMPRESSOR: RefCell<DCtx<'static>> = RefCell::new(DCtx::create());
}

/// Encodes on the calling thread with its own reused context (used by callers that help the
/// writer thread when it falls behind).
pub fn encode_here(canonical: &[u8], dictionary: Option<&Dictionary>) -> Vec<u8> {
    CALLER_ENCODER.with(|encoder| encoder.borrow_mut().encode(canonical, dictionary))
}

fn write_header(value: &mut [u8], codec: u8, raw_len: usize, dictionary: Option<u32>) {
    value[0] = VERSION;
    value[1] = codec;
    value[2..6].copy_from_slice(&(raw_len as u32).to_le_bytes());
    if let Some(id) = dictionary {
        value[6..10].copy_from_slice(&id.to_le_bytes());
    }
}

/// The dictionary id a value needs to be decoded, if any.
pub fn dictionary_id(value: &[u8]) -> Option<u32> {
    match value {
        [VERSION, CODEC_ZSTD_DICT, _, _, _, _, a, b, c, d, ..] => {
            Some(u32::from_le_bytes([*a, *b, *c, *d]))
        }
        _ => None,
    }
}

/// Inverse of [`Encoder::encode`]; never panics on arbitrary bytes. `dictionary` must be the
/// one named by [`dictionary_id`] when there is one.
pub fn decode(value: &[u8], dictionary: Option<&Dictionary>) -> Result<Vec<u8>, String> {
    if value.len() < HEADER {
        return Err(format!("value of {} bytes is shorter than its header", value.len()));
    }
    if value[0] != VERSION {
        return Err(format!("unknown value version {}", value[0]));
    }
    let raw_len = u32::from_le_bytes([value[2], value[3], value[4], value[5]]) as usize;
    let raw = match value[1] {
        CODEC_RAW => value[HEADER..].to_vec(),
        CODEC_ZSTD | CODEC_ZSTD_DICT if raw_len > MAX_RECORD_BYTES => {
            return Err(format!("declared length {raw_len} is implausible"));
        }
        CODEC_ZSTD => {
            zstd::bulk::decompress(&value[HEADER..], raw_len).map_err(|e| format!("zstd: {e}"))?
        }
        CODEC_ZSTD_DICT => {
            let wanted = dictionary_id(value).ok_or("value is shorter than its header")?;
            let dict = dictionary
                .filter(|d| d.id == wanted)
                .ok_or_else(|| format!("needs dictionary {wanted}, which is not in the store"))?;
            let mut raw = Vec::with_capacity(raw_len);
            DECOMPRESSOR
                .with(|context| {
                    context.borrow_mut().decompress_using_ddict(
                        &mut raw,
                        &value[DICT_HEADER..],
                        &dict.decompress,
                    )
                })
                .map_err(|code| format!("zstd: {}", zstd::zstd_safe::get_error_name(code)))?;
            raw
        }
        other => return Err(format!("unknown codec {other}")),
    };
    if raw.len() != raw_len {
        return Err(format!("declared length {raw_len}, decoded {} bytes", raw.len()));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace_like(i: usize) -> Vec<u8> {
        format!(
            "{{\"agent_name\":\"support-bot-{}\",\"input\":\"where is order {i}? the customer \
             asked about shipping and the refund policy\",\"spans\":[{{\"name\":\"chat gpt-4o\",\
             \"kind\":\"LLM\",\"attributes\":{{\"gen_ai.usage.input_tokens\":{i}}}}}]}}",
            i % 7
        )
        .repeat(3)
        .into_bytes()
    }

    #[test]
    fn values_round_trip_raw_compressed_and_with_a_dictionary() {
        let samples: Vec<_> = (0..300).map(trace_like).collect();
        let dict = Dictionary::new(7, &Dictionary::train(&samples).expect("trainable")).unwrap();
        let mut encoder = Encoder::default();
        for raw in [b"tiny".to_vec(), Vec::new(), trace_like(1000)] {
            for dictionary in [None, Some(&dict)] {
                let value = encoder.encode(&raw, dictionary);
                let needs = dictionary_id(&value).map(|_| &dict);
                assert_eq!(decode(&value, needs).unwrap(), raw);
            }
        }
        let plain = encoder.encode(&trace_like(1000), None);
        let with_dict = encoder.encode(&trace_like(1000), Some(&dict));
        assert_eq!((plain[1], with_dict[1]), (CODEC_ZSTD, CODEC_ZSTD_DICT));
        assert_eq!(dictionary_id(&with_dict), Some(7));
        assert!(with_dict.len() < plain.len(), "the dictionary must help");
        assert_eq!(
            encode_here(&trace_like(3), Some(&dict)),
            encoder.encode(&trace_like(3), Some(&dict))
        );
    }

    #[test]
    fn a_value_needing_a_missing_dictionary_is_an_error() {
        let samples: Vec<_> = (0..300).map(trace_like).collect();
        let dict = Dictionary::new(7, &Dictionary::train(&samples).unwrap()).unwrap();
        let other = Dictionary::new(8, &Dictionary::train(&samples).unwrap()).unwrap();
        let value = Encoder::default().encode(&trace_like(5), Some(&dict));
        assert!(decode(&value, None).unwrap_err().contains("dictionary 7"));
        assert!(decode(&value, Some(&other)).unwrap_err().contains("dictionary 7"));
    }

    #[test]
    fn corrupt_values_are_errors_not_panics() {
        let samples: Vec<_> = (0..300).map(trace_like).collect();
        let dict = Dictionary::new(1, &Dictionary::train(&samples).unwrap()).unwrap();
        let mut encoder = Encoder::default();
        for good in
            [encoder.encode(&trace_like(9), None), encoder.encode(&trace_like(9), Some(&dict))]
        {
            assert!(decode(&[], Some(&dict)).is_err());
            assert!(decode(&good[..5], Some(&dict)).is_err());
            let mut bad = good.clone();
            bad[0] = 9;
            assert!(decode(&bad, Some(&dict)).unwrap_err().contains("version"));
            let mut bad = good.clone();
            bad[1] = 7;
            assert!(decode(&bad, Some(&dict)).unwrap_err().contains("codec"));
            let mut bad = good.clone();
            bad[2..6].copy_from_slice(&u32::MAX.to_le_bytes());
            assert!(decode(&bad, Some(&dict)).is_err());
            for i in HEADER..good.len() {
                let mut flipped = good.clone();
                flipped[i] ^= 0xff;
                let _ = decode(&flipped, Some(&dict));
            }
        }
    }
}
