//! JSON string literals, written and read exactly as serde_json writes and
//! reads them, without its byte-at-a-time loops. The masker writes every
//! string it replaces and decodes every escaped string it reads (a
//! `last-applied-configuration` annotation, a multi-line ConfigMap value);
//! the recorder writes every string of every event. Runs of plain text are
//! found eight bytes at a time and copied whole.

/// Where the first byte a JSON string must escape is in `b`: a quote, a
/// backslash or a control character (below 0x20; serde_json leaves 0x7f
/// as it is). Eight bytes at a time.
pub fn first_escaped(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Per byte: the high bit set where the byte is below `n` (n <= 128).
    // A borrow can set it above a byte that is, never below: the lowest
    // set bit is the first hit.
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGH;
    let mut words = b.chunks_exact(8);
    let mut at = 0;
    for w in &mut words {
        let Ok(w) = <[u8; 8]>::try_from(w) else {
            break;
        };
        let x = u64::from_le_bytes(w);
        let hit = below(x, 0x20)
            | below(x ^ (ONES * u64::from(b'"')), 1)
            | below(x ^ (ONES * u64::from(b'\\')), 1);
        if hit != 0 {
            return Some(at + (hit.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&c| c < 0x20 || c == b'"' || c == b'\\')
        .map(|p| at + p)
}

/// Append `s` as a JSON string literal, byte for byte what
/// `serde_json::to_writer` writes: `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`,
/// other control characters as `\u00xx` (lower-case hex), everything else
/// as it is.
pub fn push_quoted(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let b = s.as_bytes();
    out.reserve(b.len() + 2);
    out.push(b'"');
    let mut rest = b;
    while let Some(p) = first_escaped(rest) {
        let (plain, tail) = rest.split_at(p);
        out.extend_from_slice(plain);
        let Some((&c, tail)) = tail.split_first() else {
            break;
        };
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(c >> 4)],
                HEX[usize::from(c & 0xf)],
            ]),
        }
        rest = tail;
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

/// The text of the JSON string literal `raw` (its quotes included), as
/// `serde_json::from_str::<String>` reads it; `None` wherever that fails:
/// an unescaped quote or control character inside, an unknown escape, a
/// `\u` escape that is not four hex digits, a lone surrogate.
pub fn unquote(raw: &str) -> Option<String> {
    let (text, len) = unquote_prefix(raw)?;
    (len == raw.len()).then_some(text)
}

/// The text of the JSON string literal at the start of `s` (which starts
/// with its opening quote) and the length of the literal, quotes included:
/// the end is found while decoding, in one pass. `None` as [`unquote`],
/// and when the literal does not end in `s`.
pub fn unquote_prefix(s: &str) -> Option<(String, usize)> {
    let inner = s.strip_prefix('"')?;
    let b = inner.as_bytes();
    let mut out = String::with_capacity(inner.len().min(256));
    let mut i = 0;
    loop {
        let p = first_escaped(b.get(i..)?)?;
        // Up to an ASCII byte: a character boundary.
        out.push_str(inner.get(i..i + p)?);
        i += p;
        let c = match *b.get(i)? {
            b'"' => return Some((out, i + 2)),
            b'\\' => *b.get(i + 1)?,
            _ => return None,
        };
        let c = match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let (c, len) = unicode_escape(b.get(i..)?)?;
                i += len;
                out.push(c);
                continue;
            }
            _ => return None,
        };
        out.push(c);
        i += 2;
    }
}

