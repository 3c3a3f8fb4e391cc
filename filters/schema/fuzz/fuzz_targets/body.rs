//! The body parser on arbitrary bytes, under tight and default limits: it
//! never panics, and whatever it accepts serde_json reads the same way.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_schema::body::{parse, BodyError};
use palisade_schema::config::Limits;

fuzz_target!(|data: &[u8]| {
    let tight = Limits {
        max_depth: 4,
        max_members: 4,
        max_items: 4,
        max_string_bytes: 8,
    };
    for limits in [Limits::default(), tight] {
        let ours = parse(data, &limits);
        let reference = serde_json::from_slice::<serde_json::Value>(data);
        match (ours, reference) {
            (Ok(v), Ok(r)) => assert_eq!(v, r),
            (Ok(_), Err(_)) => panic!("accepted what serde_json refuses"),
            (Err(BodyError::Syntax), Ok(_)) => panic!("syntax error on valid JSON"),
            _ => {}
        }
    }
});
