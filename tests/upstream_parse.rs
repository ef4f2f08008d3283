//! The upstream response parser on generated heads: it never panics, and whatever it
//! accepts frames its body one way only.

use proptest::prelude::*;
use ringmaster::http::upstream::{
    parse_response_head, BodyFraming, ParsedResponse, RESPONSE_FIELDS_MAX,
};
use std::mem::MaybeUninit;

/// Heads made of the pieces that desynchronise proxies.
fn hostile_head() -> impl Strategy<Value = Vec<u8>> {
    let status = prop_oneof![
        Just("HTTP/1.1 200 OK"),
        Just("HTTP/1.0 200 OK"),
        Just("HTTP/1.1 204 No Content"),
        Just("HTTP/1.1 304 Not Modified"),
        Just("HTTP/1.1 101 Switching"),
        Just("HTTP/1.1 099 Low"),
        Just("HTTP/1.2 200 OK"),
    ];
    let field = prop_oneof![
        Just("Content-Length: 5".to_string()),
        Just("Content-Length: 6".to_string()),
        Just("Content-Length: 5, 5".to_string()),
        Just("content-length:5".to_string()),
        Just("Transfer-Encoding: chunked".to_string()),
        Just("Transfer-Encoding: gzip".to_string()),
        Just("Transfer-Encoding: gzip, chunked".to_string()),
        Just("Connection: close".to_string()),
        Just("Connection: keep-alive".to_string()),
        Just(" folded".to_string()),
        Just("X: a\rb".to_string()),
        Just("X: a\0b".to_string()),
        Just("Set-Cookie: x".to_string()),
        "[A-Za-z-]{1,8}: [ -~]{0,8}",
    ];
    let end = prop_oneof![Just("\r\n"), Just("\n")];
    (
        status,
        prop::collection::vec((field, end.clone()), 0..8),
        end.clone(),
        end,
    )
        .prop_map(|(status, fields, after_status, last)| {
            let mut head = format!("{status}{after_status}");
            for (f, e) in fields {
                head.push_str(&f);
                head.push_str(e);
            }
            head.push_str(last);
            head.into_bytes()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    #[test]
    fn what_is_accepted_has_one_framing(head in hostile_head(), to_head in any::<bool>()) {
        let mut fields = [const { MaybeUninit::uninit() }; RESPONSE_FIELDS_MAX];
        if let Ok(ParsedResponse::Complete(h)) = parse_response_head(&head, &mut fields, to_head) {
            let bytes = &head[..h.head_len];
            // No bare LF anywhere in what was accepted.
            for (i, &b) in bytes.iter().enumerate() {
                prop_assert!(b != b'\n' || (i > 0 && bytes[i - 1] == b'\r'), "{head:?}");
            }
            let lengths: Vec<&[u8]> = h
                .fields
                .iter()
                .filter(|f| f.name.eq_ignore_ascii_case("content-length"))
                .map(|f| f.value)
                .collect();
            let coded = h
                .fields
                .iter()
                .any(|f| f.name.eq_ignore_ascii_case("transfer-encoding"));
            // One length at most (repeats agree), and never beside a coding.
            prop_assert!(lengths.windows(2).all(|w| w[0] == w[1]), "{head:?}");
            prop_assert!(lengths.is_empty() || !coded, "{head:?}");
            match h.framing {
                BodyFraming::Length(n) => {
                    prop_assert_eq!(lengths.first().map(|v| v.to_vec()), Some(n.to_string().into_bytes()));
                }
                BodyFraming::Chunked => prop_assert!(coded && lengths.is_empty()),
                BodyFraming::UntilClose => prop_assert!(!h.keep_alive),
                BodyFraming::None => {
                    prop_assert!(to_head || h.status < 200 || h.status == 204 || h.status == 304)
                }
            }
        }
    }
}
