//! CPU cost, memory and throughput of the streaming masker over large lists.
//!
//! Not part of the test suite (ignored; `cargo test` does not build benches by
//! default). `scripts/mask-memory.sh` runs it in release mode, once per list
//! size, in separate processes so each peak RSS is its own:
//!
//! ```text
//! MASK_BENCH_SECRETS=50000 cargo test --release -p mcp-warden-shared --bench mask_stream -- --ignored --nocapture mask_secret_list
//! ```
//!
//! The list is generated item by item into 64 KiB chunks (as a socket would
//! deliver it) and the masked output is only counted, so the peak RSS is the
//! masker's, not the generator's. The throughput is MB of input JSON per
//! second of the thread's CPU time spent masking: the list is generated
//! twice, once only generated and once generated and masked, and the
//! difference of the thread's CPU time (from `/proc/thread-self/schedstat`,
//! nanoseconds on CPU, read at the ends of the runs) is the masker's; the
//! time the thread waits for a core on a shared machine is not counted.
//! Take it from large lists (seconds of CPU): the kernel updates that
//! figure at scheduler ticks.
//!
//! `MASK_BENCH_TOKEN=1` adds a token scrub set, as the sidecar runs it: its
//! upstream token is scrubbed from every string by the masker and from the
//! masked output's bytes by a `StreamScrubber`. Any other value of
//! `MASK_BENCH_TOKEN` is the token itself (the search's cost depends on the
//! token's bytes: kube-apisim's are 64 hex digits, a service account's a
//! JWT). For a
//! stable figure, run one list size under `valgrind --tool=callgrind
//! --toggle-collect='*mask_piece*' --toggle-collect='*mask_end*'`
//! (`scripts/mask-instructions.sh`), which counts only the masker's and the
//! scrubber's instructions (the list's generation is not counted).

use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use mcp_warden_shared::mask::{
    MaskContext, MaskingConfig, ScrubSet, StreamKind, StreamMasker, StreamScrubber,
};

const CHUNK: usize = 64 * 1024;

/// One Secret as kube-apiserver encodes it in a list (~4 KiB).
fn secret_item(i: usize) -> String {
    let blob = B64.encode(format!("secret-{i}-").repeat(240));
    format!(
        r#"{{"metadata":{{"name":"secret-{i}","namespace":"bench","uid":"00000000-0000-0000-0000-{i:012}","resourceVersion":"{i}","creationTimestamp":"2026-01-01T00:00:00Z","annotations":{{"kubectl.kubernetes.io/last-applied-configuration":"{{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{{\"name\":\"secret-{i}\"}}}}\n"}},"managedFields":[{{"manager":"kubectl","operation":"Apply","apiVersion":"v1","time":"2026-01-01T00:00:00Z","fieldsType":"FieldsV1","fieldsV1":{{"f:data":{{".":{{}},"f:password":{{}},"f:tls.crt":{{}}}},"f:type":{{}}}}}}]}},"data":{{"password":"{pw}","tls.crt":"{blob}"}},"type":"Opaque"}}"#,
        pw = B64.encode(format!("hunter-{i}")),
    )
}

