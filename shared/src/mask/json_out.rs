//! Compact JSON writer for masked values: writes exactly the bytes
//! serde_json's compact serializer writes for a [`Value`] (same key order,
//! same string escapes, numbers through serde_json itself), but copies the
//! runs of string bytes that need no escape eight bytes at a time instead
//! of looking each byte up.
//!
//! serde_json's rules, which this follows: `"` and `\` are escaped with a
//! backslash; U+0008, U+000C, `\n`, `\r`, `\t` by their short escapes; every
//! other byte below 0x20 as `\u00XX` (lower-case hex); everything else
//! (DEL, non-ASCII, `/`, `<`) is written as it is.

use serde_json::Value;

/// Append the compact JSON of `v` to `out`.
pub(crate) fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            let at = out.len();
            // Writing into a Vec cannot fail; on the impossible error, the
            // partial number is taken back rather than left half-written.
            if serde_json::to_writer(&mut *out, n).is_err() {
                out.truncate(at);
            }
        }
        Value::String(s) => write_str(out, s),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, x);
            }
            out.push(b']');
        }
        Value::Object(m) => {
            out.push(b'{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, k);
                out.push(b':');
                write_value(out, x);
            }
            out.push(b'}');
        }
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Whether any of the 8 bytes of `c` is below 0x20, `"` or `\` (never a
/// false "no"; a false "yes" only sends the chunk to the byte loop).
fn chunk_needs_escape(c: u64) -> bool {
    let ctrl = c.wrapping_sub(ONES * 0x20) & !c;
    let q = c ^ (ONES * u64::from(b'"'));
    let quote = q.wrapping_sub(ONES) & !q;
    let b = c ^ (ONES * u64::from(b'\\'));
    let backslash = b.wrapping_sub(ONES) & !b;
    (ctrl | quote | backslash) & HIGH != 0
}

/// The escape of byte `b`, if it needs one.
fn escape(b: u8) -> Option<&'static [u8]> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    const CONTROL: [[u8; 6]; 32] = {
        let mut t = [[0u8; 6]; 32];
        let mut i = 0;
        while i < 32 {
            t[i] = [b'\\', b'u', b'0', b'0', HEX[i >> 4], HEX[i & 15]];
            i += 1;
        }
        t
    };
    Some(match b {
        b'"' => b"\\\"",
        b'\\' => b"\\\\",
        0x08 => b"\\b",
        0x0c => b"\\f",
        b'\n' => b"\\n",
        b'\r' => b"\\r",
        b'\t' => b"\\t",
        0..=0x1f => &CONTROL[usize::from(b)],
        _ => return None,
    })
}

/// Append `s` as a JSON string.
fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // `bytes[run..]` is copied but not written yet.
    let mut run = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(chunk) = bytes.get(i..i + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            if !chunk_needs_escape(u64::from_ne_bytes(word)) {
                i += 8;
                continue;
            }
        }
        let end = (i + 8).min(bytes.len());
        for (j, &b) in bytes.iter().enumerate().take(end).skip(i) {
            if let Some(e) = escape(b) {
                out.extend_from_slice(&bytes[run..j]);
                out.extend_from_slice(e);
                run = j + 1;
            }
        }
        i = end;
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    use super::write_value;

    fn written(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        write_value(&mut out, v);
        out
    }

    #[test]
    fn every_byte_is_escaped_as_serde_json_escapes_it() {
        for b in 0u8..=0x7f {
            let s = format!("a{}bcdefghij{}", b as char, b as char);
            let v = json!({ s.clone(): s });
            assert_eq!(written(&v), serde_json::to_vec(&v).unwrap(), "byte {b:#x}");
        }
        let v = json!([
            "é€😀\u{2028}\u{7f}",
            1.5,
            -3,
            u64::MAX,
            1e300,
            0.1,
            null,
            true,
            false,
            {},
            []
        ]);
        assert_eq!(written(&v), serde_json::to_vec(&v).unwrap());
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            "[\"\\\\\u{0}-\u{1f}a-z\u{7f}é]{0,40}".prop_map(Value::String),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                proptest::collection::vec(("[\"\\\\\u{0}-\u{1f}a-z]{0,12}", inner), 0..8)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }

    proptest! {
        /// Byte for byte what serde_json writes.
        #[test]
        fn prop_same_bytes_as_serde_json(v in value()) {
            prop_assert_eq!(written(&v), serde_json::to_vec(&v).unwrap());
        }
    }
}
