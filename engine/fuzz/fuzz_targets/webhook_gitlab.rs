//! Feeds arbitrary bytes to the GitLab webhook parser and signature check: the first byte picks
//! the event header, the rest is the body. A webhook body comes from the network before the
//! signature is known to be good, so any panic, stack overflow or runaway allocation is a bug:
//! the only outcomes are a parsed event or a rejection. Signing a body and verifying it must
//! always agree.
#![no_main]

use gantry::webhook::{gitlab, signature};
use libfuzzer_sys::fuzz_target;

const EVENTS: &[&str] = &[
    "Push Hook",
    "Tag Push Hook",
    "Merge Request Hook",
    "System Hook",
    "Note Hook",
    "",
];
const SECRET: &[u8] = b"s3cret-token";

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let event = EVENTS[usize::from(pick) % EVENTS.len()];
    match gitlab::parse(event, body) {
        Ok(parsed) => {
            // Touch what the receiver and the processor read.
            std::hint::black_box(serde_json::to_string(&parsed).ok());
        }
        Err(rejection) => {
            std::hint::black_box(rejection.to_string());
        }
    }
    let _ = gitlab::repository(body);
    // A header taken from the input: malformed, wrong length, or a wrong digest.
    let guess = std::str::from_utf8(&body[..body.len().min(72)]).unwrap_or("");
    assert_eq!(
        signature::verify_gitlab(SECRET, Some("s3cret-token")),
        Ok(())
    );
    let _ = signature::verify_gitlab(SECRET, Some(guess));
    let _ = signature::verify_gitlab(SECRET, None);
});