/// One Pod as kube-apiserver encodes it in a list (~2.5 KiB): labels,
/// managedFields, a container with env (one entry masked by the default
/// `envNames` rule), status with conditions.
fn pod_item(i: usize) -> String {
    format!(
        r#"{{"metadata":{{"name":"web-{i}","generateName":"web-","namespace":"bench","uid":"00000000-0000-0000-0000-{i:012}","resourceVersion":"{i}","creationTimestamp":"2026-01-01T00:00:00Z","labels":{{"app":"web","pod-template-hash":"5d8f7c9b4"}},"ownerReferences":[{{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-5d8f7c9b4","uid":"11111111-2222-3333-4444-555555555555","controller":true,"blockOwnerDeletion":true}}],"managedFields":[{{"manager":"kube-controller-manager","operation":"Update","apiVersion":"v1","time":"2026-01-01T00:00:00Z","fieldsType":"FieldsV1","fieldsV1":{{"f:metadata":{{"f:generateName":{{}},"f:labels":{{".":{{}},"f:app":{{}}}}}},"f:spec":{{"f:containers":{{"k:{{\"name\":\"web\"}}":{{".":{{}},"f:image":{{}},"f:name":{{}}}}}}}}}}}}]}},"spec":{{"containers":[{{"name":"web","image":"registry.example/web:1.2.{i}","ports":[{{"containerPort":8080,"protocol":"TCP"}}],"env":[{{"name":"LOG_LEVEL","value":"info"}},{{"name":"DB_HOST","value":"db.bench.svc"}},{{"name":"DB_PASSWORD","value":"pw-{i}-hunter2"}}],"resources":{{"limits":{{"cpu":"500m","memory":"256Mi"}},"requests":{{"cpu":"100m","memory":"128Mi"}}}},"terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File","imagePullPolicy":"IfNotPresent"}}],"restartPolicy":"Always","terminationGracePeriodSeconds":30,"dnsPolicy":"ClusterFirst","serviceAccountName":"default","serviceAccount":"default","nodeName":"node-1","securityContext":{{}},"schedulerName":"default-scheduler","tolerations":[{{"key":"node.kubernetes.io/not-ready","operator":"Exists","effect":"NoExecute","tolerationSeconds":300}}],"priority":0,"enableServiceLinks":true,"preemptionPolicy":"PreemptLowerPriority"}},"status":{{"phase":"Running","conditions":[{{"type":"Initialized","status":"True","lastProbeTime":null,"lastTransitionTime":"2026-01-01T00:00:00Z"}},{{"type":"Ready","status":"True","lastProbeTime":null,"lastTransitionTime":"2026-01-01T00:00:05Z"}}],"hostIP":"10.0.0.1","podIP":"10.1.{}.{}","startTime":"2026-01-01T00:00:00Z","containerStatuses":[{{"name":"web","state":{{"running":{{"startedAt":"2026-01-01T00:00:04Z"}}}},"ready":true,"restartCount":0,"image":"registry.example/web:1.2.{i}","imageID":"registry.example/web@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","containerID":"containerd://{i:064}","started":true}}],"qosClass":"Burstable"}}}}"#,
        i / 250,
        i % 250,
    )
}

/// One ConfigMap with nothing to mask (~1.3 KiB): labels, managedFields,
/// a few configuration keys none of which looks secret.
fn configmap_item(i: usize) -> String {
    format!(
        r#"{{"metadata":{{"name":"config-{i}","namespace":"bench","uid":"00000000-0000-0000-0000-{i:012}","resourceVersion":"{i}","creationTimestamp":"2026-01-01T00:00:00Z","labels":{{"app":"web","tier":"frontend"}},"managedFields":[{{"manager":"kubectl","operation":"Update","apiVersion":"v1","time":"2026-01-01T00:00:00Z","fieldsType":"FieldsV1","fieldsV1":{{"f:data":{{".":{{}},"f:LOG_LEVEL":{{}},"f:nginx.conf":{{}}}},"f:metadata":{{"f:labels":{{".":{{}},"f:app":{{}},"f:tier":{{}}}}}}}}}}]}},"data":{{"LOG_LEVEL":"info","FEATURE_FLAGS":"a,b,c","CACHE_SIZE":"{i}","nginx.conf":"server {{\n  listen 8080;\n  location / {{\n    proxy_pass http://backend-{i}.bench.svc:8080;\n  }}\n}}\n","app.properties":"spring.datasource.url=jdbc:postgresql://db:5432/app\nspring.jpa.open-in-view=false\nserver.port=8080\n"}}}}"#
    )
}

/// Nanoseconds this thread has spent on a CPU.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
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

/// Generate the list of `n` items made by `item` in 64 KiB chunks and hand
/// each chunk to `sink`; returns the bytes generated.
fn generate(
    list_kind: &str,
    n: usize,
    item: fn(usize) -> String,
    mut sink: impl FnMut(&[u8]),
) -> usize {
    let mut chunk = String::with_capacity(2 * CHUNK);
    chunk.push_str(&format!(
        r#"{{"kind":"{list_kind}","apiVersion":"v1","metadata":{{"resourceVersion":"12345"}},"items":["#
    ));
    let mut bytes = 0usize;
    for i in 0..n {
        if i > 0 {
            chunk.push(',');
        }
        chunk.push_str(&item(i));
        if i + 1 == n {
            chunk.push_str("]}\n");
        }
        while chunk.len() >= CHUNK || (i + 1 == n && !chunk.is_empty()) {
            let take = chunk.len().min(CHUNK);
            let piece: String = chunk.drain(..take).collect();
            bytes += piece.len();
            sink(piece.as_bytes());
        }
    }
    bytes
}

