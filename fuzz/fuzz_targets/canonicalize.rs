//! Runs `_core::fuzz::canonicalize` (docs/reliability.md, "Decoder fuzz"). Its corpus is
//! `tests/corpus/canonicalize/`; runs grow a scratch one in `fuzz/corpus/canonicalize/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| _core::fuzz::canonicalize(data));
