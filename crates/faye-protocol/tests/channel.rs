//! Channel grammar and `expand`, checked against independent oracles.

use faye_protocol::channel::{
    Channel, ChannelKind, expand, is_meta, is_name, is_pattern, is_service, is_subscribable,
    is_valid,
};
use proptest::prelude::*;
use regex::Regex;

/// Faye's grammar (`src/protocol/grammar.js`), verbatim, as the oracle.
fn faye_name() -> Regex {
    Regex::new(r"^\/(((([a-z]|[A-Z])|[0-9])|(\-|\_|\!|\~|\(|\)|\$|\@)))+(\/(((([a-z]|[A-Z])|[0-9])|(\-|\_|\!|\~|\(|\)|\$|\@)))+)*$").unwrap()
}
fn faye_pattern() -> Regex {
    Regex::new(r"^(\/(((([a-z]|[A-Z])|[0-9])|(\-|\_|\!|\~|\(|\)|\$|\@)))+)*\/\*{1,2}$").unwrap()
}

/// The obvious segment-by-segment meaning of a subscription pattern.
fn naive_matches(pattern: &str, channel: &str) -> bool {
    let p: Vec<&str> = pattern[1..].split('/').collect();
    let c: Vec<&str> = channel[1..].split('/').collect();
    let (last, prefix) = p.split_last().unwrap();
    match *last {
        "**" => c.len() > prefix.len() && c[..prefix.len()] == *prefix,
        "*" => c.len() == p.len() && c[..prefix.len()] == *prefix,
        _ => p == c,
    }
}

#[test]
fn faye_grammar_examples() {
    for ok in ["/fo_o/$@()bar", "/foo", "/a/b/c", "/-_!~()$@/Z9"] {
        assert!(is_name(ok) && is_valid(ok) && !is_pattern(ok), "{ok}");
    }
    for pattern in ["/*", "/**", "/foo/*", "/foo/**"] {
        assert!(is_pattern(pattern) && is_valid(pattern) && !is_name(pattern), "{pattern}");
    }
    for bad in [
        "foo/x",
        "/foo/",
        "/fo o/x",
        "/foo/**/*",
        "/foo/*/bar",
        "/foo*",
        "/",
        "",
        "/a.b",
        "/é",
        "/a:b",
        "/a%20",
    ] {
        assert!(!is_valid(bad), "{bad}");
    }
}

#[test]
fn meta_and_service_are_decided_by_the_whole_first_segment() {
    assert!(is_meta("/meta") && is_meta("/meta/foo") && is_meta("/meta/*"));
    assert!(!is_meta("/metadata") && !is_meta("/foo/meta") && !is_meta("/meta/"));
    assert!(is_service("/service/echo") && is_service("/service/**"));
    assert!(!is_subscribable("/meta/foo") && !is_subscribable("/service/x"));
    assert!(is_subscribable("/foo/**") && is_subscribable("/**"));
}

#[test]
fn expand_lists_faye_keys_in_faye_order() {
    assert_eq!(expand("/foo"), ["/**", "/foo", "/*"]);
    assert_eq!(expand("/foo/bar"), ["/**", "/foo/bar", "/foo/*", "/foo/**"]);
    assert_eq!(
        expand("/foo/bar/qux"),
        ["/**", "/foo/bar/qux", "/foo/bar/*", "/foo/**", "/foo/bar/**"]
    );
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![Just("a".to_owned()), Just("b".to_owned()), Just("c".to_owned()), "[a-z0-9_@]{1,3}"]
}

fn channel() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 1..5).prop_map(|segs| format!("/{}", segs.join("/")))
}

fn pattern() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(segment(), 0..4),
        prop_oneof![Just("*"), Just("**"), Just("a"), Just("b")],
    )
        .prop_map(|(segs, last)| {
            let mut all = segs;
            all.push(last.to_owned());
            format!("/{}", all.join("/"))
        })
}

