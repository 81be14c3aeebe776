//! Runs `_core::fuzz::query_args` (docs/reliability.md, "Decoder fuzz"). Its corpus is
//! `tests/corpus/query_args/`; runs grow a scratch one in `fuzz/corpus/query_args/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| _core::fuzz::query_args(data));
