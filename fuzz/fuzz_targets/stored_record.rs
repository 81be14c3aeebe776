//! Runs `_core::fuzz::stored_record` (docs/reliability.md, "Decoder fuzz"). Its corpus is
//! `tests/corpus/stored_record/`; runs grow a scratch one in `fuzz/corpus/stored_record/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| _core::fuzz::stored_record(data));
