#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_fuzz::schema_body(data));
