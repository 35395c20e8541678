//! Channel grammar: the kind predicates agree with each other, `expand` gives the
//! keys `matches` uses, and `overlaps` is symmetric and agrees with a brute-force
//! search for a channel both sides match.
#![no_main]

use faye_protocol::channel::{
    expand, is_meta, is_name, is_pattern, is_service, is_subscribable, is_valid, matches, overlaps,
};
use libfuzzer_sys::fuzz_target;

fn check_one(s: &str) {
    let (name, pattern, valid) = (is_name(s), is_pattern(s), is_valid(s));
    assert_eq!(valid, name || pattern, "{s:?}: is_valid != is_name || is_pattern");
    assert!(!(name && pattern), "{s:?}: both a name and a pattern");
    if is_meta(s) || is_service(s) {
        assert!(valid, "{s:?}: meta/service but invalid");
    }
    assert!(!(is_meta(s) && is_service(s)), "{s:?}: meta and service");
    assert_eq!(
        is_subscribable(s),
        valid && !is_meta(s) && !is_service(s),
        "{s:?}: is_subscribable"
    );

    // expand must not panic on anything, valid or not.
    let keys = expand(s);
    if name {
        let want = s.matches('/').count() + 2;
        let mut distinct = keys.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(keys.len(), want, "{s:?}: expand gave {keys:?}");
        assert_eq!(distinct.len(), want, "{s:?}: expand has duplicates: {keys:?}");
        assert_eq!(keys[0], "/**");
        assert_eq!(keys[1], s);
        // `matches` expands its name on every call (quadratic in the segment count):
        // check every key of short names, the first and last few of long ones.
        let n = if keys.len() > 64 { 2 } else { 8 };
        let sample =
            keys.iter().take(n).chain(keys.iter().skip(n.max(keys.len().saturating_sub(n))));
        for key in sample {
            assert!(is_valid(key), "{s:?}: invalid key {key:?}");
            assert!(matches(key, s), "{s:?}: key {key:?} does not match");
            assert!(overlaps(key, s), "{s:?}: key {key:?} does not overlap");
        }
        assert!(matches(s, s));
    } else {
        // Only names can be published to.
        for probe in ["/**", "/*", s] {
            assert!(!matches(probe, s), "{probe:?} matches non-name {s:?}");
        }
    }
    assert_eq!(overlaps(s, s), valid, "{s:?}: overlaps itself");
}

/// The literal segments of a valid name or pattern, and whether it ends in `*`/`**`.
fn literal_segments(s: &str) -> (Vec<&str>, usize) {
    let segs: Vec<&str> = s[1..].split('/').collect();
    match *segs.last().unwrap() {
        "*" | "**" => (segs[..segs.len() - 1].to_vec(), segs.len()),
        _ => (segs.clone(), segs.len()),
    }
}

/// Whether some channel name is matched by both `a` and `b`, by search: any such
/// channel can have its free segments replaced by `z`, and needs at most one
/// segment more than the longer of the two.
fn overlap_by_search(a: &str, b: &str) -> bool {
    if !is_valid(a) || !is_valid(b) {
        return false;
    }
    let (la, na) = literal_segments(a);
    let (lb, nb) = literal_segments(b);
    (1..=na.max(nb) + 1).any(|len| {
        let channel: String = (0..len)
            .map(|i| format!("/{}", la.get(i).or(lb.get(i)).copied().unwrap_or("z")))
            .collect();
        matches(a, &channel) && matches(b, &channel)
    })
}

fn check_pair(a: &str, b: &str) {
    let ab = overlaps(a, b);
    assert_eq!(ab, overlaps(b, a), "overlaps({a:?}, {b:?}) is not symmetric");
    // The search is cubic in the segment count: only for channels of up to 32 segments.
    if a.matches('/').count().max(b.matches('/').count()) <= 32 {
        assert_eq!(ab, overlap_by_search(a, b), "overlaps({a:?}, {b:?}) = {ab}, search disagrees");
    }
    if is_name(b) {
        assert_eq!(matches(a, b), is_valid(a) && ab, "matches({a:?}, {b:?}) vs overlaps");
    }
    if is_name(a) && is_name(b) {
        assert_eq!(ab, a == b, "two names {a:?}, {b:?} overlap iff equal");
    }
}

fuzz_target!(|data: &[u8]| {
    // Past the server's default limit on channel names (1024 bytes) only the cost of
    // the quadratic `expand` grows.
    if data.len() > 1100 {
        return;
    }
    let Ok(s) = std::str::from_utf8(data) else { return };
    // The first byte picks where to cut the rest in two.
    let Some(first) = s.chars().next() else {
        check_one(s);
        return;
    };
    let rest = &s[first.len_utf8()..];
    let mut cut = (first as usize) % (rest.len() + 1);
    while !rest.is_char_boundary(cut) {
        cut -= 1;
    }
    let (a, b) = rest.split_at(cut);
    check_one(a);
    check_one(b);
    check_one(rest);
    check_pair(a, b);
    check_pair(rest, rest);
});
