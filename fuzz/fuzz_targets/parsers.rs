//! Fuzzes the parsers of what requests carry: lock names, nonces, tokens, durations,
//! fences and the token file. None may panic, and what one accepts must read back
//! as itself.
#![no_main]

use fencelock::auth::parse_grants;
use fencelock::domain::{
    LockName, Nonce, Token, format_duration, parse_duration, parse_fence,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(name) = LockName::parse(text) {
        assert_eq!(name.as_str(), text);
        let namespace = name.namespace();
        assert!(text.starts_with(namespace) || namespace == "default");
        assert!(text != "." && text != "..");
    }
    if let Ok(nonce) = Nonce::parse(text) {
        assert_eq!(nonce.as_str(), text);
        assert!(!text.is_empty() && text.len() <= 64);
    }
    if let Ok(token) = Token::parse(text) {
        assert_eq!(token.as_str(), text);
    }
    if let Ok(duration) = parse_duration(text) {
        // What fencelock writes, it reads back exactly.
        let written = format_duration(duration);
        let read = parse_duration(&written).expect("a written duration parses");
        assert_eq!(format_duration(read), written);
    }
    if let Ok(fence) = parse_fence(text) {
        assert_eq!(fence.to_string(), text);
    }
    let _ = parse_grants(text);
});
