//! Detectors: regexes that find secrets inside any string (every string value
//! of every JSON body, every log line) and replace only the secret part.
//!
//! Rust's `regex` crate runs in time linear in the input (no backtracking), so
//! no input can make a detector slow; `tests::adversarial_inputs_finish` holds
//! the patterns to that with large hostile inputs.
//!
//! `high-entropy-base64` is different: it judges a token by its character
//! statistics, not its shape, and runs on log lines only (never on JSON
//! string values, where certificates, hashes and `binaryData` are ordinary);
//! it is off unless the policy names it.

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, MatchKind};
use regex::{Captures, Regex, RegexSet};

use super::MARKER;

/// A named secret detector (the names are what the policy's `detectors` list uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Detector {
    /// `-----BEGIN ... PRIVATE KEY-----` PEM blocks (multi-line); the body is masked,
    /// the BEGIN/END lines are kept. An unterminated block is masked to the end.
    PrivateKey,
    /// JSON Web Tokens (`eyJ...`.`...`.`...`), masked whole.
    Jwt,
    /// AWS access key ids (`AKIA...`, `ASIA...`, `ABIA...`, `ACCA...`), masked whole.
    AwsAccessKey,
    /// `Bearer <token>` anywhere in a string; the token is masked.
    BearerToken,
    /// `password=...`, `passwd: ...`, `secret=...`, `token: ...`, `api_key=...` and
    /// quoted variants (`"password":"..."`); the value is masked.
    GenericPasswordAssignment,
    /// Log lines only, opt-in: a run of 20 or more base64 characters
    /// (standard or URL-safe alphabet, optional `=` padding) that mixes upper
    /// case, lower case and digits and whose Shannon entropy per character
    /// is close to that of random data (at least `min(0.85 * log2(len),
    /// 4.6)` bits), masked whole. Catches base64-encoded secrets and random
    /// API keys that have no recognisable shape; also masks certificate and
    /// key material printed in logs.
    HighEntropyBase64,
}

impl Detector {
    /// Every detector, in the order they are applied (multi-line blocks first,
    /// then whole tokens, then assignments, so an assignment whose value is a
    /// JWT is masked once).
    pub const ALL: [Detector; 6] = [
        Detector::PrivateKey,
        Detector::Jwt,
        Detector::AwsAccessKey,
        Detector::BearerToken,
        Detector::GenericPasswordAssignment,
        Detector::HighEntropyBase64,
    ];

    /// The name used in the policy file.
    pub fn name(self) -> &'static str {
        match self {
            Detector::PrivateKey => "private-key",
            Detector::Jwt => "jwt",
            Detector::AwsAccessKey => "aws-access-key",
            Detector::BearerToken => "bearer-token",
            Detector::GenericPasswordAssignment => "generic-password-assignment",
            Detector::HighEntropyBase64 => "high-entropy-base64",
        }
    }

    /// The detector with this policy name.
    pub fn from_name(name: &str) -> Option<Detector> {
        Detector::ALL.into_iter().find(|d| d.name() == name)
    }

    fn pattern(self) -> &'static str {
        match self {
            // Lazy body up to the first END line, or to the end of the string
            // when the block is cut (a log line, a truncated value).
            Detector::PrivateKey => {
                r"(-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----)(?s:(.*?))(-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----|\z)"
            }
            Detector::Jwt => r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
            // ASCII word boundaries: Unicode ones would keep the fast DFA from running.
            Detector::AwsAccessKey => r"(?-u:\b)(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?-u:\b)",
            Detector::BearerToken => r"(?i)((?-u:\b)bearer\s+)([A-Za-z0-9\-._~+/]{16,}=*)",
            // Key, optional closing quote (also JSON-in-JSON `\"`), `:` or `=`,
            // then a double-quoted, single-quoted, escaped-quoted or bare value.
            // The key must end right before the separator: `secretName:` and
            // `passwordless:` are not assignments.
            Detector::GenericPasswordAssignment => {
                r#"(?i)((?:password|passwd|pwd|secret|token|api[_-]?key)\\?["']?\s*[:=]\s*)(?:"((?:[^"\\\r\n]|\\.)+)"|'([^'\r\n]+)'|\\"([^"\\\r\n]+)\\"|([^\s"'\\,;&{}\[\]]+))"#
            }
            // Maximal runs of base64 characters; the entropy test decides.
            Detector::HighEntropyBase64 => r"[A-Za-z0-9+/_-]{20,}={0,2}",
        }
    }
}

