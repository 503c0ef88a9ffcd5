//! Replays every input kept under `fuzz/regressions/<target>/`,
//! `fuzz/seeds/<target>/` and (when seeded) `fuzz/corpus/<target>/` through the fuzz targets' property checks, with a
//! plain `cargo test` (no libFuzzer, no nightly flags): a crash once found
//! stays a regression case.

use std::path::{Path, PathBuf};

type Check = fn(&[u8]);

const TARGETS: [(&str, Check); 4] = [
    ("request_parse", mcp_warden_fuzz::request_parse::check),
    ("mask_stream", mcp_warden_fuzz::mask_stream::check),
    ("ws_frame_tap", mcp_warden_fuzz::ws_frame_tap::check),
    ("policy_parse", mcp_warden_fuzz::policy_parse::check),
];

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

fn replay(kind: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    let mut failures = Vec::new();
    for (target, check) in TARGETS {
        for file in inputs(&root.join(kind).join(target)) {
            let data = std::fs::read(&file).expect("readable input");
            n += 1;
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                failures.push(file.display().to_string());
            }
        }
    }
    assert!(
        failures.is_empty(),
        "failing inputs:\n  {}",
        failures.join("\n  ")
    );
    n
}

#[test]
fn regressions_hold() {
    let n = replay("regressions");
    eprintln!("replayed {n} regression inputs");
}

#[test]
fn seeds_hold() {
    let n = replay("seeds");
    eprintln!("replayed {n} committed seeds");
    assert!(n > 0, "no seeds under fuzz/seeds/");
}

/// The working corpus (fuzz/seed.sh and the fuzzer fill it; not committed).
#[test]
fn corpus_holds() {
    let n = replay("corpus");
    eprintln!("replayed {n} corpus inputs");
}

/// Nesting far beyond what the fuzzer's input sizes reach: refused or
/// parsed, never a stack overflow.
#[test]
fn deep_nesting() {
    let deep = |open: &str, close: &str, n: usize| {
        let mut v = open.repeat(n).into_bytes();
        v.extend(close.repeat(n).into_bytes());
        v
    };
    for kind in [0u8, 2, 4] {
        for (o, c) in [("[", "]"), ("{\"a\":", "}")] {
            let mut input = vec![kind, 0];
            input.extend(deep(o, c, 100_000));
            mcp_warden_fuzz::mask_stream::check(&input);
        }
    }
    // serde-saphyr refuses YAML nested deeper than 64. Below that, an
    // unoptimized build needs ~40 KiB of stack per level (Node and Spanned
    // recurse through the deserializer), more than a 2 MiB test thread has;
    // release builds need a small fraction. So: a main-thread-sized stack.
    let policies = std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(move || {
            for (o, c, n) in [("[", "]", 50_000), ("{a: ", "}", 20_000), ("- ", "", 63)] {
                let mut policy = b"rules: ".to_vec();
                policy.extend(deep(o, c, n));
                mcp_warden_fuzz::policy_parse::check(&policy);
            }
        })
        .expect("spawns");
    if let Err(e) = policies.join() {
        std::panic::resume_unwind(e);
    }
}

/// The checks themselves: inputs that must pass, in each target's format.
#[test]
fn known_inputs() {
    mcp_warden_fuzz::request_parse::check(
        b"GET /api/v1/namespaces/default/pods/web/exec?command=sh\nimpersonate-user: bob\nimpersonate-group: a\nimpersonate-group: b\n",
    );
    mcp_warden_fuzz::request_parse::check(b"GET /api/v1/namespaces/d%20x/pods/w%C3%A9b%3F");
    let mut secret = vec![0u8, 3];
    secret.extend_from_slice(br#"{"kind":"SecretList","items":[{"data":{"a":"aHVudGVyMg=="}}]}"#);
    mcp_warden_fuzz::mask_stream::check(&secret);
    mcp_warden_fuzz::mask_stream::check(&[1, 5, 0, 3, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    mcp_warden_fuzz::ws_frame_tap::check(b"\x00\x01\x08\x82\x06\x01hello");
    mcp_warden_fuzz::ws_frame_tap::check(b"\x01\x03abcdefghijklmnopqrstuvwxyz0123456789");
    mcp_warden_fuzz::policy_parse::check(
        mcp_warden_shared::policy::EMBEDDED_DEFAULT_YAML.as_bytes(),
    );
}
