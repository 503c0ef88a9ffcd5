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
            assert_eq!(values(&t), values(&b), "outputs differ");
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