/// The compiled, enabled detectors.
#[derive(Debug, Clone)]
pub(crate) struct Detectors {
    /// One pass over a string tells which detectors can match at all.
    set: RegexSet,
    list: Vec<(Detector, Regex)>,
    /// `high-entropy-base64`, for log lines only.
    log_only: Option<Regex>,
    /// BEGIN and END lines of private keys, for blocks split over log lines;
    /// `None` when the private-key detector is off.
    pem_lines: Option<(Regex, Regex)>,
    /// The literals one of which every match of an enabled detector holds
    /// (ASCII case ignored; see [`Detectors::may_match`]), all found in one
    /// pass: over lower-cased text, where the automaton's SIMD prefilter
    /// (Teddy) runs, which it does not for a case-insensitive automaton.
    /// `None` when no enabled detector has literals.
    literals: Option<Literals>,
}

/// The required literals of the enabled detectors, as two automatons.
#[derive(Debug, Clone)]
struct Literals {
    /// Lower-case patterns, leftmost-first, for lower-cased text
    /// ([`Detectors::literal_hits`]).
    lower: AhoCorasick,
    /// The same, ASCII case ignored, for a yes-or-no answer on a text as
    /// it is (no lower-cased copy of it to make).
    any_case: AhoCorasick,
}

impl Literals {
    fn new(patterns: &[&str]) -> Option<Literals> {
        if patterns.is_empty() || patterns.iter().any(|p| p.is_empty()) {
            return None;
        }
        let build = |any_case: bool| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostFirst)
                .ascii_case_insensitive(any_case)
                .build(patterns)
                .ok()
        };
        Some(Literals {
            lower: build(false)?,
            any_case: build(true)?,
        })
    }

    /// Whether an ASCII `text` holds one of the literals, case ignored.
    fn in_ascii(&self, text: &str) -> bool {
        self.any_case.is_match(text)
    }
}

/// Literals, lower case, one of which every match of the detector holds
/// with its ASCII letters in any case (see [`Detectors::may_match`]).
fn required_literals(d: Detector) -> &'static [&'static str] {
    match d {
        Detector::PrivateKey => &["-----begin "],
        Detector::Jwt => &["eyj"],
        Detector::AwsAccessKey => &["akia", "asia", "abia", "acca"],
        Detector::BearerToken => &["bearer"],
        // `passw` starts both `password` and `passwd`.
        Detector::GenericPasswordAssignment => &[
            "passw", "pwd", "secret", "token", "api_key", "api-key", "apikey",
        ],
        Detector::HighEntropyBase64 => &[""],
    }
}

const PEM_BEGIN: &str = r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----";
const PEM_END: &str = r"-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----";

impl Detectors {
    /// Compile the given detectors (deduplicated, applied in canonical order).
    pub(crate) fn new(enabled: &[Detector]) -> Detectors {
        let list: Vec<(Detector, Regex)> = Detector::ALL
            .into_iter()
            .filter(|d| enabled.contains(d) && *d != Detector::HighEntropyBase64)
            .filter_map(|d| Regex::new(d.pattern()).ok().map(|re| (d, re)))
            .collect();
        let set = RegexSet::new(list.iter().map(|(_, re)| re.as_str()))
            .unwrap_or_else(|_| RegexSet::empty());
        let pem_lines = if enabled.contains(&Detector::PrivateKey) {
            Regex::new(PEM_BEGIN).ok().zip(Regex::new(PEM_END).ok())
        } else {
            None
        };
        let log_only = if enabled.contains(&Detector::HighEntropyBase64) {
            Regex::new(Detector::HighEntropyBase64.pattern()).ok()
        } else {
            None
        };
        let patterns: Vec<&str> = list
            .iter()
            .flat_map(|(d, _)| required_literals(*d))
            .copied()
            .collect();
        let literals = Literals::new(&patterns);
        Detectors {
            set,
            list,
            log_only,
            pem_lines,
            literals,
        }
    }

