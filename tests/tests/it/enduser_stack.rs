//! End users end to end: the `mcp-warden-sidecar` binary with `--oidc-*`
//! flags in front of kube-apisim, and a test issuer (`mcp_warden_tests::oidc`:
//! ES256 keys made in the test, discovery and JWKS over HTTPS on loopback).
//! A valid token is accepted and recorded as `impersonatedUser`; expired,
//! wrong-audience, wrong-issuer and `alg: none` tokens get a 401 naming why;
//! an unknown key id makes the sidecar fetch the JWKS once more and no more
//! within the refresh interval; a rotated key is picked up; a static JWKS
//! file works without the network; `users:`/`groups:` rules match the end
//! user and never the app's own requests; no token text reaches the log or
//! the recording.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use mcp_warden_tests::harness::{ApiSim, ApiSimOptions, wait_for};
use mcp_warden_tests::oidc::{AUDIENCE, TestIssuer, now, unsigned_token};
use mcp_warden_tests::realkube::https_get;
use mcp_warden_tests::stack::{Collector, Sidecar, SidecarOptions};
use serde_json::{Value, json};

const POLICY: &str = r#"apiVersion: mcp-warden.io/v1alpha1
kind: Policy
defaultAction: deny
rules:
  - name: configmap-reads
    action: allow
    verbs: [get, list]
    resources: [configmaps]
  - name: alice-reads-secrets
    action: allow
    verbs: [get, list]
    resources: [secrets]
    users: ["alice@*"]
  - name: no-contractor-configmaps
    action: deny
    verbs: ["*"]
    resources: [configmaps]
    groups: ["oidc:contractors"]
    message: contractors do not read configmaps
"#;

struct Stack {
    _sim: ApiSim,
    collector: Collector,
    sidecar: Sidecar,
    _dir: tempfile::TempDir,
}

fn stack(issuer: &TestIssuer, extra: &[String]) -> Stack {
    let sim = ApiSim::start(ApiSimOptions::demo()).unwrap();
    let collector = Collector::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let mut args = issuer.sidecar_args();
    args.push("--access-log=all".into());
    args.extend(extra.iter().cloned());
    let sidecar = Sidecar::start(
        &sim,
        SidecarOptions::default()
            .policy(&policy)
            .collector(&collector)
            .args(args),
    )
    .unwrap();
    Stack {
        _sim: sim,
        collector,
        sidecar,
        _dir: dir,
    }
}

impl Stack {
    fn get(&self, token: &str, path: &str) -> (u16, String) {
        let addr: SocketAddr = self
            .sidecar
            .url()
            .trim_start_matches("https://")
            .parse()
            .unwrap();
        let ca = std::fs::read_to_string(self.sidecar.local_dir().join("ca.crt")).unwrap();
        https_get(addr, &ca, token, path).unwrap()
    }

    /// The 401's message, asserting it is one.
    fn rejected(&self, token: &str) -> String {
        let (code, body) = self.get(token, CONFIGMAPS);
        assert_eq!(code, 401, "{body}");
        let status: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["reason"], "Unauthorized");
        status["message"].as_str().unwrap().to_string()
    }
}

const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";
const SECRETS: &str = "/api/v1/namespaces/default/secrets";

#[test]
fn end_user_tokens_are_verified_and_rejections_name_the_reason() {
    let issuer = TestIssuer::start().unwrap();
    let s = stack(&issuer, &[]);
    let alice = issuer.token("alice@example.com", &["dev"]).unwrap();
    let (code, body) = s.get(&alice, CONFIGMAPS);
    assert_eq!(code, 200, "{body}");
    // The app's own local token still works.
    let local = s.sidecar.token().unwrap();
    assert_eq!(s.get(&local, CONFIGMAPS).0, 200);

    let mut tokens = vec![alice.clone()];
    let mut expect = |claims: Value, reason: &str| {
        let t = issuer.token_with(claims).unwrap();
        let msg = s.rejected(&t);
        assert!(msg.contains(reason), "{reason:?} not in {msg:?}");
        tokens.push(t);
    };
    let base = issuer.claims("bob@example.com", &["dev"]);
    let with = |k: &str, v: Value| {
        let mut c = base.clone();
        c[k] = v;
        c
    };
    expect(with("exp", json!(now() - 3600)), "token expired");
    expect(with("nbf", json!(now() + 3600)), "token not yet valid");
    expect(with("aud", json!("someone-else")), "audience mismatch");
    expect(
        with("iss", json!("https://other.example.com")),
        "unknown issuer",
    );
    let mut no_aud = base.clone();
    no_aud.as_object_mut().unwrap().remove("aud");
    expect(no_aud, "missing claim aud");
    let unsigned = unsigned_token(&base);
    assert!(s.rejected(&unsigned).contains("algorithm none not allowed"));
    tokens.push(unsigned);
    // A token whose signature was made over other claims.
    let forged = {
        let mut parts: Vec<String> = alice.split('.').map(str::to_string).collect();
        let other = issuer.token("mallory@example.com", &["admins"]).unwrap();
        parts[1] = other.split('.').nth(1).unwrap().to_string();
        parts.join(".")
    };
    assert!(s.rejected(&forged).contains("invalid signature"));
    tokens.push(forged);
    // Neither a JWT nor the local token: kube-apiserver's plain 401.
    assert_eq!(s.rejected("not-a-token"), "Unauthorized");

    // Recorded as kube-apiserver records impersonation: `user` is the
    // sidecar's upstream identity, `impersonatedUser` the person.
    let events = wait_for("alice's event", Duration::from_secs(10), || {
        let ev: Vec<Value> = s
            .collector
            .events()
            .into_iter()
            .filter(|e| {
                e["stage"] == "ResponseComplete"
                    && e["impersonatedUser"]["username"] == "alice@example.com"
            })
            .collect();
        (!ev.is_empty()).then_some(ev)
    })
    .unwrap();
    let e = &events[0];
    assert_eq!(e["impersonatedUser"]["groups"], json!(["oidc:dev"]));
    assert_eq!(
        e["annotations"]["mcp-warden.io/end-user-issuer"],
        issuer.url()
    );
    assert_ne!(e["user"]["username"], "alice@example.com");
    assert!(!e["user"]["username"].as_str().unwrap_or("").is_empty());
    // The 401s are recorded without a user.
    wait_for("the 401s recorded", Duration::from_secs(10), || {
        let n = s
            .collector
            .events()
            .iter()
            .filter(|e| e["responseStatus"]["code"] == 401)
            .count();
        (n >= 8).then_some(())
    })
    .unwrap();
    // No token text anywhere; the access log names the person.
    let log = s.sidecar.log();
    assert!(log.contains("\"end_user\":\"alice@example.com\""), "{log}");
    let recorded = serde_json::to_string(&s.collector.events()).unwrap();
    for t in &tokens {
        for part in t.split('.').filter(|p| p.len() > 16) {
            assert!(!log.contains(part), "token text in the sidecar log");
            assert!(!recorded.contains(part), "token text in the recording");
        }
    }
    assert!(!log.contains(&local) && !recorded.contains(&local));
}