/// Mask a list of `n` items made by `item`, streamed in 64 KiB chunks;
/// prints one result line and returns the values masked.
fn run_list(
    label: &str,
    resource: &str,
    list_kind: &str,
    n: usize,
    item: fn(usize) -> String,
) -> usize {
    let masker = Arc::new(
        MaskingConfig::embedded_default()
            .compile()
            .expect("default masking compiles"),
    );
    let token = match std::env::var("MASK_BENCH_TOKEN") {
        Ok(v) if v == "1" => Some(
            "eyJhbGciOiJSUzI1NiIsImtpZCI6ImJlbmNoIn0.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YmVuY2g6bWNwIn0.c2lnbmF0dXJl"
                .to_string(),
        ),
        Ok(v) if !v.is_empty() => Some(v),
        _ => None,
    };
    let set = token
        .as_ref()
        .map(|t| Arc::new(ScrubSet::new([t.as_bytes()])));
    let ctx = MaskContext {
        resource: resource.into(),
        verb: "list".into(),
        scrub: set.clone(),
        ..MaskContext::default()
    };
    let token = token.is_some();
    let mut s = StreamMasker::new(masker, ctx, StreamKind::Json);
    // The sidecar's second pass: the token scrub over the output bytes.
    let mut scrubber = set.map(StreamScrubber::new);
    // The generator alone, for its CPU time.
    let mut sum = 0u64;
    let g0 = thread_cpu_ns();
    generate(list_kind, n, item, |piece| {
        sum = sum.wrapping_add(u64::from(piece[piece.len() / 2]));
    });
    let gen_ns = thread_cpu_ns().saturating_sub(g0);
    std::hint::black_box(sum);
    let rss_before = peak_rss_kib();
    let (mut bytes_out, mut max_buffered) = (0usize, 0usize);
    let t0 = Instant::now();
    let c0 = thread_cpu_ns();
    let bytes_in = generate(list_kind, n, item, |piece| {
        bytes_out += mask_piece(&mut s, scrubber.as_mut(), piece);
        max_buffered = max_buffered.max(s.buffered());
    });
    bytes_out += mask_end(&mut s, scrubber.as_mut());
    let both_ns = thread_cpu_ns().saturating_sub(c0);
    let mask_ns = both_ns.saturating_sub(gen_ns);
    let secs = t0.elapsed().as_secs_f64();
    let mb_in = bytes_in as f64 / 1e6;
    let (by_bytes, by_tree) = s.units_masked();
    println!(
        "list={label} items={n} token_scrub={token} input_mb={mb_in:.1} input_bytes={bytes_in} output_mb={:.1} masked={} units_by_bytes={by_bytes} units_by_tree={by_tree} max_buffered_kib={} peak_rss_kib_before={rss_before} peak_rss_kib={} masker_cpu_seconds={:.3} mb_per_cpu_s={:.0} wall_seconds_incl_generation={secs:.2}",
        bytes_out as f64 / 1e6,
        s.masked_count(),
        max_buffered / 1024,
        peak_rss_kib(),
        mask_ns as f64 / 1e9,
        mb_in / (mask_ns as f64 / 1e9).max(1e-9),
    );
    s.masked_count()
}

/// Masks (and scrubs) one piece; returns the output's length. Not inlined:
/// `scripts/mask-instructions.sh` counts the instructions inside it.
#[inline(never)]
fn mask_piece(s: &mut StreamMasker, scrubber: Option<&mut StreamScrubber>, piece: &[u8]) -> usize {
    let out = s.push(piece).expect("masks");
    match scrubber {
        Some(sc) => sc.push(&out).len(),
        None => out.len(),
    }
}

/// The end of the list, as [`mask_piece`].
#[inline(never)]
fn mask_end(s: &mut StreamMasker, scrubber: Option<&mut StreamScrubber>) -> usize {
    let last = s.finish().expect("complete");
    match scrubber {
        Some(sc) => sc.push(&last).len() + sc.finish().len(),
        None => last.len(),
    }
}

fn items(default: usize) -> usize {
    std::env::var("MASK_BENCH_SECRETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
#[ignore = "benchmark: run by scripts/mask-memory.sh"]
fn mask_secret_list() {
    let n = items(500);
    let masked = run_list("secrets", "secrets", "SecretList", n, secret_item);
    // Two data values and the last-applied annotation per Secret.
    assert_eq!(masked, 3 * n);
}

#[test]
#[ignore = "benchmark: run by scripts/mask-memory.sh"]
fn mask_pod_list() {
    let n = items(500);
    let masked = run_list("pods", "pods", "PodList", n, pod_item);
    // The DB_PASSWORD env value of each Pod.
    assert_eq!(masked, n);
}

#[test]
#[ignore = "benchmark: run by scripts/mask-memory.sh"]
fn mask_configmap_list() {
    let n = items(500);
    let masked = run_list(
        "configmaps",
        "configmaps",
        "ConfigMapList",
        n,
        configmap_item,
    );
    assert_eq!(masked, 0);
}
