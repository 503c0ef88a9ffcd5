//! Memory and throughput of the streaming masker over a large Secret list.
//!
//! Not part of the test suite (ignored; `cargo test` does not build benches by
//! default). `scripts/mask-memory.sh` runs it in release mode, once per list
//! size, in separate processes so each peak RSS is its own:
//!
//! ```text
//! MASK_BENCH_SECRETS=50000 cargo test --release -p mcp-warden-sidecar --bench mask_stream -- --ignored --nocapture
//! ```
//!
//! The list is generated item by item into 64 KiB chunks (as a socket would
//! deliver it) and the masked output is only counted, so the peak RSS is the
//! masker's, not the generator's.

use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use mcp_warden_shared::mask::{MaskContext, MaskingConfig, StreamKind, StreamMasker};

const CHUNK: usize = 64 * 1024;

/// One Secret as kube-apiserver encodes it in a list (~4 KiB).
fn secret_item(i: usize) -> String {
    let blob = B64.encode(format!("secret-{i}-").repeat(240));
    format!(
        r#"{{"metadata":{{"name":"secret-{i}","namespace":"bench","uid":"00000000-0000-0000-0000-{i:012}","resourceVersion":"{i}","creationTimestamp":"2026-01-01T00:00:00Z","annotations":{{"kubectl.kubernetes.io/last-applied-configuration":"{{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{{\"name\":\"secret-{i}\"}}}}\n"}},"managedFields":[{{"manager":"kubectl","operation":"Apply","apiVersion":"v1","time":"2026-01-01T00:00:00Z","fieldsType":"FieldsV1","fieldsV1":{{"f:data":{{".":{{}},"f:password":{{}},"f:tls.crt":{{}}}},"f:type":{{}}}}}}]}},"data":{{"password":"{pw}","tls.crt":"{blob}"}},"type":"Opaque"}}"#,
        pw = B64.encode(format!("hunter-{i}")),
    )
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

#[test]
#[ignore = "benchmark: run by scripts/mask-memory.sh"]
fn mask_secret_list() {
    let n: usize = std::env::var("MASK_BENCH_SECRETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let masker = Arc::new(
        MaskingConfig::embedded_default()
            .compile()
            .expect("default masking compiles"),
    );
    let ctx = MaskContext {
        resource: "secrets".into(),
        verb: "list".into(),
        ..MaskContext::default()
    };
    let mut s = StreamMasker::new(masker, ctx, StreamKind::Json);
    let rss_before = peak_rss_kib();
    let mut chunk = String::with_capacity(2 * CHUNK);
    chunk.push_str(r#"{"kind":"SecretList","apiVersion":"v1","metadata":{"resourceVersion":"12345"},"items":["#);
    let (mut bytes_in, mut bytes_out, mut max_buffered) = (0usize, 0usize, 0usize);
    let t0 = Instant::now();
    for i in 0..n {
        if i > 0 {
            chunk.push(',');
        }
        chunk.push_str(&secret_item(i));
        if i + 1 == n {
            chunk.push_str("]}\n");
        }
        while chunk.len() >= CHUNK || (i + 1 == n && !chunk.is_empty()) {
            let take = chunk.len().min(CHUNK);
            let piece: String = chunk.drain(..take).collect();
            bytes_in += piece.len();
            bytes_out += s.push(piece.as_bytes()).expect("masks").len();
            max_buffered = max_buffered.max(s.buffered());
        }
    }
    bytes_out += s.finish().expect("complete").len();
    let secs = t0.elapsed().as_secs_f64();
    // Two data values and the last-applied annotation per Secret.
    assert_eq!(s.masked_count(), 3 * n);
    println!(
        "secrets={n} input_mb={:.1} output_mb={:.1} masked={} max_buffered_kib={} peak_rss_kib_before={rss_before} peak_rss_kib={} seconds={secs:.2} mb_per_s={:.0}",
        bytes_in as f64 / 1e6,
        bytes_out as f64 / 1e6,
        s.masked_count(),
        max_buffered / 1024,
        peak_rss_kib(),
        bytes_in as f64 / 1e6 / secs,
    );
}
