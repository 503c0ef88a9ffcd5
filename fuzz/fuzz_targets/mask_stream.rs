#![no_main]
//! The streaming masker's properties (`mcp_warden_fuzz::mask_stream`), and
//! the byte-level path against the tree engine on the same input: the same
//! count and error, and outputs that parse to the same JSON values.

use std::sync::Arc;

use mcp_warden_fuzz::mask_stream::masker;
use mcp_warden_shared::mask::{MaskContext, MaskError, ScrubSet, StreamKind, StreamMasker};
use serde_json::Value;

const RESOURCES: [&str; 4] = ["secrets", "pods", "configmaps", ""];

fn run(
    ctx: &MaskContext,
    kind: StreamKind,
    body: &[u8],
    chunk: usize,
    tree: bool,
) -> Result<(Vec<u8>, usize), MaskError> {
    let mut s = StreamMasker::new(masker(), ctx.clone(), kind);
    if tree {
        s = s.with_tree_engine_only();
    }
    let mut out = Vec::new();
    for piece in body.chunks(chunk) {
        out.extend(s.push(piece)?);
    }
    out.extend(s.finish()?);
    Ok((out, s.masked_count()))
}

fn values(b: &[u8]) -> Vec<Value> {
    serde_json::Deserializer::from_slice(b)
        .into_iter::<Value>()
        .collect::<Result<Vec<_>, _>>()
        .expect("the masker's output is valid JSON")
}

/// The same JSON value, numbers compared to within 2 ulp: the byte path
/// keeps the upstream's number text, the tree engine writes the f64 that
/// serde_json parsed from it, and serde_json's parser (without its
/// `float_roundtrip` feature, as the sidecar builds it) may be one ulp off
/// (`184467440737.9551615` became `184467440737.9551`, not `...95514`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if x.is_f64() || y.is_f64() {
                match (x.as_f64(), y.as_f64()) {
                    (Some(x), Some(y)) => {
                        x == y || (x - y).abs() <= 2.0 * f64::EPSILON * x.abs().max(y.abs())
                    }
                    _ => false,
                }
            } else {
                x == y
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((ka, va), (kb, vb))| ka == kb && same(va, vb))
        }
        _ => a == b,
    }
}

fn differential(data: &[u8]) {
    let [mode, split, body @ ..] = data else {
        return;
    };
    let kind = if mode & 1 == 0 {
        StreamKind::Json
    } else {
        StreamKind::Watch
    };
    let ctx = MaskContext {
        resource: RESOURCES[usize::from(mode >> 1) % RESOURCES.len()].into(),
        verb: if mode & 8 == 0 { "get" } else { "list" }.into(),
        scrub: (mode & 16 != 0).then(|| Arc::new(ScrubSet::new([b"PLANTEDtoken".as_slice()]))),
        ..MaskContext::default()
    };
    let chunk = usize::from(*split).max(1);
    match (
        run(&ctx, kind, body, chunk, true),
        run(&ctx, kind, body, chunk, false),
    ) {
        (Ok((t, tn)), Ok((b, bn))) => {
            assert_eq!(tn, bn, "counts differ");
            let (tv, bv) = (values(&t), values(&b));
            assert!(
                tv.len() == bv.len() && tv.iter().zip(&bv).all(|(a, b)| same(a, b)),
                "outputs differ: {tv:?} / {bv:?}"
            );
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        (t, b) => panic!(
            "one path failed: tree {:?}, bytes {:?}",
            t.map(|x| x.1),
            b.map(|x| x.1)
        ),
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mcp_warden_fuzz::mask_stream::check(data);
    differential(data);
});