    /// True when `line` starts a private-key block that it does not end
    /// (the following lines are key material).
    pub(crate) fn opens_block(&self, line: &str) -> bool {
        let Some((begin, end)) = &self.pem_lines else {
            return false;
        };
        let Some(last_begin) = begin.find_iter(line).last() else {
            return false;
        };
        !end.is_match(&line[last_begin.end()..])
    }

    /// Inside a block: where its END line starts in `line`, if it is there.
    pub(crate) fn block_end(&self, line: &str) -> Option<usize> {
        let (_, end) = self.pem_lines.as_ref()?;
        end.find(line).map(|m| m.start())
    }

    /// True when no detector for JSON string values is enabled.
    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Where the required literals (see [`Detectors::may_match`]) are in
    /// an ASCII `text`, offset by `base`, appended to `out` in order: the
    /// leftmost-first matches, not overlapping, ASCII case ignored. A string
    /// with a detector match holds one of them whole, and then gives at
    /// least one hit inside it: the literals hold no quote and match no
    /// JSON punctuation, number or keyword, so each hit lies inside one
    /// string, and a literal passed over overlaps a hit in the same string.
    /// `false` when this cannot tell (non-ASCII text, no detectors): then
    /// use [`Detectors::may_match`]. `lower` is scratch space, reused
    /// between calls.
    pub(crate) fn literal_hits(
        &self,
        text: &str,
        base: u32,
        lower: &mut Vec<u8>,
        out: &mut Vec<(u32, u32)>,
    ) -> bool {
        let Some(lits) = &self.literals else {
            return false;
        };
        if self.list.is_empty() || !text.is_ascii() {
            return false;
        }
        lower.clear();
        lower.extend(text.bytes().map(|b| b.to_ascii_lowercase()));
        out.extend(
            lits.lower
                .find_iter(lower.as_slice())
                .map(|m| (base + m.start() as u32, base + m.end() as u32)),
        );
        true
    }

    /// Whether any detector for JSON string values matches somewhere in
    /// `text`. A string with a match also gives one when it sits inside a
    /// longer text between non-word characters (JSON quotes): the patterns
    /// use only ASCII word boundaries, and `\z` only after a lazy
    /// `(?s:.*?)` that can run on to the end of the text.
    ///
    /// Cheaper first: an ASCII text without any of the detectors' required
    /// literals (ASCII case ignored) has no match. Non-ASCII text goes
    /// straight to the regex set: Unicode case folding matches `ſ` for `s`
    /// and `K` for `k`.
    pub(crate) fn may_match(&self, text: &str) -> bool {
        if self.list.is_empty() {
            return false;
        }
        if let Some(lits) = &self.literals
            && text.is_ascii()
            && !lits.in_ascii(text)
        {
            return false;
        }
        self.set.is_match(text)
    }

