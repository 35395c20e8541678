//! Black-box wire tests over HTTP POST (long-polling) against the real `faye`
//! binary. Every golden reply is written by hand from Faye 1.4.3's behaviour as
//! `docs/protocol.md` describes it (cited as §x.y), or from the documented faye-rs
//! deviations (`docs/compatibility.md`) where noted.

mod common;

use std::time::{Duration, Instant};

use common::{
    Server, connection_types, handshake_advice, is_faye_client_id, redact, retry_advice, with_cid,
};
use faye_testkit::form_encode;
use faye_testkit::http::Response;
use serde_json::{Value, json};

/// Post each request on its own (with `$CID` replaced by `cid` in request and
/// expected reply) and compare the whole reply array with `[expected]`.
/// Collects every mismatch before failing.
async fn check_table(srv: &Server, cid: &str, what: &str, cases: &[(Value, Value)]) {
    let mut failures = Vec::new();
    for (request, expected) in cases {
        let request = with_cid(request, cid);
        let expected = json!([with_cid(expected, cid)]);
        let actual = srv.bayeux(&request).await;
        if actual != expected {
            failures
                .push(format!("request  {request}\n  expected {expected}\n  actual   {actual}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{what}: {} of {} cases differ from Faye 1.4.3:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// A failed handshake reply (§1.7 `/meta/handshake`): version, the full type
/// list and `advice {reconnect: handshake}` are always present.
fn handshake_failure(error: &str) -> Value {
    json!({
        "channel": "/meta/handshake",
        "successful": false,
        "error": error,
        "version": "1.0",
        "supportedConnectionTypes": connection_types(),
        "advice": handshake_advice(),
    })
}

/// A failed connect reply (§1.7 `/meta/connect`): no `clientId`, handshake advice.
fn connect_failure(error: &str) -> Value {
    json!({
        "channel": "/meta/connect",
        "successful": false,
        "error": error,
        "advice": handshake_advice(),
    })
}

/// Insert `key: value` into a JSON object.
fn with(mut obj: Value, key: &str, value: Value) -> Value {
    obj.as_object_mut().expect("an object").insert(key.to_owned(), value);
    obj
}

// ---------------------------------------------------------------------------
// /meta/handshake
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_successful_handshake_has_exactly_fayes_reply_fields() {
    let srv = Server::start(1).await;
    let reply = srv
        .bayeux(&json!({
            "channel": "/meta/handshake",
            "version": "1.0",
            "supportedConnectionTypes": ["long-polling", "callback-polling"],
            "id": "1",
        }))
        .await;
    // §1.7 observed success reply, with timeout = 1 s.
    assert_eq!(
        redact(&reply),
        json!([{
            "id": "1",
            "channel": "/meta/handshake",
            "successful": true,
            "version": "1.0",
            "supportedConnectionTypes": [
                "long-polling", "cross-origin-long-polling", "callback-polling",
                "websocket", "eventsource", "in-process"
            ],
            "clientId": "[clientId]",
            "advice": {"reconnect": "retry", "interval": 0, "timeout": 1000},
        }])
    );
    let cid = reply[0]["clientId"].as_str().expect("clientId is a string");
    assert!(is_faye_client_id(cid), "client id {cid:?} is not 31 chars of [0-9a-z] (§1.1)");
}

#[tokio::test]
async fn the_handshake_advice_timeout_is_the_server_timeout_in_milliseconds() {
    let srv = Server::start(3).await;
    let reply = srv
        .bayeux(&json!({
            "channel": "/meta/handshake",
            "version": "1.0",
            "supportedConnectionTypes": ["websocket"],
        }))
        .await;
    assert_eq!(reply[0]["advice"], json!({"reconnect": "retry", "interval": 0, "timeout": 3000}));
}

#[tokio::test]
async fn a_handshake_succeeds_when_only_some_of_the_clients_types_are_known() {
    let srv = Server::start(1).await;
    let reply = srv
        .bayeux(&json!({
            "channel": "/meta/handshake",
            "version": "1.0",
            "supportedConnectionTypes": ["flash", "iframe", "long-polling"],
        }))
        .await;
    assert_eq!(reply[0]["successful"], json!(true), "{reply}");
    assert!(reply[0]["clientId"].is_string(), "{reply}");
}

#[tokio::test]
async fn handshake_ids_are_echoed_only_when_truthy() {
    let srv = Server::start(1).await;
    // §1.5: id echoed untouched when truthy; 0 and "" are not echoed.
    let cases: [(Value, Option<Value>); 5] = [
        (json!("1"), Some(json!("1"))),
        (json!(7), Some(json!(7))),
        (json!("abc-def"), Some(json!("abc-def"))),
        (json!(0), None),
        (json!(""), None),
    ];
    let mut failures = Vec::new();
    for (id, echoed) in cases {
        let reply = srv
            .bayeux(&json!({
                "channel": "/meta/handshake",
                "version": "1.0",
                "supportedConnectionTypes": ["long-polling"],
                "id": id,
            }))
            .await;
        let mut expected = json!({
            "channel": "/meta/handshake",
            "successful": true,
            "version": "1.0",
            "supportedConnectionTypes": connection_types(),
            "clientId": "[clientId]",
            "advice": retry_advice(1),
        });
        if let Some(e) = echoed {
            expected = with(expected, "id", e);
        }
        let expected = json!([expected]);
        if redact(&reply) != expected {
            failures.push(format!("id {id}: expected {expected}, got {reply}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn every_handshake_creates_a_new_client_id() {
    let srv = Server::start(1).await;
    let a = srv.handshake().await;
    let b = srv.handshake().await;
    assert_ne!(a, b);
    assert!(is_faye_client_id(&a) && is_faye_client_id(&b), "{a} {b}");
}

#[tokio::test]
async fn handshake_errors_match_fayes_replies() {
    let srv = Server::start(1).await;
    let cases = [
        // §1.7 handshake check 2.
        (
            json!({"channel": "/meta/handshake", "supportedConnectionTypes": ["long-polling"]}),
            handshake_failure("402:version:Missing required parameter"),
        ),
        (
            json!({"channel": "/meta/handshake", "version": "", "supportedConnectionTypes": ["long-polling"]}),
            handshake_failure("402:version:Missing required parameter"),
        ),
        // Check 3.
        (
            json!({"channel": "/meta/handshake", "version": "1.0"}),
            handshake_failure("402:supportedConnectionTypes:Missing required parameter"),
        ),
        // Both missing: the last assignment wins.
        (
            json!({"channel": "/meta/handshake"}),
            handshake_failure("402:supportedConnectionTypes:Missing required parameter"),
        ),
        // Check 4, the client's list echoed (§1.3).
        (
            json!({"channel": "/meta/handshake", "version": "1.0",
                   "supportedConnectionTypes": ["iframe", "flash"], "id": "h1"}),
            with(
                handshake_failure("301:iframe,flash:Connection types not supported"),
                "id",
                json!("h1"),
            ),
        ),
        (
            json!({"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": []}),
            handshake_failure("301::Connection types not supported"),
        ),
        // Observed: a string is handled as a list of characters.
        (
            json!({"channel": "/meta/handshake", "version": "1.0",
                   "supportedConnectionTypes": "long-polling"}),
            handshake_failure("301:long-polling:Connection types not supported"),
        ),
        // Missing version, then 301: the last assignment (301) wins.
        (
            json!({"channel": "/meta/handshake", "supportedConnectionTypes": ["flash"]}),
            handshake_failure("301:flash:Connection types not supported"),
        ),
        // An incoming clientId is echoed on failure; ext is never echoed.
        (
            json!({"channel": "/meta/handshake", "clientId": "stale",
                   "supportedConnectionTypes": ["long-polling"], "ext": {"token": "x"}}),
            with(
                handshake_failure("402:version:Missing required parameter"),
                "clientId",
                json!("stale"),
            ),
        ),
    ];
    check_table(&srv, "", "/meta/handshake errors", &cases).await;
}

// ---------------------------------------------------------------------------
// Error tables for the other meta channels
// ---------------------------------------------------------------------------

#[tokio::test]
async fn connect_errors_match_fayes_replies_and_drop_the_client_id() {
    let srv = Server::start(1).await;
    let cid = srv.handshake().await;
    let cases = [
        // §1.7 connect, observed.
        (
            json!({"channel": "/meta/connect", "clientId": "fakeclientid",
                   "connectionType": "long-polling", "id": "9"}),
            with(connect_failure("401:fakeclientid:Unknown client"), "id", json!("9")),
        ),
        (
            json!({"channel": "/meta/connect", "connectionType": "long-polling"}),
            connect_failure("402:clientId:Missing required parameter"),
        ),
        (
            json!({"channel": "/meta/connect", "clientId": "$CID", "connectionType": "flash"}),
            connect_failure("301:flash:Connection types not supported"),
        ),
        (
            json!({"channel": "/meta/connect", "clientId": "$CID"}),
            connect_failure("402:connectionType:Missing required parameter"),
        ),
        // Last assignment wins.
        (
            json!({"channel": "/meta/connect", "clientId": "fakeclientid", "connectionType": "flash"}),
            connect_failure("301:flash:Connection types not supported"),
        ),
        (
            json!({"channel": "/meta/connect", "clientId": "fakeclientid"}),
            connect_failure("402:connectionType:Missing required parameter"),
        ),
        (
            json!({"channel": "/meta/connect"}),
            connect_failure("402:connectionType:Missing required parameter"),
        ),
    ];
    check_table(&srv, &cid, "/meta/connect errors", &cases).await;
}

#[tokio::test]
async fn disconnect_errors_match_fayes_replies_without_advice() {
    let srv = Server::start(1).await;
    let cases = [
        (
            json!({"channel": "/meta/disconnect", "clientId": "fakeclientid", "id": "d"}),
            json!({"id": "d", "channel": "/meta/disconnect", "successful": false,
                   "error": "401:fakeclientid:Unknown client"}),
        ),
        (
            json!({"channel": "/meta/disconnect"}),
            json!({"channel": "/meta/disconnect", "successful": false,
                   "error": "402:clientId:Missing required parameter"}),
        ),
    ];
    check_table(&srv, "", "/meta/disconnect errors", &cases).await;
}

/// §1.7 subscribe/unsubscribe failures (identical logic for both channels):
/// `clientId` kept when sent, `subscription` echoed raw or `[]`, no advice.
fn subscription_error_cases(channel: &str) -> Vec<(Value, Value)> {
    let fail = |cid: Option<&str>, subscription: Value, error: &str| {
        let mut v = json!({
            "channel": channel,
            "successful": false,
            "error": error,
            "subscription": subscription,
        });
        if let Some(c) = cid {
            v = with(v, "clientId", json!(c));
        }
        v
    };
    let req = |fields: Value| with(fields, "channel", json!(channel));
    vec![
        (
            req(json!({"clientId": "fakeclientid", "subscription": "/foo", "id": "s1"})),
            with(
                fail(Some("fakeclientid"), json!("/foo"), "401:fakeclientid:Unknown client"),
                "id",
                json!("s1"),
            ),
        ),
        (
            req(json!({"subscription": "/foo"})),
            fail(None, json!("/foo"), "402:clientId:Missing required parameter"),
        ),
        (
            req(json!({"clientId": "$CID"})),
            fail(Some("$CID"), json!([]), "402:subscription:Missing required parameter"),
        ),
        (
            req(json!({"clientId": "$CID", "subscription": ""})),
            fail(Some("$CID"), json!([]), "402:subscription:Missing required parameter"),
        ),
        // Unknown client and no subscription: the last assignment wins.
        (
            req(json!({"clientId": "fakeclientid"})),
            fail(Some("fakeclientid"), json!([]), "402:subscription:Missing required parameter"),
        ),
        // Unknown client with a bad channel: the walk never starts.
        (
            req(json!({"clientId": "fakeclientid", "subscription": "foo"})),
            fail(Some("fakeclientid"), json!("foo"), "401:fakeclientid:Unknown client"),
        ),
        (
            req(json!({"clientId": "$CID", "subscription": "/meta/foo"})),
            fail(Some("$CID"), json!("/meta/foo"), "403:/meta/foo:Forbidden channel"),
        ),
        (
            req(json!({"clientId": "$CID", "subscription": "/meta/*"})),
            fail(Some("$CID"), json!("/meta/*"), "403:/meta/*:Forbidden channel"),
        ),
        (
            req(json!({"clientId": "$CID", "subscription": "/service/x"})),
            fail(Some("$CID"), json!("/service/x"), "403:/service/x:Forbidden channel"),
        ),
        (
            req(json!({"clientId": "$CID", "subscription": "/service/**"})),
            fail(Some("$CID"), json!("/service/**"), "403:/service/**:Forbidden channel"),
        ),
        (
            req(json!({"clientId": "$CID", "subscription": "foo"})),
            fail(Some("$CID"), json!("foo"), "405:foo:Invalid channel"),
        ),
        (
            req(json!({"clientId": "$CID", "subscription": "/foo/"})),
            fail(Some("$CID"), json!("/foo/"), "405:/foo/:Invalid channel"),
        ),
        (
            req(json!({"clientId": "$CID", "subscription": "/foo/**/*"})),
            fail(Some("$CID"), json!("/foo/**/*"), "405:/foo/**/*:Invalid channel"),
        ),
        (
            req(json!({"clientId": "$CID", "subscription": "/foo*"})),
            fail(Some("$CID"), json!("/foo*"), "405:/foo*:Invalid channel"),
        ),
        (
            req(json!({"clientId": "$CID", "subscription": "/fo o"})),
            fail(Some("$CID"), json!("/fo o"), "405:/fo o:Invalid channel"),
        ),
        (
            req(json!({"clientId": "$CID", "subscription": ["/a", "foo", "/b"]})),
            fail(Some("$CID"), json!(["/a", "foo", "/b"]), "405:foo:Invalid channel"),
        ),
        (
            req(json!({"clientId": "$CID", "subscription": ["/a", "/meta/x", "/b"]})),
            fail(Some("$CID"), json!(["/a", "/meta/x", "/b"]), "403:/meta/x:Forbidden channel"),
        ),
    ]
}

#[tokio::test]
async fn subscribe_errors_match_fayes_replies_and_keep_the_client_id() {
    let srv = Server::start(1).await;
    let cid = srv.handshake().await;
    let cases = subscription_error_cases("/meta/subscribe");
    check_table(&srv, &cid, "/meta/subscribe errors", &cases).await;
}

#[tokio::test]
async fn unsubscribe_errors_match_fayes_replies_and_keep_the_client_id() {
    let srv = Server::start(1).await;
    let cid = srv.handshake().await;
    let cases = subscription_error_cases("/meta/unsubscribe");
    check_table(&srv, &cid, "/meta/unsubscribe errors", &cases).await;
}

#[tokio::test]
async fn unknown_meta_channels_are_forbidden_without_advice() {
    let srv = Server::start(1).await;
    let cid = srv.handshake().await;
    let forbidden = |channel: &str| {
        json!({
            "channel": channel,
            "successful": false,
            "error": format!("403:{channel}:Forbidden channel"),
        })
    };
    // §1.6: exact matching of the five meta channels; anything else under
    // /meta gets 403 (id and clientId echoed when present, no advice).
    let cases = [
        (
            json!({"channel": "/meta/foo", "id": "3", "clientId": "xyz"}),
            with(with(forbidden("/meta/foo"), "id", json!("3")), "clientId", json!("xyz")),
        ),
        (
            json!({"channel": "/meta/subscribe/x", "clientId": "$CID", "subscription": "/foo"}),
            with(forbidden("/meta/subscribe/x"), "clientId", json!("$CID")),
        ),
        (json!({"channel": "/meta"}), forbidden("/meta")),
        (json!({"channel": "/meta/p", "data": "x"}), forbidden("/meta/p")),
        (json!({"channel": "/meta/*", "data": 1}), forbidden("/meta/*")),
        (json!({"channel": "/meta/**", "data": 1}), forbidden("/meta/**")),
        (
            json!({"channel": "/meta/Handshake", "version": "1.0",
                   "supportedConnectionTypes": ["long-polling"]}),
            forbidden("/meta/Handshake"),
        ),
        (
            json!({"channel": "/meta/connect/x", "clientId": "$CID",
                   "connectionType": "long-polling"}),
            with(forbidden("/meta/connect/x"), "clientId", json!("$CID")),
        ),
        // Not a valid channel name, so not meta at all: a publish, 405 (§1.2, §1.8).
        (
            json!({"channel": "/meta/connect/", "clientId": "$CID", "data": 1}),
            json!({"clientId": "$CID", "channel": "/meta/connect/", "successful": false,
                   "error": "405:/meta/connect/:Invalid channel"}),
        ),
    ];
    check_table(&srv, &cid, "unknown /meta channels", &cases).await;
}

#[tokio::test]
async fn meta_subscribe_with_extra_segments_subscribes_nothing() {
    // CVE-2020-11020 regression (§8): /meta/subscribe/x must not act as /meta/subscribe.
    let srv = Server::start(1).await;
    let cid = srv.handshake().await;
    let reply = srv
        .bayeux(&json!({"channel": "/meta/subscribe/x", "clientId": cid, "subscription": "/foo"}))
        .await;
    assert_eq!(reply[0]["error"], json!("403:/meta/subscribe/x:Forbidden channel"));
    srv.publish("/foo", json!("leak")).await;
    assert_eq!(srv.connect_now(&cid).await, json!([srv.connect_ok(&cid)]));
}

#[tokio::test]
async fn an_error_field_sent_by_the_client_fails_the_message_verbatim() {
    // §1.5: `error` is copied from the request into the reply; like an
    // extension error (§1.7, §1.8 check 1) it fails the message and the
    // operation is not performed.
    let srv = Server::start(2).await;
    let cid = srv.handshake().await;
    srv.subscribe(&cid, json!("/watch")).await;
    let cases = [
        (
            json!({"channel": "/watch", "data": 1, "error": "boom", "id": "e1"}),
            json!({"id": "e1", "channel": "/watch", "successful": false, "error": "boom"}),
        ),
        (
            json!({"channel": "/meta/subscribe", "clientId": "$CID", "subscription": "/other",
                   "error": "no"}),
            json!({"clientId": "$CID", "channel": "/meta/subscribe", "successful": false,
                   "error": "no", "subscription": "/other"}),
        ),
        (
            json!({"channel": "/meta/handshake", "version": "1.0",
                   "supportedConnectionTypes": ["long-polling"],
                   "error": "403::Authentication required"}),
            handshake_failure("403::Authentication required"),
        ),
        (
            json!({"channel": "/meta/connect", "clientId": "$CID",
                   "connectionType": "long-polling", "error": "nope"}),
            connect_failure("nope"),
        ),
        (
            json!({"channel": "/meta/disconnect", "clientId": "$CID", "error": "stay"}),
            json!({"channel": "/meta/disconnect", "successful": false, "error": "stay"}),
        ),
        // A later validation error replaces it (the last assignment wins).
        (
            json!({"channel": "/meta/subscribe", "clientId": "$CID", "error": "first"}),
            json!({"clientId": "$CID", "channel": "/meta/subscribe", "successful": false,
                   "error": "402:subscription:Missing required parameter", "subscription": []}),
        ),
    ];
    check_table(&srv, &cid, "client-supplied error", &cases).await;
    // Not published, not subscribed, not disconnected.
    srv.publish("/other", json!("x")).await;
    assert_eq!(srv.connect_now(&cid).await, json!([srv.connect_ok(&cid)]));
}

// ---------------------------------------------------------------------------
// Publishing
// ---------------------------------------------------------------------------

#[tokio::test]
async fn invalid_publishes_match_fayes_replies() {
    let srv = Server::start(1).await;
    let cases = [
        // §1.6 observed: no channel key at all.
        (json!({}), json!({"successful": false, "error": "402:data:Missing required parameter"})),
        (json!({"data": 1}), json!({"successful": false, "error": "405::Invalid channel"})),
        (
            json!({"channel": "/foo/*", "data": 1, "id": "p"}),
            json!({"id": "p", "channel": "/foo/*", "successful": false,
                   "error": "405:/foo/*:Invalid channel"}),
        ),
        (
            json!({"channel": "/foo/**", "data": 1}),
            json!({"channel": "/foo/**", "successful": false,
                   "error": "405:/foo/**:Invalid channel"}),
        ),
        (
            json!({"channel": "/**", "data": 1}),
            json!({"channel": "/**", "successful": false, "error": "405:/**:Invalid channel"}),
        ),
        (
            json!({"channel": "foo", "data": 1, "clientId": "whatever"}),
            json!({"clientId": "whatever", "channel": "foo", "successful": false,
                   "error": "405:foo:Invalid channel"}),
        ),
        (
            json!({"channel": "/foo/", "data": 1}),
            json!({"channel": "/foo/", "successful": false, "error": "405:/foo/:Invalid channel"}),
        ),
        (
            json!({"channel": "/foo.bar", "data": 1}),
            json!({"channel": "/foo.bar", "successful": false,
                   "error": "405:/foo.bar:Invalid channel"}),
        ),
        // §1.8 check 3.
        (
            json!({"channel": "/foo"}),
            json!({"channel": "/foo", "successful": false,
                   "error": "402:data:Missing required parameter"}),
        ),
        // Invalid channel and no data: the data check runs last and wins.
        (
            json!({"channel": "/foo/*"}),
            json!({"channel": "/foo/*", "successful": false,
                   "error": "402:data:Missing required parameter"}),
        ),
    ];
    check_table(&srv, "", "publish errors", &cases).await;
}

#[tokio::test]
async fn valid_publishes_get_the_short_success_reply_without_a_handshake() {
    let srv = Server::start(1).await;
    // §1.8: {id?, clientId?, channel, successful}; no handshake needed,
    // clientId not validated, ext not echoed (§1.12).
    let cases = [
        (
            json!({"channel": "/foo", "data": "x", "id": "p1", "clientId": "whatever"}),
            json!({"id": "p1", "clientId": "whatever", "channel": "/foo", "successful": true}),
        ),
        (json!({"channel": "/foo", "data": null}), json!({"channel": "/foo", "successful": true})),
        (
            json!({"channel": "/service/echo", "data": {"a": 1}}),
            json!({"channel": "/service/echo", "successful": true}),
        ),
        (
            json!({"channel": "/fo_o/$@()bar", "data": 1}),
            json!({"channel": "/fo_o/$@()bar", "successful": true}),
        ),
        (
            json!({"channel": "/foo", "data": 1, "ext": {"k": 1}, "id": 0, "extra": true}),
            json!({"channel": "/foo", "successful": true}),
        ),
        (
            json!({"channel": "/foo", "data": [], "id": 42}),
            json!({"id": 42, "channel": "/foo", "successful": true}),
        ),
    ];
    check_table(&srv, "", "publish successes", &cases).await;
}

// ---------------------------------------------------------------------------
// Subscribing
// ---------------------------------------------------------------------------

#[tokio::test]
async fn subscribing_to_names_patterns_and_arrays_succeeds() {
    let srv = Server::start(1).await;
    let cid = srv.handshake().await;
    let ok = |channel: &str, subscription: Value| {
        json!({"clientId": "$CID", "channel": channel, "successful": true,
               "subscription": subscription})
    };
    let cases = [
        // §1.7 observed success.
        (
            json!({"channel": "/meta/subscribe", "clientId": "$CID",
                   "subscription": ["/foo", "/bar/*"], "id": "2"}),
            with(ok("/meta/subscribe", json!(["/foo", "/bar/*"])), "id", json!("2")),
        ),
        (
            json!({"channel": "/meta/subscribe", "clientId": "$CID", "subscription": "/foo/**"}),
            ok("/meta/subscribe", json!("/foo/**")),
        ),
        (
            json!({"channel": "/meta/subscribe", "clientId": "$CID", "subscription": "/**"}),
            ok("/meta/subscribe", json!("/**")),
        ),
        (
            json!({"channel": "/meta/subscribe", "clientId": "$CID", "subscription": "/*"}),
            ok("/meta/subscribe", json!("/*")),
        ),
        (
            json!({"channel": "/meta/subscribe", "clientId": "$CID", "subscription": []}),
            ok("/meta/subscribe", json!([])),
        ),
        // ext is not copied into meta replies (§1.12).
        (
            json!({"channel": "/meta/subscribe", "clientId": "$CID", "subscription": "/e",
                   "ext": {"auth": "t"}}),
            ok("/meta/subscribe", json!("/e")),
        ),
        // Subscribing twice is fine.
        (
            json!({"channel": "/meta/subscribe", "clientId": "$CID", "subscription": "/foo"}),
            ok("/meta/subscribe", json!("/foo")),
        ),
        (
            json!({"channel": "/meta/unsubscribe", "clientId": "$CID", "subscription": "/foo"}),
            ok("/meta/unsubscribe", json!("/foo")),
        ),
        // Unsubscribing from something never subscribed still succeeds.
        (
            json!({"channel": "/meta/unsubscribe", "clientId": "$CID",
                   "subscription": ["/never", "/x/*"], "id": 5}),
            with(ok("/meta/unsubscribe", json!(["/never", "/x/*"])), "id", json!(5)),
        ),
    ];
    check_table(&srv, &cid, "subscribe/unsubscribe successes", &cases).await;
}

#[tokio::test]
async fn a_subscribe_walk_stops_at_the_first_bad_channel_keeping_earlier_ones() {
    let srv = Server::start(2).await;
    let cid = srv.handshake().await;
    let reply = srv
        .bayeux(&json!({"channel": "/meta/subscribe", "clientId": cid,
                        "subscription": ["/a", "foo", "/b"]}))
        .await;
    assert_eq!(
        reply,
        json!([{"clientId": cid, "channel": "/meta/subscribe", "successful": false,
                "error": "405:foo:Invalid channel", "subscription": ["/a", "foo", "/b"]}])
    );
    srv.publish("/a", json!("to a")).await;
    srv.publish("/b", json!("to b")).await;
    // §1.7: /a was subscribed before the walk stopped; /b never was.
    assert_eq!(
        srv.connect_now(&cid).await,
        json!([srv.connect_ok(&cid), {"channel": "/a", "data": "to a"}])
    );
}

#[tokio::test]
async fn an_unsubscribe_walk_stops_at_the_first_bad_channel_keeping_earlier_ones() {
    let srv = Server::start(2).await;
    let cid = srv.handshake().await;
    srv.subscribe(&cid, json!(["/a", "/b"])).await;
    let reply = srv
        .bayeux(&json!({"channel": "/meta/unsubscribe", "clientId": cid,
                        "subscription": ["/a", "/service/x", "/b"]}))
        .await;
    assert_eq!(
        reply,
        json!([{"clientId": cid, "channel": "/meta/unsubscribe", "successful": false,
                "error": "403:/service/x:Forbidden channel",
                "subscription": ["/a", "/service/x", "/b"]}])
    );
    srv.publish("/a", json!("to a")).await;
    srv.publish("/b", json!("to b")).await;
    assert_eq!(
        srv.connect_now(&cid).await,
        json!([srv.connect_ok(&cid), {"channel": "/b", "data": "to b"}])
    );
}

#[tokio::test]
async fn unsubscribing_stops_deliveries() {
    let srv = Server::start(2).await;
    let cid = srv.handshake().await;
    srv.subscribe(&cid, json!("/u")).await;
    let reply = srv
        .bayeux(&json!({"channel": "/meta/unsubscribe", "clientId": cid, "subscription": "/u"}))
        .await;
    assert_eq!(
        reply,
        json!([{"clientId": cid, "channel": "/meta/unsubscribe", "successful": true,
                "subscription": "/u"}])
    );
    srv.publish("/u", json!(1)).await;
    assert_eq!(srv.connect_now(&cid).await, json!([srv.connect_ok(&cid)]));
}

// ---------------------------------------------------------------------------
// Delivery and /meta/connect
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_connect_returns_queued_messages_at_once_after_its_reply() {
    let srv = Server::start(2).await;
    let cid = srv.handshake().await;
    srv.subscribe(&cid, json!("/q")).await;
    srv.publish_message(json!({"channel": "/q", "data": {"n": 1}, "id": "m1"})).await;
    srv.publish_message(json!({"channel": "/q", "data": {"n": 2}, "id": "m2"})).await;
    let (reply, took) = srv.connect_with(&cid, json!({"id": "c1"})).await;
    assert_eq!(
        reply,
        json!([
            with(srv.connect_ok(&cid), "id", json!("c1")),
            {"channel": "/q", "data": {"n": 1}, "id": "m1"},
            {"channel": "/q", "data": {"n": 2}, "id": "m2"},
        ])
    );
    assert!(took < Duration::from_millis(1500), "a connect with queued messages took {took:?}");
}

#[tokio::test]
async fn a_held_connect_is_woken_by_a_publish_from_another_request() {
    let srv = Server::start(3).await;
    let cid = srv.handshake().await;
    srv.subscribe(&cid, json!("/w")).await;
    let ((reply, took), ()) = tokio::join!(srv.connect_with(&cid, json!({})), async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        srv.publish_message(json!({"channel": "/w", "data": "wake", "id": "w1"})).await;
    });
    assert_eq!(reply, json!([srv.connect_ok(&cid), {"channel": "/w", "data": "wake", "id": "w1"}]));
    assert!(
        took >= Duration::from_millis(300),
        "the connect returned before anything was published ({took:?})"
    );
    assert!(
        took < Duration::from_millis(2000),
        "the connect was not woken by the publish ({took:?}, timeout 3 s)"
    );
}

#[tokio::test]
async fn a_connect_with_advice_timeout_zero_returns_immediately() {
    let srv = Server::start(3).await;
    let cid = srv.handshake().await;
    srv.subscribe(&cid, json!("/z")).await;
    let (reply, took) = srv.connect_with(&cid, json!({"advice": {"timeout": 0}, "id": "z"})).await;
    // §1.9: the advice reflects the server's timeout, not the client's request.
    assert_eq!(reply, json!([with(srv.connect_ok(&cid), "id", json!("z"))]));
    assert!(took < Duration::from_millis(1000), "took {took:?}");
}

#[tokio::test]
async fn an_eventsource_connect_returns_at_once_with_eventsource_advice() {
    // §1.7 connect, §1.9: eventsource forces timeout 0; the advice becomes
    // {interval: T*1000, timeout: 0} (observed in §4.6).
    let srv = Server::start(2).await;
    let cid = srv.handshake().await;
    let (reply, took) =
        srv.connect_with(&cid, json!({"connectionType": "eventsource", "id": "es"})).await;
    assert_eq!(
        reply,
        json!([{"id": "es", "clientId": cid, "channel": "/meta/connect", "successful": true,
                "advice": {"reconnect": "retry", "interval": 2000, "timeout": 0}}])
    );
    assert!(took < Duration::from_millis(1000), "took {took:?}");
}

#[tokio::test]
async fn every_long_polling_connection_type_gets_the_normal_connect_reply() {
    let srv = Server::start(1).await;
    let cid = srv.handshake().await;
    for connection_type in ["long-polling", "cross-origin-long-polling", "callback-polling"] {
        let (reply, _) = srv
            .connect_with(
                &cid,
                json!({"connectionType": connection_type, "advice": {"timeout": 0}}),
            )
            .await;
        assert_eq!(reply, json!([srv.connect_ok(&cid)]), "{connection_type}");
    }
}

#[tokio::test]
async fn an_idle_connect_is_held_for_the_server_timeout() {
    let srv = Server::start(1).await;
    let cid = srv.handshake().await;
    let (reply, took) = srv.connect_with(&cid, json!({})).await;
    assert_eq!(reply, json!([srv.connect_ok(&cid)]));
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_millis(2500),
        "held {took:?} with a 1 s timeout"
    );
}

#[tokio::test]
async fn a_requested_hold_longer_than_the_server_timeout_is_capped() {
    // Deviation: the hold is capped at the server timeout (§1.10, §10 item 2).
    let srv = Server::start(1).await;
    let cid = srv.handshake().await;
    let (reply, took) = srv.connect_with(&cid, json!({"advice": {"timeout": 10000}})).await;
    assert_eq!(reply, json!([srv.connect_ok(&cid)]));
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_millis(2500),
        "held {took:?}; the cap is 1 s"
    );
    // The session survived the capped hold.
    assert_eq!(srv.connect_now(&cid).await, json!([srv.connect_ok(&cid)]));
}

#[tokio::test]
async fn a_second_connect_answers_the_held_one_at_once() {
    // Deviation (§1.10, §10 item 3): the earlier connect is answered with
    // successful:true and no messages instead of being orphaned.
    let srv = Server::start(3).await;
    let cid = srv.handshake().await;
    srv.subscribe(&cid, json!("/e")).await;
    let started = Instant::now();
    let (first, second, ()) = tokio::join!(
        async {
            let (reply, _) = srv.connect_with(&cid, json!({"id": "first"})).await;
            (reply, started.elapsed())
        },
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (reply, _) = srv.connect_with(&cid, json!({"id": "second"})).await;
            (reply, started.elapsed())
        },
        async {
            tokio::time::sleep(Duration::from_millis(1300)).await;
            srv.publish_message(json!({"channel": "/e", "data": "late"})).await;
        },
    );
    let (first, first_at) = first;
    let (second, second_at) = second;
    let replies = first.as_array().expect("array");
    assert_eq!(replies.len(), 1, "the earlier connect got messages: {first}");
    assert_eq!(replies[0]["id"], json!("first"), "{first}");
    assert_eq!(replies[0]["clientId"], json!(cid), "{first}");
    assert_eq!(replies[0]["channel"], json!("/meta/connect"), "{first}");
    assert_eq!(replies[0]["successful"], json!(true), "{first}");
    assert!(
        first_at < Duration::from_millis(1000),
        "the earlier connect was answered only at {first_at:?}"
    );
    // The newer connect is the live one: the later publish wakes it.
    assert_eq!(
        second,
        json!([with(srv.connect_ok(&cid), "id", json!("second")),
               {"channel": "/e", "data": "late"}])
    );
    assert!(second_at < Duration::from_millis(2600), "second answered at {second_at:?}");
}

#[tokio::test]
async fn a_client_receives_a_message_once_even_when_several_subscriptions_match() {
    let srv = Server::start(2).await;
    let cid = srv.handshake().await;
    let other = srv.handshake().await;
    srv.subscribe(&cid, json!(["/a/b", "/a/*", "/a/**", "/**"])).await;
    srv.subscribe(&other, json!("/a/b")).await;
    srv.publish_message(json!({"channel": "/a/b", "data": 1, "id": "m1"})).await;
    srv.publish_message(json!({"channel": "/a/b/c", "data": 2, "id": "m2"})).await;
    srv.publish_message(json!({"channel": "/a", "data": 3, "id": "m3"})).await;
    srv.publish_message(json!({"channel": "/z", "data": 4, "id": "m4"})).await;
    assert_eq!(
        srv.connect_now(&cid).await,
        json!([
            srv.connect_ok(&cid),
            {"channel": "/a/b", "data": 1, "id": "m1"},
            {"channel": "/a/b/c", "data": 2, "id": "m2"},
            {"channel": "/a", "data": 3, "id": "m3"},
            {"channel": "/z", "data": 4, "id": "m4"},
        ])
    );
    assert_eq!(
        srv.connect_now(&other).await,
        json!([srv.connect_ok(&other), {"channel": "/a/b", "data": 1, "id": "m1"}])
    );
}

#[tokio::test]
async fn wildcards_route_one_segment_or_the_whole_tail() {
    let srv = Server::start(2).await;
    let star = srv.handshake().await;
    let globstar = srv.handshake().await;
    srv.subscribe(&star, json!("/w/*")).await;
    srv.subscribe(&globstar, json!("/w/**")).await;
    for channel in ["/w", "/w/a", "/w/a/b", "/wx/a"] {
        srv.publish(channel, json!(channel)).await;
    }
    // §1.2: * is exactly one segment; ** is one or more, never the parent.
    assert_eq!(
        srv.connect_now(&star).await,
        json!([srv.connect_ok(&star), {"channel": "/w/a", "data": "/w/a"}])
    );
    assert_eq!(
        srv.connect_now(&globstar).await,
        json!([
            srv.connect_ok(&globstar),
            {"channel": "/w/a", "data": "/w/a"},
            {"channel": "/w/a/b", "data": "/w/a/b"},
        ])
    );
}

#[tokio::test]
async fn delivered_messages_lose_client_id_advice_and_successful_and_keep_the_rest() {
    let srv = Server::start(2).await;
    let cid = srv.handshake().await;
    srv.subscribe(&cid, json!("/x/*")).await;
    let data = json!({"n": 1, "s": "h\u{e9}llo \u{2713} \u{1F600} \u{2028}",
                      "list": [1, "two", null, true, 1.5, {"deep": []}]});
    // §1.8 observed publish (with multibyte data).
    let published = json!({
        "channel": "/x/y", "data": data, "id": "p1", "clientId": "whatever",
        "ext": {"a": 1}, "advice": {"reconnect": "none"}, "successful": true,
        "extra": "kept",
    });
    let reply = srv.bayeux(&published).await;
    assert_eq!(
        reply,
        json!([{"id": "p1", "clientId": "whatever", "channel": "/x/y", "successful": true}])
    );
    // clientId stripped (Faye); advice and successful stripped (deviation).
    assert_eq!(
        srv.connect_now(&cid).await,
        json!([
            srv.connect_ok(&cid),
            {"channel": "/x/y", "data": data, "id": "p1", "ext": {"a": 1}, "extra": "kept"},
        ])
    );
}

#[tokio::test]
async fn service_channel_publishes_reach_catch_all_subscribers() {
    // §1.8 observed: /service/echo is routed to /** subscribers.
    let srv = Server::start(2).await;
    let cid = srv.handshake().await;
    srv.subscribe(&cid, json!("/**")).await;
    srv.publish("/service/echo", json!({"q": 1})).await;
    assert_eq!(
        srv.connect_now(&cid).await,
        json!([srv.connect_ok(&cid), {"channel": "/service/echo", "data": {"q": 1}}])
    );
}

#[tokio::test]
async fn after_a_disconnect_the_client_is_unknown() {
    let srv = Server::start(2).await;
    let cid = srv.handshake().await;
    srv.subscribe(&cid, json!("/d")).await;
    let reply =
        srv.bayeux(&json!({"channel": "/meta/disconnect", "clientId": cid, "id": "d1"})).await;
    // §1.7 disconnect success: no advice.
    assert_eq!(
        reply,
        json!([{"id": "d1", "clientId": cid, "channel": "/meta/disconnect", "successful": true}])
    );
    let unknown = format!("401:{cid}:Unknown client");
    assert_eq!(
        srv.connect_now(&cid).await,
        json!([{"channel": "/meta/connect", "successful": false, "error": unknown,
                "advice": {"reconnect": "handshake"}}])
    );
    assert_eq!(
        srv.bayeux(&json!({"channel": "/meta/subscribe", "clientId": cid, "subscription": "/d"}))
            .await,
        json!([{"clientId": cid, "channel": "/meta/subscribe", "successful": false,
                "error": unknown, "subscription": "/d"}])
    );
    assert_eq!(
        srv.bayeux(&json!({"channel": "/meta/disconnect", "clientId": cid})).await,
        json!([{"channel": "/meta/disconnect", "successful": false, "error": unknown}])
    );
}

#[tokio::test]
async fn a_disconnect_releases_the_clients_held_connect() {
    // §1.7 disconnect: the engine's close flushes the held connect.
    let srv = Server::start(3).await;
    let cid = srv.handshake().await;
    let ((reply, took), disconnect) = tokio::join!(srv.connect_with(&cid, json!({})), async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        srv.bayeux(&json!({"channel": "/meta/disconnect", "clientId": cid})).await
    });
    assert_eq!(
        disconnect,
        json!([{"clientId": cid, "channel": "/meta/disconnect", "successful": true}])
    );
    assert_eq!(reply, json!([srv.connect_ok(&cid)]));
    assert!(took < Duration::from_millis(2000), "held connect released only after {took:?}");
}

#[tokio::test]
async fn clients_expire_after_twice_the_timeout_unless_they_connect() {
    // §2.3 memory engine: a 2·T timer armed at handshake and at each connect.
    let srv = Server::start(1).await;
    let idle = srv.handshake().await;
    let active = srv.handshake().await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(srv.connect_now(&active).await, json!([srv.connect_ok(&active)]));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        srv.connect_now(&idle).await,
        json!([connect_failure(&format!("401:{idle}:Unknown client"))])
    );
    assert_eq!(srv.connect_now(&active).await, json!([srv.connect_ok(&active)]));
}

// ---------------------------------------------------------------------------
// Batches
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_batch_with_a_connect_is_answered_in_one_array_when_the_connect_completes() {
    // §1.4: one array per request; the subscribe takes effect immediately, the
    // reply waits for the connect, which is followed by its messages.
    let srv = Server::start(3).await;
    let cid = srv.handshake().await;
    let batch = json!([
        {"channel": "/meta/subscribe", "clientId": cid, "subscription": "/b", "id": "s"},
        {"channel": "/meta/connect", "clientId": cid, "connectionType": "long-polling",
         "id": "c"},
    ]);
    let started = Instant::now();
    let (reply, ()) = tokio::join!(srv.bayeux(&batch), async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        srv.publish_message(json!({"channel": "/b", "data": "in batch", "id": "m"})).await;
    });
    let took = started.elapsed();
    assert_eq!(
        reply,
        json!([
            {"id": "s", "clientId": cid, "channel": "/meta/subscribe", "successful": true,
             "subscription": "/b"},
            with(srv.connect_ok(&cid), "id", json!("c")),
            {"channel": "/b", "data": "in batch", "id": "m"},
        ])
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(2500),
        "took {took:?}"
    );
}

#[tokio::test]
async fn a_batch_gets_one_reply_per_message_in_one_array() {
    let srv = Server::start(1).await;
    let reply = srv
        .bayeux(&json!([
            {"channel": "/meta/handshake", "version": "1.0",
             "supportedConnectionTypes": ["long-polling"], "id": 1},
            {"channel": "/p", "data": 1, "id": 2},
            {"channel": "/meta/nope", "id": 3},
            {"channel": "/meta/disconnect", "clientId": "fakeclientid", "id": 4},
        ]))
        .await;
    assert_eq!(
        redact(&reply),
        json!([
            {"id": 1, "channel": "/meta/handshake", "successful": true, "version": "1.0",
             "supportedConnectionTypes": connection_types(), "clientId": "[clientId]",
             "advice": retry_advice(1)},
            {"id": 2, "channel": "/p", "successful": true},
            {"id": 3, "channel": "/meta/nope", "successful": false,
             "error": "403:/meta/nope:Forbidden channel"},
            {"id": 4, "channel": "/meta/disconnect", "successful": false,
             "error": "401:fakeclientid:Unknown client"},
        ])
    );
}

#[tokio::test]
async fn falsy_entries_in_a_batch_get_no_reply() {
    // §1.4 step 3: a falsy message yields no reply at all.
    let srv = Server::start(1).await;
    let reply =
        srv.bayeux(&json!([null, {"channel": "/p", "data": 1, "id": "x"}, false, 0, ""])).await;
    assert_eq!(reply, json!([{"id": "x", "channel": "/p", "successful": true}]));
}

#[tokio::test]
async fn an_empty_batch_or_a_top_level_null_gets_an_empty_array() {
    let srv = Server::start(1).await;
    for body in ["[]", "null"] {
        let res = srv.post_raw("application/json", body.as_bytes()).await;
        assert_eq!(res.status, 200, "{body}: {:?}", res.text());
        assert_eq!(res.json(), json!([]), "{body}");
    }
    let res =
        srv.post_raw("text/plain", format!("message={}", form_encode("null")).as_bytes()).await;
    assert_eq!(res.status, 200, "form null: {:?}", res.text());
    assert_eq!(res.json(), json!([]));
}

// ---------------------------------------------------------------------------
// HTTP surface (§4.3, §4.4, §4.8)
// ---------------------------------------------------------------------------

fn handshake_json() -> String {
    json!({"channel": "/meta/handshake", "version": "1.0",
           "supportedConnectionTypes": ["long-polling"], "id": "f"})
    .to_string()
}

fn assert_handshake_ok(res: &Response, what: &str) {
    assert_eq!(res.status, 200, "{what}: {} {:?}", res.status, res.text());
    assert_eq!(res.header("content-type"), Some("application/json; charset=utf-8"), "{what}");
    assert_eq!(
        redact(&res.json()),
        json!([{"id": "f", "channel": "/meta/handshake", "successful": true, "version": "1.0",
                "supportedConnectionTypes": connection_types(), "clientId": "[clientId]",
                "advice": retry_advice(1)}]),
        "{what}"
    );
}

#[tokio::test]
async fn form_encoded_message_bodies_are_accepted_whatever_the_content_type() {
    let srv = Server::start(1).await;
    let form = format!("message={}", form_encode(&handshake_json()));
    for content_type in [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/xml",
        "application/x-www-form-urlencoded",
    ] {
        let res = srv.post_raw(content_type, form.as_bytes()).await;
        assert_handshake_ok(&res, content_type);
    }
    // No Content-Type at all (node_adapter_spec, §7).
    let res = srv.request("POST", "/bayeux", &[], form.as_bytes()).await;
    assert_handshake_ok(&res, "no content type");
    // Other parameters next to message are ignored.
    let res = srv.post_raw("text/plain", format!("foo=bar&{form}&baz=1").as_bytes()).await;
    assert_handshake_ok(&res, "extra form parameters");
}

#[tokio::test]
async fn any_path_under_the_mount_is_a_bayeux_endpoint() {
    // §4.2: the mount regex matches /bayeux, /bayeux/ and /bayeux/a/b.
    let srv = Server::start(1).await;
    for path in ["/bayeux/", "/bayeux/a/b", "/bayeux?x=1"] {
        let res = srv
            .request(
                "POST",
                path,
                &[("Content-Type", "application/json")],
                handshake_json().as_bytes(),
            )
            .await;
        assert_handshake_ok(&res, path);
    }
}

#[tokio::test]
async fn form_values_are_url_decoded_before_parsing() {
    let srv = Server::start(1).await;
    let cid = srv.handshake().await;
    srv.subscribe(&cid, json!("/form")).await;
    let data = "a b+c&d=e%f \u{e9}\u{1F600}";
    let message = json!({"channel": "/form", "data": data}).to_string();
    let res =
        srv.post_raw("text/plain", format!("message={}", form_encode(&message)).as_bytes()).await;
    assert_eq!(res.status, 200, "{:?}", res.text());
    assert_eq!(res.json(), json!([{"channel": "/form", "successful": true}]));
    assert_eq!(
        srv.connect_now(&cid).await,
        json!([srv.connect_ok(&cid), {"channel": "/form", "data": data}])
    );
}

#[tokio::test]
async fn json_bodies_are_accepted_with_a_charset_parameter() {
    let srv = Server::start(1).await;
    for content_type in
        ["application/json", "application/json; charset=utf-8", "application/json;charset=UTF-8"]
    {
        let res = srv.post_raw(content_type, handshake_json().as_bytes()).await;
        assert_handshake_ok(&res, content_type);
    }
}

#[tokio::test]
async fn malformed_requests_get_400_bad_request() {
    let srv = Server::start(1).await;
    let json_ct = "application/json";
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("POST", json_ct, b"{".to_vec()),
        ("POST", json_ct, b"[{\"channel\":\"/meta/handshake\"}".to_vec()),
        ("POST", json_ct, b"".to_vec()),
        ("POST", json_ct, b"1".to_vec()),
        ("POST", json_ct, b"\"/meta/handshake\"".to_vec()),
        ("POST", json_ct, b"true".to_vec()),
        // A JSON content type means the body is JSON, not a form (§4.3 step 5).
        ("POST", json_ct, format!("message={}", form_encode("[]")).into_bytes()),
        // Invalid UTF-8 (contract; §1.14, §8).
        ("POST", json_ct, b"[{\"channel\":\"/a\",\"data\":\"\xff\xfe\"}]".to_vec()),
        // Forms without a message, or with bad JSON in it (§4.4 steps 1-2).
        ("POST", "text/plain", b"foo=bar".to_vec()),
        ("POST", "text/plain", b"".to_vec()),
        ("POST", "text/plain", format!("message={}", form_encode("{")).into_bytes()),
        ("POST", "text/plain", b"message=42".to_vec()),
        // Unsupported methods (§4.3 step 6, observed).
        ("PUT", json_ct, handshake_json().into_bytes()),
        ("DELETE", json_ct, handshake_json().into_bytes()),
    ];
    let mut failures = Vec::new();
    for (method, content_type, body) in &cases {
        let res = srv.request(method, "/bayeux", &[("Content-Type", content_type)], body).await;
        let ok = res.status == 400
            && res.header("content-type") == Some("text/plain; charset=utf-8")
            && res.body == b"Bad request";
        if !ok {
            failures.push(format!(
                "{method} {content_type} {:?}: got {} {:?} {:?}",
                String::from_utf8_lossy(body),
                res.status,
                res.header("content-type"),
                res.text()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "expected 400 text/plain \"Bad request\" (§4.3, §4.4, §4.8, contract):\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn invalid_utf8_in_a_form_body_gets_400() {
    // Contract: an invalid UTF-8 body is a 400, whatever the content type
    // (the Ruby server's rule, §1.14 and §8; JS Faye would decode lossily).
    let srv = Server::start(1).await;
    let mut failures = Vec::new();
    for body in [
        b"message={\"channel\":\"/a\",\"data\":\"\xff\"}".to_vec(),
        b"message=[{\"channel\":\"/a\",\"data\":\"\xc3\x28\"}]".to_vec(),
    ] {
        let res = srv.post_raw("text/plain", &body).await;
        if res.status != 400 || res.body != b"Bad request" {
            failures.push(format!(
                "{:?}: got {} {:?}",
                String::from_utf8_lossy(&body),
                res.status,
                res.text()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn an_invalid_jsonp_parameter_is_rejected_even_on_post() {
    // §4.4 step 3: the callback check runs for POST too.
    let srv = Server::start(1).await;
    let message = form_encode(&handshake_json());
    let res = srv.post_raw("text/plain", format!("jsonp=1bad&message={message}").as_bytes()).await;
    assert_eq!(res.status, 400, "{:?}", res.text());
    assert_eq!(res.text(), "Bad request");
    // A valid callback name does not change the POST reply.
    let res =
        srv.post_raw("text/plain", format!("jsonp=cb.x_1&message={message}").as_bytes()).await;
    assert_handshake_ok(&res, "valid jsonp on POST");
}

#[tokio::test]
async fn replies_carry_fayes_http_headers_and_are_200_even_when_unsuccessful() {
    let srv = Server::start(1).await;
    for body in [
        handshake_json(),
        json!({"channel": "/meta/connect", "clientId": "nobody", "connectionType": "long-polling"})
            .to_string(),
    ] {
        let res = srv.post_raw("application/json", body.as_bytes()).await;
        assert_eq!(res.status, 200, "{body}");
        assert_eq!(res.header("content-type"), Some("application/json; charset=utf-8"));
        assert_eq!(res.header("cache-control"), Some("no-cache, no-store"));
        assert_eq!(res.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(
            res.header("content-length"),
            Some(res.body.len().to_string().as_str()),
            "Content-Length is the UTF-8 byte length (§4.4)"
        );
        assert_eq!(res.header("access-control-allow-origin"), None, "no Origin sent");
        assert_eq!(res.header("access-control-allow-credentials"), None);
        assert!(res.json().is_array());
    }
}

#[tokio::test]
async fn an_origin_header_is_reflected_with_credentials() {
    let srv = Server::start(1).await;
    for origin in ["http://example.com", "https://evil.test:8443"] {
        let res = srv
            .request(
                "POST",
                "/bayeux",
                &[("Content-Type", "application/json"), ("Origin", origin)],
                handshake_json().as_bytes(),
            )
            .await;
        assert_handshake_ok(&res, origin);
        assert_eq!(res.headers_named("access-control-allow-origin"), vec![origin]);
        assert_eq!(res.header("access-control-allow-credentials"), Some("true"));
    }
}

#[tokio::test]
async fn bodies_over_the_request_limit_get_413() {
    let srv = Server::start_with(1, &["--max-request-bytes", "2000"]).await;
    let pad = |n: usize| json!({"channel": "/big", "data": "x".repeat(n)}).to_string();
    // At the limit exactly: fine.
    let base = pad(0).len();
    let exact = pad(2000 - base);
    assert_eq!(exact.len(), 2000);
    let res = srv.post_raw("application/json", exact.as_bytes()).await;
    assert_eq!(res.status, 200, "a body of exactly the limit: {:?}", res.text());
    // One byte over.
    let over = pad(2001 - base);
    let res = srv.post_raw("application/json", over.as_bytes()).await;
    assert_eq!(res.status, 413, "a body one byte over the limit: {:?}", res.text());
    // Under the limit: fine.
    let small = pad(1500);
    assert!(small.len() < 2000);
    let res = srv.post_raw("application/json", small.as_bytes()).await;
    assert_eq!(res.status, 200, "{:?}", res.text());
    assert_eq!(res.json(), json!([{"channel": "/big", "successful": true}]));
    // Over the limit, as JSON and as a form.
    for (content_type, body) in [
        ("application/json", pad(3000)),
        ("text/plain", format!("message={}", form_encode(&pad(3000)))),
    ] {
        let res = srv.post_raw(content_type, body.as_bytes()).await;
        assert_eq!(res.status, 413, "{content_type}: {:?}", res.text());
        assert!(
            res.header("content-type").is_some_and(|ct| ct.starts_with("text/plain")),
            "{:?}",
            res.header("content-type")
        );
        assert!(
            res.text().contains("2000"),
            "413 body does not mention the limit: {:?}",
            res.text()
        );
    }
    // The server is still healthy afterwards.
    let res = srv.post_raw("application/json", small.as_bytes()).await;
    assert_eq!(res.status, 200);
}

#[tokio::test]
async fn the_default_request_limit_is_one_mebibyte() {
    let srv = Server::start(1).await;
    let body = json!({"channel": "/big", "data": "y".repeat((1 << 20) + 10)}).to_string();
    let res = srv.post_raw("application/json", body.as_bytes()).await;
    assert_eq!(res.status, 413, "{:?}", res.text());
    assert!(res.text().contains("1048576"), "{:?}", res.text());
}

#[tokio::test]
async fn batches_over_the_message_limit_get_413() {
    let srv = Server::start_with(1, &["--max-batch", "7"]).await;
    let batch =
        |n: usize| Value::Array((0..n).map(|i| json!({"channel": "/many", "data": i})).collect());
    let res = srv.post_json(&batch(7)).await;
    assert_eq!(res.status, 200, "{:?}", res.text());
    assert_eq!(res.json().as_array().map(Vec::len), Some(7));
    let res = srv.post_json(&batch(8)).await;
    assert_eq!(res.status, 413, "{:?}", res.text());
    assert!(
        res.header("content-type").is_some_and(|ct| ct.starts_with("text/plain")),
        "{:?}",
        res.header("content-type")
    );
    assert_eq!(res.text(), "Payload too large: more than 7 messages in one request");
    // Nothing of the refused batch was published.
    let cid = srv.handshake().await;
    srv.subscribe(&cid, json!("/many")).await;
    let res = srv.post_json(&batch(8)).await;
    assert_eq!(res.status, 413);
    assert_eq!(srv.connect_now(&cid).await, json!([srv.connect_ok(&cid)]));
}
