#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_targets::txn_records(data));