proptest! {
    #[test]
    fn expand_contains_exactly_the_patterns_that_match(ch in channel(), pat in pattern()) {
        prop_assert_eq!(expand(&ch).contains(&pat), naive_matches(&pat, &ch), "{} vs {}", pat, ch);
    }

    #[test]
    fn expand_has_n_plus_two_distinct_keys(ch in channel()) {
        let keys = expand(&ch);
        let n = ch.matches('/').count();
        prop_assert_eq!(keys.len(), n + 2);
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        prop_assert_eq!(unique.len(), keys.len());
    }

    #[test]
    fn a_parsed_channel_expands_as_its_string_does(ch in channel()) {
        let parsed = Channel::parse(&ch).unwrap();
        let expansion = parsed.expand();
        let keys: Vec<&str> = expansion.iter().collect();
        prop_assert_eq!(&keys, &expand(&ch));
        prop_assert_eq!(expansion.len(), keys.len());
        prop_assert_eq!(parsed.segments(), ch.matches('/').count());
    }

    #[test]
    fn parsing_agrees_with_the_predicates(s in "(/|a|meta|service|\\*|\\*\\*|%){0,8}") {
        let parsed = Channel::parse(&s);
        prop_assert_eq!(parsed.is_some(), is_valid(&s));
        if let Some(c) = parsed {
            prop_assert_eq!(c.as_str(), s.as_str());
            prop_assert_eq!(c.is_name(), is_name(&s));
            prop_assert_eq!(c.kind() != ChannelKind::Name, is_pattern(&s));
            prop_assert_eq!((c.is_meta(), c.is_service()), (is_meta(&s), is_service(&s)));
        }
    }

    #[test]
    fn grammar_agrees_with_fayes_regexes(s in "[/a-zA-Z0-9*._ ~@$()!:%-]{0,12}") {
        prop_assert_eq!(is_name(&s), faye_name().is_match(&s), "name {:?}", s);
        prop_assert_eq!(is_pattern(&s), faye_pattern().is_match(&s), "pattern {:?}", s);
    }

    #[test]
    fn grammar_agrees_on_slash_heavy_strings(s in "(/|a|\\*|\\*\\*){0,8}") {
        prop_assert_eq!(is_name(&s), faye_name().is_match(&s), "name {:?}", s);
        prop_assert_eq!(is_pattern(&s), faye_pattern().is_match(&s), "pattern {:?}", s);
    }
}

/// Every channel of up to four segments over a tiny alphabet: enough to witness any
/// overlap between the patterns generated below.
fn all_channels() -> Vec<String> {
    let mut out = Vec::new();
    let mut level = vec![String::new()];
    for _ in 0..4 {
        level = level.iter().flat_map(|p| ["a", "b"].map(|s| format!("{p}/{s}"))).collect();
        out.extend(level.iter().cloned());
    }
    out
}

fn small_pattern() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop_oneof![Just("a"), Just("b")], 0..3),
        prop_oneof![Just("a"), Just("b"), Just("*"), Just("**")],
    )
        .prop_map(|(segs, last)| {
            format!("/{}", segs.into_iter().chain([last]).collect::<Vec<_>>().join("/"))
        })
}

proptest! {
    #[test]
    fn overlaps_agrees_with_brute_force(a in small_pattern(), b in small_pattern()) {
        use faye_protocol::channel::{matches, overlaps};
        let witness = all_channels().into_iter().any(|c| matches(&a, &c) && matches(&b, &c));
        prop_assert_eq!(overlaps(&a, &b), witness, "{} and {}", a, b);
        prop_assert_eq!(overlaps(&a, &b), overlaps(&b, &a));
    }

    #[test]
    fn matches_agrees_with_the_naive_matcher(ch in channel(), pat in pattern()) {
        prop_assert_eq!(faye_protocol::channel::matches(&pat, &ch), naive_matches(&pat, &ch));
    }
}
