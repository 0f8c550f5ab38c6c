//! Fuzzes the control API's request handling: the input is the bytes a client sends on the
//! socket. `parse_request` and `handle` must not panic, and must agree with themselves:
//!
//! - a complete request uses no more bytes than it was given, and the same request comes
//!   out of exactly those bytes; no shorter prefix of them is complete;
//! - the limits hold (headers, body) whatever the input;
//! - every error and every answer `handle` gives is a well-formed response whose status
//!   matches what the API documents, with `{"error": "one line"}` on every error.
//!
//! The first byte picks how the bytes arrive (in one read, or split at a fuzzer-chosen
//! point), as the server re-parses a growing buffer.

#![no_main]

use ghost_api::fake::FakeVm;
use ghost_api::http::{handle, parse_request, Parsed, Response, MAX_BODY_BYTES, MAX_HEADER_BYTES};
use ghost_api::ErrorBody;
use libfuzzer_sys::fuzz_target;

fn check_response(r: &Response) {
    let bytes = r.to_bytes();
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut parsed = httparse::Response::new(&mut headers);
    let head_len = match parsed.parse(&bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!(
            "unparsable response {other:?}: {:?}",
            String::from_utf8_lossy(&bytes)
        ),
    };
    assert_eq!(parsed.code, Some(r.status()));
    assert_eq!(&bytes[head_len..], r.body());
    assert!(matches!(
        r.status(),
        200 | 202 | 204 | 400 | 404 | 405 | 409 | 411 | 413 | 431 | 500 | 503
    ));
    assert_eq!(r.status() == 405, r.allow().is_some());
    if r.status() >= 400 {
        let e: ErrorBody = serde_json::from_slice(r.body()).expect("error body is JSON");
        assert!(!e.error.contains(['\n', '\r']), "{:?}", e.error);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let vm = FakeVm::new();
    let whole = parse_request(input);

    // Arriving in two reads: the first part is incomplete, the same result, or (when the
    // request ends within it) the same request.
    let cut = usize::from(split) * input.len() / 255;
    match (parse_request(&input[..cut]), &whole) {
        (Ok(Parsed::Incomplete), _) => {}
        (Ok(Parsed::Complete { request, len }), Ok(Parsed::Complete { request: r, len: l })) => {
            assert_eq!((&request, len), (r, *l));
        }
        (Err(e), Err(w)) => assert_eq!(&e, w),
        (prefix, whole) => panic!("prefix {prefix:?} but whole {whole:?}"),
    }

    match whole {
        Ok(Parsed::Incomplete) => assert!(input.len() < MAX_HEADER_BYTES + MAX_BODY_BYTES),
        Ok(Parsed::Complete { request, len }) => {
            assert!(len <= input.len());
            assert!(request.body.len() <= MAX_BODY_BYTES);
            assert!(len - request.body.len() <= MAX_HEADER_BYTES);
            assert_eq!(
                parse_request(&input[..len]),
                Ok(Parsed::Complete {
                    request: request.clone(),
                    len
                })
            );
            if len > 0 {
                assert_eq!(parse_request(&input[..len - 1]), Ok(Parsed::Incomplete));
            }
            check_response(&handle(&request, &vm));
        }
        Err(e) => check_response(&Response::error(e.status(), &e)),
    }
});