/// The character of the `\uXXXX` escape at the start of `b` (a surrogate
/// pair: two escapes), and how many bytes it took.
fn unicode_escape(b: &[u8]) -> Option<(char, usize)> {
    let hex = |at: usize| -> Option<u32> {
        let digits = b.get(at..at + 4)?;
        digits
            .iter()
            .try_fold(0u32, |acc, &d| Some(acc * 16 + char::from(d).to_digit(16)?))
    };
    let first = hex(2)?;
    match first {
        0xD800..=0xDBFF => {
            if b.get(6..8)? != b"\\u" {
                return None;
            }
            let low = hex(8)?;
            if !(0xDC00..=0xDFFF).contains(&low) {
                return None;
            }
            let c = 0x10000 + ((first - 0xD800) << 10) + (low - 0xDC00);
            Some((char::from_u32(c)?, 12))
        }
        0xDC00..=0xDFFF => None,
        c => Some((char::from_u32(c)?, 6)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The word-at-a-time search agrees with a byte-at-a-time one for every
    /// byte value at every position of short and long texts.
    #[test]
    fn first_escaped_finds_the_first_escaped_byte() {
        let naive = |b: &[u8]| b.iter().position(|&c| c < 0x20 || c == b'"' || c == b'\\');
        for len in 0..20usize {
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut b = vec![b'a'; len];
                    b[at] = byte;
                    assert_eq!(
                        first_escaped(&b),
                        naive(&b),
                        "len {len} at {at} byte {byte}"
                    );
                    // A second hit behind the first must not move it.
                    if at + 1 < len {
                        b[at + 1] = b'"';
                        assert_eq!(
                            first_escaped(&b),
                            naive(&b),
                            "len {len} at {at} byte {byte}"
                        );
                    }
                }
            }
        }
        // Bytes next to the ones that count (borrows between bytes).
        for b in [
            &b"\x21\x21\x1f\x21"[..],
            b"!!!!!!!#",
            b"]]]]]]]]]",
            b"\x80\x80\x80\x80\x80\x80\x80\x80",
            b"\x00\x01\x20\x21\x5b\x5d\x7f\xff\x22",
        ] {
            assert_eq!(first_escaped(b), naive(b), "{b:?}");
        }
    }

    #[test]
    fn escapes_and_surrogates() {
        let cases = [
            r#""""#,
            r#""plain""#,
            r#""a\"b\\c\/d\b\f\n\r\t""#,
            r#""\u0041\u00e9\u20AC\ud83d\udd11""#,
            r#""\u0000\u001f""#,
            r#""\ud800""#,
            r#""\udc00""#,
            r#""\ud800\u0041""#,
            r#""\ud800x""#,
            r#""\u12""#,
            r#""\u12g4""#,
            r#""\x41""#,
            r#""a"b""#,
            "\"tab\tinside\"",
            r#""ends in \""#,
            r#""\"#,
            r#"""#,
            "unquoted",
        ];
        for raw in cases {
            assert_eq!(
                unquote(raw),
                serde_json::from_str::<String>(raw).ok(),
                "{raw}"
            );
        }
    }

    #[test]
    fn unquote_prefix_finds_the_end() {
        let s = r#""a\"b\\" , "next""#;
        assert_eq!(unquote_prefix(s), Some((r#"a"b\"#.to_string(), 8)));
        assert_eq!(unquote_prefix(r#""unterminated\""#), None);
        assert_eq!(unquote_prefix("\"a\nb\""), None);
        assert_eq!(unquote_prefix("x"), None);
    }

    proptest::proptest! {
        /// Written as serde_json writes, read back as serde_json reads.
        #[test]
        fn push_quoted_is_serde_json(s in "(\\PC|[\\x00-\\x1f\"\\\\\\x7f])*") {
            let mut out = Vec::new();
            push_quoted(&mut out, &s);
            proptest::prop_assert_eq!(&out, &serde_json::to_vec(&s).unwrap());
            let text = String::from_utf8(out).unwrap();
            proptest::prop_assert_eq!(unquote(&text), Some(s));
        }

        /// Valid escapes of every kind (surrogate pairs included) among
        /// plain text: decoded to what serde_json decodes.
        #[test]
        fn unquote_decodes_what_serde_json_decodes(
            body in "([a-z é€/]|\\\\[\"\\\\/bfnrt]|\\\\u[0-9a-cA-CefEF][0-9a-fA-F]{3}|\\\\u[dD][0-7][0-9a-fA-F]{2}|\\\\u[dD][89abAB][0-9a-fA-F]{2}\\\\u[dD][c-fC-F][0-9a-fA-F]{2})*",
        ) {
            let raw = format!("\"{body}\"");
            let want = serde_json::from_str::<String>(&raw);
            proptest::prop_assert!(want.is_ok(), "{}", raw);
            proptest::prop_assert_eq!(unquote(&raw), want.ok());
        }

        /// Any text made of the bytes that matter: accepted and decoded
        /// exactly where serde_json accepts it, to the same string.
        #[test]
        fn unquote_is_serde_json(
            body in "([\"\\\\/bfnrtu0-9a-fA-FdD\\t\\x01 xé€]|\\\\u[dD][89abAB][0-9a-f]{2}|\\\\u[dD][c-fC-F][0-9a-f]{2})*",
        ) {
            let raw = format!("\"{body}\"");
            proptest::prop_assert_eq!(unquote(&raw), serde_json::from_str::<String>(&raw).ok());
        }
    }
}