    /// Mask every detected secret in `s`; returns the new string (borrowed when
    /// nothing was found) and the number of secrets masked.
    pub(crate) fn apply<'a>(&self, s: &'a str) -> (Cow<'a, str>, usize) {
        self.apply_collect(s, None)
    }

    /// [`Detectors::apply`] for a log line: also the log-only detectors.
    pub(crate) fn apply_log<'a>(&self, s: &'a str) -> (Cow<'a, str>, usize) {
        let (out, n) = self.apply(s);
        let Some(re) = &self.log_only else {
            return (out, n);
        };
        let mut m = 0usize;
        let replaced = re.replace_all(&out, |c: &Captures<'_>| {
            let whole = c.get(0).map_or("", |x| x.as_str());
            if high_entropy(whole) {
                m += 1;
                MARKER.to_string()
            } else {
                whole.to_string()
            }
        });
        if m == 0 {
            return (out, n);
        }
        (Cow::Owned(replaced.into_owned()), n + m)
    }

    /// [`Detectors::apply`], also appending the clear secret part of every
    /// match to `found` (so the same value can be scrubbed elsewhere).
    pub(crate) fn apply_collect<'a>(
        &self,
        s: &'a str,
        mut found: Option<&mut Vec<Vec<u8>>>,
    ) -> (Cow<'a, str>, usize) {
        if self.list.is_empty() {
            return (Cow::Borrowed(s), 0);
        }
        // Almost every string matches nothing: the literals (see
        // `may_match`) or `is_match` answer that without allocating the
        // per-pattern answer `matches` builds.
        if !self.may_match(s) {
            return (Cow::Borrowed(s), 0);
        }
        let hits = self.set.matches(s);
        let mut out: Cow<'a, str> = Cow::Borrowed(s);
        let mut total = 0usize;
        for (i, (det, re)) in self.list.iter().enumerate() {
            // A later detector may still match text an earlier one rewrote
            // only if it matched the original; the set answered for the original.
            if !hits.matched(i) {
                continue;
            }
            let mut n = 0usize;
            let replaced = re.replace_all(&out, |c: &Captures<'_>| {
                replace_one(*det, c, &mut n, found.as_deref_mut())
            });
            if n > 0 {
                total += n;
                out = Cow::Owned(replaced.into_owned());
            }
        }
        (out, total)
    }
}

/// Shannon entropy, in bits per character, of `s`.
fn entropy(s: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for b in s {
        counts[usize::from(*b)] += 1;
    }
    let len = s.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / len;
            -p * p.log2()
        })
        .sum()
}

/// The `high-entropy-base64` test for one maximal run of base64 characters.
fn high_entropy(token: &str) -> bool {
    let core = token.trim_end_matches('=').as_bytes();
    if core.len() < 20 {
        return false;
    }
    let has = |f: fn(&u8) -> bool| core.iter().any(f);
    if !(has(u8::is_ascii_uppercase) && has(u8::is_ascii_lowercase) && has(u8::is_ascii_digit)) {
        return false;
    }
    let threshold = (0.85 * (core.len() as f64).log2()).min(4.6);
    entropy(core) >= threshold
}

