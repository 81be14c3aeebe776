//! Runs `_core::fuzz::stored_value` (docs/reliability.md, "Decoder fuzz"). Its corpus is
//! `tests/corpus/stored_value/`; runs grow a scratch one in `fuzz/corpus/stored_value/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| _core::fuzz::stored_value(data));
