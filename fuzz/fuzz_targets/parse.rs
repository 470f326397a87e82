//! Parses arbitrary bytes (as UTF-8) as a `.canspec` file. The parser must never panic, and
//! whatever parses must print to text that parses again, with printing idempotent.
#![no_main]

use canc_grammar::{parse_file, parse_override, print_file};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Overrides share the value grammar; they must not panic either (the result is unchecked).
    if text.len() < 256 {
        let _ = parse_override(text, 0);
    }
    let Ok(file) = parse_file(text, 0) else {
        return;
    };
    let printed = print_file(&file);
    let reparsed = match parse_file(&printed, 0) {
        Ok(f) => f,
        Err(e) => {
            panic!("printed text does not parse: {e:?}\n--- input\n{text}\n--- printed\n{printed}")
        }
    };
    let again = print_file(&reparsed);
    assert_eq!(printed, again, "print is not idempotent\n--- input\n{text}");
});