/// The replacement text for one match; counts it in `n` unless it was
/// already masked, and appends the secret part to `found`.
fn replace_one(
    det: Detector,
    c: &Captures<'_>,
    n: &mut usize,
    found: Option<&mut Vec<Vec<u8>>>,
) -> String {
    let whole = c.get(0).map_or("", |m| m.as_str());
    let secret = match det {
        Detector::PrivateKey => c.get(2),
        Detector::BearerToken => c.get(2),
        Detector::GenericPasswordAssignment => (2..=5).find_map(|i| c.get(i)),
        _ => c.get(0),
    }
    .map_or("", |m| m.as_str());
    if let Some(f) = found
        && secret != MARKER
        && !secret.is_empty()
    {
        f.push(secret.as_bytes().to_vec());
    }
    match det {
        Detector::PrivateKey => {
            let begin = c.get(1).map_or("", |m| m.as_str());
            let body = c.get(2).map_or("", |m| m.as_str());
            let end = c.get(3).map_or("", |m| m.as_str());
            if body == MARKER {
                return whole.to_string();
            }
            *n += 1;
            format!("{begin}{MARKER}{end}")
        }
        Detector::Jwt | Detector::AwsAccessKey => {
            *n += 1;
            MARKER.to_string()
        }
        Detector::BearerToken => {
            let prefix = c.get(1).map_or("", |m| m.as_str());
            *n += 1;
            format!("{prefix}{MARKER}")
        }
        Detector::GenericPasswordAssignment => {
            let Some(value) = (2..=5).find_map(|i| c.get(i)) else {
                return whole.to_string();
            };
            if value.as_str() == MARKER {
                return whole.to_string();
            }
            *n += 1;
            let start = value.start() - c.get(0).map_or(0, |m| m.start());
            let end = value.end() - c.get(0).map_or(0, |m| m.start());
            format!("{}{MARKER}{}", &whole[..start], &whole[end..])
        }
        // Never compiled into `list` (log lines only, see `apply_log`).
        Detector::HighEntropyBase64 => whole.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn all() -> Detectors {
        Detectors::new(&Detector::ALL)
    }

    fn only(d: Detector) -> Detectors {
        Detectors::new(&[d])
    }

    const JWT: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEyMyJ9.eyJpc3MiOiJrdWJlcm5ldGVzL3NlcnZpY2VhY2NvdW50Iiwic3ViIjoic3lzdGVtOnNlcnZpY2VhY2NvdW50OmRlZmF1bHQ6ZGVmYXVsdCJ9.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmU";

    /// The required literals are written by hand; this ties them to the
    /// patterns. Every match of a pattern starts with one of the prefixes
    /// regex-syntax extracts from it (a finite set); each ASCII one must
    /// hold one of the detector's literals, ASCII case ignored. (Non-ASCII
    /// text never relies on the literals: it goes to the regex set.) A
    /// pattern changed without its literals, e.g. a new key word in the
    /// password assignment, fails here, not as a leak of the byte path.
    #[test]
    fn required_literals_follow_from_the_patterns() {
        use regex_syntax::hir::literal::Extractor;
        for d in Detector::ALL {
            if d == Detector::HighEntropyBase64 {
                continue; // log lines only: no byte path, no literals
            }
            let hir = regex_syntax::parse(d.pattern()).unwrap();
            let mut ex = Extractor::new();
            ex.limit_class(64)
                .limit_repeat(64)
                .limit_literal_len(64)
                .limit_total(100_000);
            let seq = ex.extract(&hir);
            let prefixes = seq
                .literals()
                .unwrap_or_else(|| panic!("{d:?}: no finite prefix set"));
            assert!(!prefixes.is_empty(), "{d:?}");
            let lits = required_literals(d);
            let mut ascii = 0;
            for p in prefixes.iter().filter(|p| p.as_bytes().is_ascii()) {
                ascii += 1;
                let lower = p.as_bytes().to_ascii_lowercase();
                assert!(
                    lits.iter()
                        .any(|l| lower.windows(l.len()).any(|w| w == l.as_bytes())),
                    "{d:?}: a match may start with {:?}, which holds none of {lits:?}",
                    String::from_utf8_lossy(p.as_bytes())
                );
            }
            assert!(ascii > 0, "{d:?}");
        }
    }

    /// The byte path relies on this (`bytes::escapes_may_hide_a_literal`,
    /// `literal_hits`): no literal holds a character a JSON escape other
    /// than `\u` stands for, nor one of JSON's punctuation, nor a digit.
    #[test]
    fn literals_hold_no_escaped_or_structural_character() {
        for d in Detector::ALL {
            for l in required_literals(d) {
                assert!(
                    l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b == b'-' || b == b'_' || b == b' '),
                    "{d:?}: {l:?}"
                );
            }
        }
    }

    /// `literal_hits` gives the leftmost-first matches of the literals, not
    /// overlapping, ASCII case ignored (checked against a plain scan), with
    /// the scratch buffer reused; `may_match`'s literal check agrees.
    #[test]
    fn literal_hits_are_the_leftmost_first_matches() {
        let d = all();
        let patterns: Vec<&str> = d
            .list
            .iter()
            .flat_map(|(det, _)| required_literals(*det))
            .copied()
            .collect();
        // At each position, the first pattern (in order) that starts there;
        // past a match, the next search starts at its end.
        let scan = |text: &str| {
            let lower = text.as_bytes().to_ascii_lowercase();
            let mut hits = Vec::new();
            let mut i = 0;
            while i < lower.len() {
                match patterns
                    .iter()
                    .find(|p| lower[i..].starts_with(p.as_bytes()))
                {
                    Some(p) => {
                        hits.push((7 + i as u32, 7 + (i + p.len()) as u32));
                        i += p.len();
                    }
                    None => i += 1,
                }
            }
            hits
        };
        let mut lower = b"left over from a longer run".to_vec();
        for text in [
            "",
            "tokentoken",
            "ttoken",
            "TOKEN=a Token=b passwd pwdpwd",
            "Bearer eyJ ---- -----BEGIN x AKIAasiaABIAacca api-key apikey api_key",
            "secretsecret-secret",
            "secretoken passwordtoken bearerakia eyjwt apikeyj",
            "no literal here: {\"a\": [1, true, null]}",
        ] {
            let mut got = Vec::new();
            assert!(d.literal_hits(text, 7, &mut lower, &mut got));
            assert_eq!(got, scan(text), "{text:?}");
            let lits = d.literals.as_ref().unwrap();
            assert_eq!(lits.in_ascii(text), !got.is_empty(), "{text:?}");
        }
        let mut got = Vec::new();
        assert!(
            !d.literal_hits("tökén", 0, &mut lower, &mut got),
            "non-ASCII"
        );
        assert!(got.is_empty());
    }

    #[test]
    fn names_round_trip() {
        for d in Detector::ALL {
            assert_eq!(Detector::from_name(d.name()), Some(d));
        }
        assert_eq!(Detector::from_name("nope"), None);
    }

    #[test]
    fn jwt_positive_and_negative() {
        let d = only(Detector::Jwt);
        let input = format!("token is {JWT} ok");
        let (s, n) = d.apply(&input);
        assert_eq!(s, "token is ***MASKED*** ok");
        assert_eq!(n, 1);
        let input = format!("{JWT}\n{JWT}");
        let (s, n) = d.apply(&input);
        assert_eq!(s, "***MASKED***\n***MASKED***");
        assert_eq!(n, 2);
        for neg in [
            "eyJ",
            "eyJhbGciOi",
            "hello.world.foo",
            "eyJabc.def",
            "version 1.2.3",
        ] {
            assert_eq!(d.apply(neg), (Cow::Borrowed(neg), 0), "{neg}");
        }
    }

    #[test]
    fn private_key_positive_and_negative() {
        let d = only(Detector::PrivateKey);
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA1234\nabcd==\n-----END RSA PRIVATE KEY-----";
        let input = format!("key:\n{pem}\ntrailer");
        let (s, n) = d.apply(&input);
        assert_eq!(
            s,
            "key:\n-----BEGIN RSA PRIVATE KEY-----***MASKED***-----END RSA PRIVATE KEY-----\ntrailer"
        );
        assert_eq!(n, 1);
        for kind in ["", "EC ", "OPENSSH ", "ENCRYPTED ", "DSA "] {
            let pem = format!(
                "-----BEGIN {kind}PRIVATE KEY-----\nsecretbody\n-----END {kind}PRIVATE KEY-----"
            );
            let (s, n) = d.apply(&pem);
            assert!(!s.contains("secretbody"), "{kind}: {s}");
            assert_eq!(n, 1);
        }
        let pgp = "-----BEGIN PGP PRIVATE KEY BLOCK-----\nsecretbody\n-----END PGP PRIVATE KEY BLOCK-----";
        assert!(!d.apply(pgp).0.contains("secretbody"));
        // Two blocks: each masked separately, text between kept.
        let two = format!("{pem}\nmiddle\n{pem}");
        let (s, n) = d.apply(&two);
        assert_eq!(n, 2);
        assert!(s.contains("middle") && !s.contains("MIIE"));
        // Cut block: masked to the end.
        let (s, n) = d.apply("x -----BEGIN PRIVATE KEY-----\nMIIEsecret");
        assert_eq!(s, "x -----BEGIN PRIVATE KEY-----***MASKED***");
        assert_eq!(n, 1);
        // Idempotent.
        let (s2, n2) = d.apply(&s);
        assert_eq!((s2.as_ref(), n2), (s.as_ref(), 0));
        for neg in [
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
            "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
            "private key rotation done",
        ] {
            assert_eq!(d.apply(neg).1, 0, "{neg}");
        }
    }

    #[test]
    fn aws_positive_and_negative() {
        let d = only(Detector::AwsAccessKey);
        let (s, n) = d.apply("id=AKIAIOSFODNN7EXAMPLE and ASIAXXXXXXXXXXXXXXXX.");
        assert_eq!(s, "id=***MASKED*** and ***MASKED***.");
        assert_eq!(n, 2);
        for neg in [
            "AKIA123",
            "XAKIAIOSFODNN7EXAMPLE",
            "AKIAIOSFODNN7EXAMPLEX",
            "akiaiosfodnn7example",
        ] {
            assert_eq!(d.apply(neg).1, 0, "{neg}");
        }
    }

    #[test]
    fn bearer_positive_and_negative() {
        let d = only(Detector::BearerToken);
        let (s, n) = d.apply("Authorization: Bearer abcdefghijklmnop0123456789.x_y~z+/== done");
        assert_eq!(s, "Authorization: Bearer ***MASKED*** done");
        assert_eq!(n, 1);
        let (s, n) = d.apply("authorization: bearer   0123456789abcdef0123");
        assert_eq!(s, "authorization: bearer   ***MASKED***");
        assert_eq!(n, 1);
        for neg in [
            "Bearer",
            "Bearer short",
            "the Bearer token scheme",
            "unbearerable 0123456789abcdef0123",
        ] {
            assert_eq!(d.apply(neg).1, 0, "{neg}");
        }
    }

    #[test]
    fn generic_assignment_positive_and_negative() {
        let d = only(Detector::GenericPasswordAssignment);
        let cases = [
            ("password=hunter2", "password=***MASKED***"),
            (
                "DB_PASSWORD=hunter2 user=x",
                "DB_PASSWORD=***MASKED*** user=x",
            ),
            ("passwd: hunter2", "passwd: ***MASKED***"),
            ("client_secret=abc&x=1", "client_secret=***MASKED***&x=1"),
            ("secret = 'hun ter2'", "secret = '***MASKED***'"),
            (
                r#"{"password":"hun\"ter2","user":"u"}"#,
                r#"{"password":"***MASKED***","user":"u"}"#,
            ),
            (
                r#"{\"password\":\"hunter2\"}"#,
                r#"{\"password\":\"***MASKED***\"}"#,
            ),
            ("API_KEY: abc123", "API_KEY: ***MASKED***"),
            ("--token=abc123", "--token=***MASKED***"),
        ];
        for (input, want) in cases {
            let (s, n) = d.apply(input);
            assert_eq!(s, want, "{input}");
            assert_eq!(n, 1, "{input}");
        }
        for neg in [
            "passwordless: true",
            "secretName: db",
            "the password is required",
            "password:",
            r#"{"password":""}"#,
            r#""secret":{"secretName":"x"}"#,
            "password=***MASKED***",
            "tokenExpirationSeconds: 3600",
        ] {
            assert_eq!(d.apply(neg).1, 0, "{neg}");
        }
    }

    #[test]
    fn combined_masks_once() {
        let d = all();
        let input = format!("password={JWT}");
        let (s, n) = d.apply(&input);
        assert_eq!(s, "password=***MASKED***");
        assert_eq!(n, 1);
        let input = format!("Authorization: Bearer {JWT}");
        let (s, n) = d.apply(&input);
        assert_eq!(s, "Authorization: Bearer ***MASKED***");
        assert_eq!(n, 1);
        let (s, n) = d.apply("nothing to see here");
        assert!(matches!(s, Cow::Borrowed(_)));
        assert_eq!(n, 0);
    }

    /// Inputs built to make a backtracking engine explode must finish (the
    /// test is bounded by the suite's timeout, not by a wall-clock assertion).
    #[test]
    fn adversarial_inputs_finish() {
        let d = all();
        let big = 1024 * 1024;
        let inputs = [
            "-----BEGIN PRIVATE KEY-----".repeat(big / 27),
            "-----BEGIN RSA ".repeat(big / 15),
            "eyJaaaa.".repeat(big / 8),
            "eyJ".to_string() + &"a".repeat(big) + "." + &"a".repeat(big),
            "password=".repeat(big / 9),
            "password\"\"\"\" :=".repeat(big / 16),
            "\"password\":\"".to_string() + &"\\a".repeat(big / 2),
            "Bearer ".repeat(big / 7),
            "AKIA".repeat(big / 4),
            "a".repeat(big),
        ];
        for input in &inputs {
            let (s, _) = d.apply(input);
            assert!(!s.is_empty());
        }
    }
}
