//! Decoding request batches and encoding deliveries.

use faye_protocol::{
    BayeuxError, ClientId, DecodeError, EncodedMessage, Message, decode_batch,
    decode_batch_limited, encode_batch, escape_jsonp, js_string,
};
use proptest::prelude::*;
use serde_json::{Value, json};

#[test]
fn a_batch_is_an_array_an_object_or_null() {
    assert_eq!(decode_batch(b"[{},{}]").unwrap().len(), 2);
    assert_eq!(decode_batch(b"\n {\"channel\":\"/a\"}").unwrap().len(), 1);
    assert!(decode_batch(b"null").unwrap().is_empty());
    assert!(decode_batch(b"[]").unwrap().is_empty());
    for bad in [&b"42"[..], b"\"x\"", b"true", b"", b"[", b"{\"a\":}", b"[1,]"] {
        assert!(decode_batch(bad).is_err(), "{}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn falsy_batch_elements_are_skipped_and_other_primitives_are_empty_messages() {
    let batch =
        decode_batch(br#"[null, false, 0, "", 1, "x", [1,[2]], {"channel":"/a"}]"#).unwrap();
    assert_eq!(batch.len(), 4);
    assert!(batch[..3].iter().all(|m| m.channel.is_none() && m.data.is_none()));
    assert_eq!(batch[3].channel.as_deref(), Some("/a"));
}

#[test]
fn falsy_identity_fields_are_absent_and_others_are_stringified() {
    let m = &decode_batch(br#"{"clientId":"","channel":null,"connectionType":0,"error":false}"#)
        .unwrap()[0];
    assert!(
        m.client_id.is_none()
            && m.channel.is_none()
            && m.connection_type.is_none()
            && m.error.is_none()
    );
    let m = &decode_batch(br#"{"clientId":12,"channel":["/a","/b"]}"#).unwrap()[0];
    assert_eq!(m.client_id.as_deref(), Some("12"));
    assert_eq!(m.channel.as_deref(), Some("/a,/b"));
}

#[test]
fn data_null_is_present_and_data_stays_byte_for_byte() {
    let m = &decode_batch(br#"{"channel":"/a","data":null}"#).unwrap()[0];
    assert_eq!(m.data.as_ref().unwrap().get(), "null");
    let m = &decode_batch(br#"{"channel":"/a","data":{"b" : [1.50, "\u00e9"]}}"#).unwrap()[0];
    assert_eq!(m.data.as_ref().unwrap().get(), r#"{"b" : [1.50, "\u00e9"]}"#);
}

#[test]
fn a_delivery_drops_the_credential_and_reply_fields_and_keeps_the_rest() {
    let m = &decode_batch(
        br#"{"channel":"/x/y","data":{"n":1},"id":"p1","clientId":"whatever","ext":{"a":1},"advice":{"reconnect":"none"},"successful":true,"extra":"kept"}"#,
    )
    .unwrap()[0];
    let out: Value = serde_json::from_slice(EncodedMessage::delivery(m).json()).unwrap();
    assert_eq!(
        out,
        json!({"channel":"/x/y","data":{"n":1},"id":"p1","ext":{"a":1},"extra":"kept"})
    );
}

#[test]
fn numeric_ids_are_echoed_exactly() {
    // Found by the decode_messages fuzzer: default float parsing was one unit off.
    for id in ["1.0715660391465826e-75", "3.0261999441573203e-52", "6.466053826432699e-236", "42"] {
        let body = format!(r#"{{"id":{id}}}"#);
        assert_eq!(decode_batch(body.as_bytes()).unwrap()[0].to_json(), body);
    }
}

#[test]
fn a_repeated_key_keeps_the_last_value() {
    let m = &decode_batch(br#"{"channel":"/a","channel":"/b","x":1,"x":2}"#).unwrap()[0];
    assert_eq!(m.channel.as_deref(), Some("/b"));
    assert_eq!(m.to_json(), r#"{"channel":"/b","x":2}"#);
}

#[test]
fn a_repeated_unknown_key_keeps_its_last_value_where_it_last_appeared() {
    let m = &decode_batch(br#"{"x":1,"y":2,"x":3,"channel":"/a","z":4,"y":5}"#).unwrap()[0];
    let keys: Vec<_> = m.extra.iter().map(|(k, v)| (k.as_str(), v.get())).collect();
    assert_eq!(keys, [("x", "3"), ("z", "4"), ("y", "5")]);
    assert_eq!(m.to_json(), r#"{"channel":"/a","x":3,"z":4,"y":5}"#);
}

#[test]
fn eighty_thousand_unknown_keys_are_decoded() {
    // A 1 MB body of this shape took 16-19 s of CPU when each key was looked for
    // among all the earlier ones.
    let mut body = String::from(r#"{"channel":"/a""#);
    for i in 0..80_000 {
        body.push_str(&format!(r#","k{}":{i}"#, i % 40_000));
    }
    body.push('}');
    let m = &decode_batch(body.as_bytes()).unwrap()[0];
    assert_eq!(m.extra.len(), 40_000);
    // Each key keeps its second value, at its second position.
    for (i, (k, v)) in m.extra.iter().enumerate() {
        assert_eq!(
            (k.as_str(), v.get()),
            (format!("k{i}").as_str(), (i + 40_000).to_string().as_str())
        );
    }
}

#[test]
fn a_batch_over_the_limit_is_refused_before_the_rest_is_read() {
    let batch = |n: usize| format!("[{}]", vec!["{}"; n].join(","));
    assert_eq!(decode_batch_limited(batch(1000).as_bytes(), 1000).unwrap().len(), 1000);
    assert!(matches!(
        decode_batch_limited(batch(1001).as_bytes(), 1000),
        Err(DecodeError::TooMany { max: 1000 })
    ));
    // Message 1,001 is never followed by anything readable: decoding stopped there.
    let cut = format!("[{},{{}}, this is not JSON", vec!["{}"; 1000].join(","));
    assert!(matches!(
        decode_batch_limited(cut.as_bytes(), 1000),
        Err(DecodeError::TooMany { max: 1000 })
    ));
    assert!(matches!(decode_batch(cut.as_bytes()), Err(DecodeError::Json(_))));
    // A single object is a batch of one.
    assert!(matches!(decode_batch_limited(b"{}", 0), Err(DecodeError::TooMany { max: 0 })));
    assert_eq!(decode_batch_limited(b"{}", 1).unwrap().len(), 1);
    assert!(decode_batch_limited(b"[]", 0).unwrap().is_empty());
    assert!(decode_batch_limited(b"null", 0).unwrap().is_empty());
    // Malformed JSON before the limit is reached is still malformed.
    assert!(matches!(decode_batch_limited(b"[{},{}", 5), Err(DecodeError::Json(_))));
    assert!(matches!(decode_batch_limited(b"[{}] x", 5), Err(DecodeError::Json(_))));
}

#[test]
fn nesting_is_unbounded_in_data_and_unknown_fields_and_bounded_elsewhere() {
    // `data` and unknown fields are kept raw: serde_json skips them without
    // recursing, so any depth is accepted and delivered byte for byte.
    let deep = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let body = format!(r#"{{"channel":"/a","data":{},"x":{}}}"#, deep(100_000), deep(100_000));
    let m = &decode_batch(body.as_bytes()).unwrap()[0];
    assert_eq!(m.data.as_ref().unwrap().get(), deep(100_000));
    assert_eq!(m.extra[0].1.get(), deep(100_000));
    // Fields decoded as values stop at serde_json's recursion limit: 127 levels
    // in all, the message object and the batch array included. Past it the body
    // is malformed JSON (400 over HTTP).
    for field in ["id", "ext", "advice", "channel", "subscription"] {
        let ok = format!(r#"[{{"{field}":{}}}]"#, deep(125));
        assert!(decode_batch(ok.as_bytes()).is_ok(), "{field}");
        let too_deep = format!(r#"[{{"{field}":{}}}]"#, deep(126));
        assert!(matches!(decode_batch(too_deep.as_bytes()), Err(DecodeError::Json(_))), "{field}");
    }
}

#[test]
fn error_strings_match_faye() {
    assert_eq!(
        BayeuxError::conntype_mismatch("iframe,flash").to_string(),
        "301:iframe,flash:Connection types not supported"
    );
    assert_eq!(
        BayeuxError::channel_forbidden("/meta/foo").to_string(),
        "403:/meta/foo:Forbidden channel"
    );
    assert_eq!(BayeuxError::channel_invalid("").to_string(), "405::Invalid channel");
    assert_eq!(
        BayeuxError::parameter_missing("supportedConnectionTypes").to_string(),
        "402:supportedConnectionTypes:Missing required parameter"
    );
}

#[test]
fn js_string_follows_javascript() {
    assert_eq!(js_string(&json!(["iframe", "flash"])), "iframe,flash");
    assert_eq!(js_string(&json!([null, 1, "a"])), ",1,a");
    assert_eq!(js_string(&json!({"a":1})), "[object Object]");
    assert_eq!(js_string(&json!(true)), "true");
    assert_eq!(js_string(&json!([[1, [2, null]], null, "a", {}])), "1,2,,,a,[object Object]");
    assert_eq!(js_string(&json!(null)), "null");
}

#[test]
fn jsonp_escapes_line_separators() {
    assert_eq!(escape_jsonp("[\"a\u{2028}b\u{2029}\"]"), r#"["a\u2028b\u2029"]"#);
}

/// The message's unknown fields as the decoder kept them before it was made
/// linear: each key removed from the list and pushed again.
fn extra_fields_by_removal(fields: &[(String, u32)]) -> Vec<(String, String)> {
    let mut extra: Vec<(String, String)> = Vec::new();
    for (k, v) in fields {
        extra.retain(|(old, _)| old != k);
        extra.push((k.clone(), v.to_string()));
    }
    extra
}

proptest! {
    #[test]
    fn repeated_unknown_keys_end_as_they_did_by_removal(
        fields in proptest::collection::vec(("[a-d]{1,2}", 0u32..100), 0..40),
    ) {
        let body = format!(
            "{{{}}}",
            fields.iter().map(|(k, v)| format!(r#""{k}":{v}"#)).collect::<Vec<_>>().join(",")
        );
        let m = decode_batch(body.as_bytes()).unwrap().remove(0);
        let got: Vec<(String, String)> =
            m.extra.iter().map(|(k, v)| (k.clone(), v.get().to_owned())).collect();
        prop_assert_eq!(got, extra_fields_by_removal(&fields));
    }

    #[test]
    fn the_limit_refuses_exactly_the_batches_over_it(
        items in proptest::collection::vec(
            prop_oneof![Just("null"), Just("0"), Just("\"\""), Just("{}"), Just("1"), Just("[2]"), Just(r#"{"channel":"/a"}"#)],
            0..20,
        ),
        max in 0usize..20,
    ) {
        let body = format!("[{}]", items.join(","));
        let all = decode_batch(body.as_bytes()).unwrap();
        match decode_batch_limited(body.as_bytes(), max) {
            Ok(batch) => {
                prop_assert!(all.len() <= max);
                prop_assert_eq!(
                    batch.iter().map(Message::to_json).collect::<Vec<_>>(),
                    all.iter().map(Message::to_json).collect::<Vec<_>>()
                );
            }
            Err(DecodeError::TooMany { max: m }) => prop_assert!(m == max && all.len() > max),
            Err(e) => prop_assert!(false, "{e}"),
        }
    }

    #[test]
    fn client_ids_are_31_base36_digits_of_the_number(bytes in any::<[u8; 20]>()) {
        let id = ClientId::from_random_bytes(bytes);
        prop_assert_eq!(id.as_str().len(), 31);
        prop_assert_eq!(ClientId::parse(id.as_str()), Some(id));
        // Read back as base 36: the same 160-bit number.
        let mut n = [0u8; 20];
        for digit in id.as_str().bytes() {
            let mut carry = u32::from(if digit.is_ascii_digit() { digit - b'0' } else { digit - b'a' + 10 });
            for byte in n.iter_mut().rev() {
                let cur = u32::from(*byte) * 36 + carry;
                *byte = cur as u8;
                carry = cur >> 8;
            }
            prop_assert_eq!(carry, 0);
        }
        prop_assert_eq!(n, bytes);
    }

    #[test]
    fn messages_survive_a_decode_encode_round_trip(
        channel in "/[a-z]{1,5}(/[a-z]{1,5}){0,2}",
        data in prop_oneof![Just("null".to_owned()), "-?[1-9][0-9]{0,5}", "\"[a-zé ]{0,8}\"", Just("{\"k\":[1,2,{}]}".to_owned())],
        id in "[0-9a-z]{1,4}",
    ) {
        let json = format!(r#"{{"channel":"{channel}","data":{data},"id":"{id}","clientId":"c1"}}"#);
        let m: Message = decode_batch(json.as_bytes()).unwrap().remove(0);
        let again: Message = decode_batch(m.to_json().as_bytes()).unwrap().remove(0);
        prop_assert_eq!(again.to_json(), m.to_json());
        let original: Value = serde_json::from_str(&json).unwrap();
        let encoded: Value = serde_json::from_str(&m.to_json()).unwrap();
        prop_assert_eq!(encoded, original);
    }
}

#[test]
fn a_batch_is_one_json_array_whatever_its_items() {
    let m = Message { id: Some(json!("1")), ..Message::on("/a") };
    let shared = EncodedMessage::new(&m);
    // One already-encoded message goes out as the very bytes it was stored as.
    let alone = encode_batch(std::slice::from_ref(&shared));
    assert_eq!(alone.as_ptr(), shared.batch().as_ptr());
    assert_eq!(&alone[..], br#"[{"id":"1","channel":"/a"}]"#);
    let two: Value = serde_json::from_slice(&encode_batch(&[shared.clone(), shared])).unwrap();
    assert_eq!(two, json!([{"id":"1","channel":"/a"}, {"id":"1","channel":"/a"}]));
    let replies: Value = serde_json::from_slice(&encode_batch(&[m.clone(), m])).unwrap();
    assert_eq!(replies, json!([{"id":"1","channel":"/a"}, {"id":"1","channel":"/a"}]));
    assert_eq!(&encode_batch::<Message>(&[])[..], b"[]");
}

#[test]
fn an_encoded_message_derives_its_other_encoding_once() {
    let shared = EncodedMessage::new(&Message::on("/a"));
    let mut calls = 0;
    for _ in 0..3 {
        let copy = shared.clone();
        let derived = copy.derived(|batch| {
            calls += 1;
            Some(bytes::Bytes::copy_from_slice(&batch[1..]))
        });
        assert_eq!(derived.as_deref(), Some(&br#"{"channel":"/a"}]"#[..]));
    }
    assert_eq!(calls, 1);
    let read_back = EncodedMessage::from_json(shared.json());
    assert_eq!(read_back, shared);
    assert_eq!(read_back.decode().unwrap().channel.as_deref(), Some("/a"));
}