#[test]
fn unknown_key_id_refreshes_the_keys_once_per_interval() {
    let issuer = TestIssuer::start().unwrap();
    let s = stack(&issuer, &["--oidc-jwks-refresh-interval=1s".to_string()]);
    assert_eq!(issuer.jwks_fetches(), 0, "keys are fetched on first use");
    let alice = issuer.token("alice@example.com", &[]).unwrap();
    assert_eq!(s.get(&alice, CONFIGMAPS).0, 200);
    assert_eq!(issuer.jwks_fetches(), 1);
    // Known keys are not fetched again.
    assert_eq!(s.get(&alice, CONFIGMAPS).0, 200);
    assert_eq!(issuer.jwks_fetches(), 1);
    // Past the interval, a token with a key id the issuer does not publish
    // makes the sidecar fetch once more, then it is refused.
    std::thread::sleep(Duration::from_millis(1200));
    issuer.sign_with_unpublished("key-unpublished").unwrap();
    let stranger = issuer.token("alice@example.com", &[]).unwrap();
    assert!(s.rejected(&stranger).contains("unknown key id"));
    assert_eq!(
        issuer.jwks_fetches(),
        2,
        "refreshed once for the unknown kid"
    );
    // Within the interval, more unknown key ids fetch nothing.
    for _ in 0..5 {
        assert!(s.rejected(&stranger).contains("unknown key id"));
    }
    assert_eq!(issuer.jwks_fetches(), 2, "no more than once per interval");
}

#[test]
fn a_rotated_key_is_picked_up_and_the_withdrawn_one_refused() {
    let issuer = TestIssuer::start().unwrap();
    let s = stack(&issuer, &["--oidc-jwks-refresh-interval=1s".to_string()]);
    let old = issuer.token("alice@example.com", &[]).unwrap();
    assert_eq!(s.get(&old, CONFIGMAPS).0, 200);
    issuer.rotate("key-2").unwrap();
    let new = issuer.token("alice@example.com", &[]).unwrap();
    // The new key is fetched once the refresh interval allows (bounded).
    let ok = wait_for("the rotated key accepted", Duration::from_secs(10), || {
        let (code, _) = s.get(&new, CONFIGMAPS);
        (code == 200).then_some(())
    });
    assert!(ok.is_ok(), "the rotated key was never accepted");
    assert!(s.rejected(&old).contains("unknown key id"));
}

#[test]
fn a_static_jwks_file_needs_no_network() {
    let issuer = TestIssuer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, issuer.jwks_json()).unwrap();
    let s = stack(&issuer, &[format!("--oidc-jwks-file={}", jwks.display())]);
    let alice = issuer.token("alice@example.com", &[]).unwrap();
    assert_eq!(s.get(&alice, CONFIGMAPS).0, 200);
    assert_eq!(issuer.jwks_fetches(), 0, "the file, not the issuer");
    let mut expired = issuer.claims("alice@example.com", &[]);
    expired["exp"] = json!(now() - 3600);
    assert!(
        s.rejected(&issuer.token_with(expired).unwrap())
            .contains("token expired")
    );
}

#[test]
fn users_and_groups_rules_match_the_end_user_only() {
    let issuer = TestIssuer::start().unwrap();
    let s = stack(&issuer, &[]);
    let alice = issuer.token("alice@example.com", &["dev"]).unwrap();
    let bob = issuer.token("bob@example.com", &["dev"]).unwrap();
    let carol = issuer.token("carol@example.com", &["contractors"]).unwrap();
    let local = s.sidecar.token().unwrap();
    assert_eq!(s.get(&alice, SECRETS).0, 200, "alice-reads-secrets");
    let (code, body) = s.get(&bob, SECRETS);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("no rule matched"), "{body}");
    // A rule with users: never matches a request without an end user.
    assert_eq!(s.get(&local, SECRETS).0, 403);
    // groups: deny for carol's group; others read configmaps.
    let (code, body) = s.get(&carol, CONFIGMAPS);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("no-contractor-configmaps"), "{body}");
    assert!(
        body.contains("contractors do not read configmaps"),
        "{body}"
    );
    assert_eq!(s.get(&bob, CONFIGMAPS).0, 200);
    assert_eq!(s.get(&local, CONFIGMAPS).0, 200);
    let _ = AUDIENCE;
}
