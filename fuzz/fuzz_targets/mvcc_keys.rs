#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_targets::mvcc_keys(data));
