//! The simulated pod, end to end (needs root: Linux namespaces and mounts;
//! the machinery is `mcp_warden_tests::simpod`).
//!
//! `mcp-warden-webhook inject -f` patches the fixture Deployment of a
//! Kubernetes MCP server; its pod is built from the template and run the way
//! a kubelet would, with namespaces standing in for the sandbox:
//!
//! - one network namespace is the pod's shared localhost; kube-apisim listens
//!   in it on 127.0.0.2:6443, standing for the `kubernetes` Service's IP, and
//!   every container gets the kubelet's service-link env for it (which the
//!   container's own `env` overrides, as in the kubelet);
//! - each container runs in its own mount namespace holding exactly the
//!   volumes the patched spec mounts into it, at their paths (read-only where
//!   the spec says so), as the spec's uid; the projected token volume is
//!   filled like the kubelet does (`token`, `ca.crt`, `namespace`, owned by
//!   the only container that mounts it); the work directory holding every
//!   volume's backing files and kube-apisim's state is hidden from the app;
//! - the sidecar runs as its container with its env; the app container runs
//!   `kubectl` with in-cluster config (no kubeconfig) and the Python client
//!   with `load_incluster_config()`.
//!
//! Asserted: both clients work through the sidecar, a Secret read is masked,
//! a delete is refused by the (embedded default) policy, and neither the
//! files visible in the app's mount namespace (its mounts, /var/run, /run,
//! /tmp, its HOME and the hidden work dir) nor its environment contain the
//! real token. The host's root file system stands in for the image.

#![allow(clippy::unwrap_used)]

use mcp_warden_tests::harness::{run, wait_for, workspace_bin, write_kubeconfig};
use mcp_warden_tests::simpod::*;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

#[test]
fn simulated_pod_clients_work_and_the_token_stays_hidden() {
    let pod = start_pod(
        "simulated_pod_clients_work_and_the_token_stays_hidden",
        true,
    );
    check_clients_and_token(&pod);
}

/// The container-only fallback (clusters before 1.29): the same promises.
#[test]
fn simulated_pod_container_only_fallback() {
    let pod = start_pod("simulated_pod_container_only_fallback", false);
    check_clients_and_token(&pod);
}

fn check_clients_and_token(pod: &SimPod) {
    // kubectl with in-cluster config (no kubeconfig anywhere).
    let pods = pod.ok(
        "kubectl get pods",
        &pod.kubectl("pods", &["get", "pods", "-n", "default", "-o", "name"]),
    );
    assert!(
        pods.contains("pod/web-0") && pods.contains("pod/db-0"),
        "{pods}"
    );

    // The Python client with load_incluster_config().
    let py = "from kubernetes import client, config\n\
              config.load_incluster_config()\n\
              names = [p.metadata.name for p in client.CoreV1Api().list_namespaced_pod('default').items]\n\
              print(' '.join(sorted(names)))\n";
    let names = pod.ok(
        "python client",
        &pod.app_run(
            "python",
            vec![pod.python.clone(), "-c".into(), py.into()],
            b"",
        ),
    );
    assert!(
        names.contains("web-0") && names.contains("web-1"),
        "{names}"
    );

    // No trace of the real token in anything the app can read.
    let mut roots: Vec<String> = vec![
        "/var/run".into(),
        "/run".into(),
        "/tmp".into(),
        pod.work.path().to_string_lossy().into_owned(),
    ];
    for m in pod.app["volumeMounts"].as_array().into_iter().flatten() {
        roots.push(m["mountPath"].as_str().unwrap().to_string());
    }
    let scan = "import os, sys\n\
                token = sys.stdin.read().strip().encode()\n\
                hits, seen = [], 0\n\
                for root in sys.argv[1:]:\n\
                \x20   for d, dirs, files in os.walk(root):\n\
                \x20       for f in files:\n\
                \x20           p = os.path.join(d, f)\n\
                \x20           try:\n\
                \x20               with open(p, 'rb') as fh: data = fh.read(1 << 22)\n\
                \x20           except OSError: continue\n\
                \x20           seen += 1\n\
                \x20           if token in data: hits.append(p)\n\
                env = '\\n'.join(f'{k}={v}' for k, v in os.environ.items()).encode()\n\
                if token in env: hits.append('environment')\n\
                with open('/proc/self/environ', 'rb') as fh:\n\
                \x20   if token in fh.read(): hits.append('/proc/self/environ')\n\
                print(f'scanned={seen} hits={hits}')\n\
                sys.exit(1 if hits else 0)\n";
    // The token goes in on stdin, so it is in no file or argv of the scan.
    let mut argv = vec![pod.python.clone(), "-c".into(), scan.into()];
    argv.extend(roots);
    // Control: the same scan does find the app's own (local) token.
    let local = std::fs::read_to_string(pod.volume_dirs["mcp-warden-local"].join("token")).unwrap();
    let control = pod.app_run("scan-control", argv.clone(), local.trim().as_bytes());
    let control_report = String::from_utf8_lossy(&control.stdout).into_owned();
    assert!(
        !control.status.success()
            && control_report.contains("/var/run/secrets/kubernetes.io/serviceaccount/token"),
        "the scan does not see the app's files: {control_report}"
    );
    let out = pod.app_run("scan", argv, pod.api.token.as_bytes());
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "real token visible to the app: {report} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let scanned: usize = report
        .trim()
        .strip_prefix("scanned=")
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    // At least the local files (ca.crt, token, namespace) were read.
    assert!(scanned >= 3, "{report}");
    // The app's token is the sidecar's local one, not the real one.
    assert!(!local.trim().is_empty());
    assert_ne!(local.trim(), pod.api.token);
    // The real token's backing file is not reachable from the app.
    let token_file = pod.volume_dirs["mcp-warden-token"].join("token");
    let peek = pod.app_run(
        "peek",
        vec!["cat".into(), token_file.to_string_lossy().into_owned()],
        b"",
    );
    assert!(
        !peek.status.success(),
        "the app could read the real token file"
    );
}

#[test]
fn simulated_pod_masks_secrets_and_enforces_policy() {
    let pod = start_pod("simulated_pod_masks_secrets_and_enforces_policy", true);

    // A Secret read comes back masked (and still valid base64).
    let secret = pod.ok(
        "kubectl get secret",
        &pod.kubectl(
            "secret",
            &[
                "get",
                "secret",
                "db-credentials",
                "-n",
                "default",
                "-o",
                "json",
            ],
        ),
    );
    let secret: Value = serde_json::from_str(&secret).unwrap();
    let password = secret["data"]["password"].as_str().unwrap();
    assert_ne!(
        password, "czNjcjN0LXBhc3N3b3Jk",
        "Secret value reached the app unmasked"
    );
    assert!(!secret.to_string().contains("czNjcjN0"), "{secret}");

    // The embedded default policy is read-only: a delete is refused.
    let del = pod.kubectl("delete", &["delete", "pod", "web-0", "-n", "default"]);
    assert!(!del.status.success());
    assert!(
        String::from_utf8_lossy(&del.stderr).contains("Forbidden"),
        "{}",
        String::from_utf8_lossy(&del.stderr)
    );
}

/// The tool calls of the scripted agent: a read, a Secret, a pod with a
/// secret env value, then a delete and an exec that the embedded default
/// policy forbids.
const MCP_CALLS: &str = r#"[
 {"tool": "pods_list_in_namespace", "arguments": {"namespace": "default"}},
 {"tool": "resources_get", "arguments": {"apiVersion": "v1", "kind": "Secret", "namespace": "default", "name": "db-credentials"}},
 {"tool": "pods_get", "arguments": {"namespace": "default", "name": "web-0"}},
 {"tool": "pods_delete", "arguments": {"namespace": "default", "name": "web-0"}},
 {"tool": "pods_exec", "arguments": {"namespace": "default", "name": "web-0", "command": ["cat", "/etc/hostname"]}}
]"#;

/// What every transport must show: reads work, secret values are masked,
/// forbidden calls come back as tool errors naming the rule, nothing
/// changed, and every call's API requests were recorded.
fn check_agent_session(pod: &SimPod, out: &std::process::Output) {
    let text = pod.ok("the MCP agent", out);
    let session: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let tools: Vec<&str> = session["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        tools.contains(&"pods_list") && tools.contains(&"pods_exec"),
        "{tools:?}"
    );
    let calls = session["calls"].as_array().unwrap();
    let call = |i: usize| {
        (
            calls[i]["isError"] == true,
            calls[i]["text"].as_str().unwrap_or(""),
        )
    };

    let (err, list) = call(0);
    assert!(
        !err && list.contains("web-0") && list.contains("db-0"),
        "{list}"
    );

    let (err, secret) = call(1);
    assert!(!err, "{secret}");
    assert!(secret.contains("KioqTUFTS0VEKioq"), "{secret}");
    assert!(
        !secret.contains("czNjcjN0") && !secret.contains("s3cr3t-password"),
        "a Secret value reached the agent: {secret}"
    );

    let (err, web) = call(2);
    assert!(!err && web.contains("DB_PASSWORD"), "{web}");
    assert!(
        !web.contains("hunter2"),
        "an env value reached the agent: {web}"
    );
    assert!(web.contains("***MASKED***"), "{web}");

    let (err, del) = call(3);
    assert!(err, "the forbidden delete was not a tool error: {del}");
    assert!(
        del.contains("forbidden") && del.contains("mcp-warden policy"),
        "{del}"
    );
    let (err, exec) = call(4);
    assert!(err, "the forbidden exec was not a tool error: {exec}");
    assert!(exec.contains("no-exec-attach-portforward-proxy"), "{exec}");

    // Nothing changed: the pod is still there.
    let (code, body) = pod.admin_get("/api/v1/namespaces/default/pods/web-0");
    assert_eq!(code, 200, "{body}");

    // Every call's API requests are in the recording (allowed and refused).
    let found = wait_for("the tool calls' events", Duration::from_secs(60), || {
        let evs: Vec<Value> = pod
            .recorded()
            .into_iter()
            .filter(|e| e["stage"] == "ResponseComplete")
            .collect();
        let has = |verb: &str, uri: &str, decision: &str| {
            evs.iter().any(|e| {
                e["verb"] == verb
                    && e["requestURI"].as_str().unwrap_or("").starts_with(uri)
                    && e["annotations"]["mcp-warden.io/decision"] == decision
            })
        };
        (has("list", "/api/v1/namespaces/default/pods", "allow")
            && has(
                "get",
                "/api/v1/namespaces/default/secrets/db-credentials",
                "allow",
            )
            && has("get", "/api/v1/namespaces/default/pods/web-0", "allow")
            && has("delete", "/api/v1/namespaces/default/pods/web-0", "deny")
            && has(
                "create",
                "/api/v1/namespaces/default/pods/web-0/exec",
                "deny",
            ))
        .then_some(evs)
    });
    let evs = found.unwrap_or_else(|e| panic!("{e}: {:#?}\n{}", pod.recorded(), pod.sidecar_log()));
    let all = serde_json::to_string(&evs).unwrap();
    assert!(
        !all.contains("hunter2") && !all.contains("czNjcjN0"),
        "{all}"
    );
}

/// The real kubernetes-mcp-server in the app container, driven over stdio
/// by the MCP SDK: it finds the API server by its in-cluster config alone.
#[test]
fn simulated_pod_real_mcp_server_over_stdio() {
    let pod = mcp_pod("simulated_pod_real_mcp_server_over_stdio", MCP_CALLS);
    let server = format!("{MCP_SERVER_DIR}/kubernetes-mcp-server");
    let argv = agent_argv(
        &pod,
        &["stdio", "--", &server, "--cluster-provider", "in-cluster"],
    );
    let out = pod.app_run("agent-stdio", argv, b"");
    check_agent_session(&pod, &out);
}

/// The same over streamable HTTP: the server listens in the pod, the agent
/// connects to it.
#[test]
fn simulated_pod_real_mcp_server_over_streamable_http() {
    let pod = mcp_pod(
        "simulated_pod_real_mcp_server_over_streamable_http",
        MCP_CALLS,
    );
    let server = format!("{MCP_SERVER_DIR}/kubernetes-mcp-server");
    let mut child = pod.app_spawn(
        "mcp-http",
        vec![
            server,
            "--cluster-provider".into(),
            "in-cluster".into(),
            "--port".into(),
            "8080".into(),
            "--bind-address".into(),
            "127.0.0.1".into(),
        ],
    );
    let ready = wait_for("the MCP server's port", Duration::from_secs(30), || {
        let out = run(
            Command::new("nsenter")
                .arg(format!("--net=/proc/{}/ns/net", pod.netns))
                .args(["curl", "-s", "-o", "/dev/null", "http://127.0.0.1:8080/mcp"]),
            Duration::from_secs(5),
        )
        .ok()?;
        out.status.success().then_some(())
    });
    if let Err(e) = ready {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{e}: {}",
            std::fs::read_to_string(pod.work.path().join("mcp-http.log")).unwrap_or_default()
        );
    }
    let argv = agent_argv(&pod, &["http", "http://127.0.0.1:8080/mcp"]);
    let out = pod.app_run("agent-http", argv, b"");
    let _ = child.kill();
    let _ = child.wait();
    check_agent_session(&pod, &out);
}

/// Reads allowed, deleting ConfigMaps needs a human.
const APPROVE_POLICY: &str = r#"apiVersion: mcp-warden.io/v1alpha1
kind: Policy
mode: enforce
defaultAction: deny
rules:
  - name: read-everything
    action: allow
    verbs: [get, list, watch]
    apiGroups: ["*"]
    resources: ["*"]
    namespaces: ["*"]
  - name: configmap-deletes-need-a-human
    action: approve
    verbs: [delete]
    apiGroups: [""]
    resources: [configmaps]
    namespaces: ["*"]
"#;

/// An `approve` rule holds the tool call until someone approves it with
/// `kubectl mcp-warden approve`; then the tool succeeds, and the recording
/// names the approver.
#[test]
fn simulated_pod_real_mcp_server_tool_call_held_for_approval() {
    let pod = start_pod_with(
        "simulated_pod_real_mcp_server_tool_call_held_for_approval",
        PodOptions {
            native_sidecar: true,
            collector: true,
            mcp_server: true,
            policy: Some(APPROVE_POLICY),
            approvals: true,
            ..PodOptions::default()
        },
    );
    std::fs::write(
        pod.work.path().join("calls.json"),
        r#"[{"tool": "resources_delete", "arguments": {"apiVersion": "v1", "kind": "ConfigMap", "namespace": "default", "name": "app-config"}}]"#,
    )
    .unwrap();
    let server = format!("{MCP_SERVER_DIR}/kubernetes-mcp-server");
    let argv = agent_argv(
        &pod,
        &["stdio", "--", &server, "--cluster-provider", "in-cluster"],
    );
    let mut agent = pod.app_spawn("agent-approve", argv);
    let admin = pod.work.path().join("admin.kubeconfig");
    let name = wait_for("the AccessRequest", Duration::from_secs(90), || {
        let out = run(
            &mut in_net_kubectl(
                pod.netns,
                &admin,
                &["get", "accessrequests", "-n", NAMESPACE, "-o", "json"],
            ),
            Duration::from_secs(30),
        )
        .ok()?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v["items"]
            .as_array()?
            .iter()
            .find(|a| a["status"]["state"] == "Pending")
            .and_then(|a| a["metadata"]["name"].as_str().map(str::to_string))
    });
    let name = name.unwrap_or_else(|e| {
        let _ = agent.kill();
        panic!("{e}\nsidecar log:\n{}", pod.sidecar_log())
    });
    assert!(
        agent.try_wait().unwrap().is_none(),
        "the tool call was not held"
    );
    let (code, _) = pod.admin_get("/api/v1/namespaces/default/configmaps/app-config");
    assert_eq!(code, 200, "deleted before approval");

    // alice approves with the kubectl plugin, from outside the pod.
    let alice = pod.work.path().join("alice.kubeconfig");
    write_kubeconfig(
        &alice,
        &format!("https://{SERVICE_IP}:{SERVICE_PORT}"),
        &pod.work.path().join("apisim/ca.crt"),
        ALICE_TOKEN,
    )
    .unwrap();
    let out = run(
        Command::new("nsenter")
            .arg(format!("--net=/proc/{}/ns/net", pod.netns))
            .arg("--")
            .arg(workspace_bin("kubectl-mcp_warden"))
            .env("KUBECONFIG", &alice)
            .args(["approve", &name, "-n", NAMESPACE]),
        Duration::from_secs(60),
    )
    .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && said.contains("decidedBy: alice"),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let done = mcp_warden_tests::harness::wait_child(&mut agent, Duration::from_secs(90));
    if done.is_none() {
        let _ = agent.kill();
        let _ = agent.wait();
    }
    let text =
        std::fs::read_to_string(pod.work.path().join("agent-approve.out")).unwrap_or_default();
    assert!(
        done.is_some_and(|s| s.success()),
        "the agent did not finish: {text}\n{}\n{}",
        std::fs::read_to_string(pod.work.path().join("agent-approve.log")).unwrap_or_default(),
        pod.sidecar_log()
    );
    let session: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let call = &session["calls"][0];
    assert_eq!(call["isError"], false, "{call}");
    let (code, _) = pod.admin_get("/api/v1/namespaces/default/configmaps/app-config");
    assert_eq!(code, 404, "the approved delete did not happen");

    let ev = wait_for(
        "the approved delete's event",
        Duration::from_secs(60),
        || {
            pod.recorded().into_iter().find(|e| {
                e["stage"] == "ResponseComplete"
                    && e["verb"] == "delete"
                    && e["objectRef"]["name"] == "app-config"
            })
        },
    )
    .unwrap();
    assert_eq!(
        ev["annotations"]["mcp-warden.io/decision"], "approve",
        "{ev}"
    );
    assert_eq!(
        ev["annotations"]["mcp-warden.io/approved-by"], "alice",
        "{ev}"
    );
    assert_eq!(ev["responseStatus"]["code"], 200, "{ev}");
}

/// What the agent's tools find on the real server: the objects of the
/// kube-apisim demo seed that the checks look at, and the MCP server's
/// ServiceAccount with every verb on core and apps resources (broad, as MCP
/// servers' RBAC often is: the sidecar's policy keeps it read-only). Not the
/// `edit` role: its rules come from the aggregation controller, which this
/// control plane does not run.
const REAL_OBJECTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: mcp}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: kubernetes-mcp-server, namespace: mcp}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: kubernetes-mcp-server-broad}
rules:
  - {apiGroups: ["", apps, authorization.k8s.io], resources: ["*"], verbs: ["*"]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: kubernetes-mcp-server-broad}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kubernetes-mcp-server-broad}
subjects: [{kind: ServiceAccount, name: kubernetes-mcp-server, namespace: mcp}]
---
apiVersion: v1
kind: Secret
metadata: {name: db-credentials, namespace: default}
type: Opaque
data: {username: YWRtaW4tdXNlcg==, password: czNjcjN0LXBhc3N3b3Jk}
---
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: default, labels: {app: web}}
spec:
  containers:
    - name: web
      image: nginx:1.27
      env:
        - {name: DB_PASSWORD, value: hunter2}
        - {name: LOG_LEVEL, value: info}
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: default, labels: {app: db}}
spec:
  containers: [{name: db, image: postgres:16}]
"#;

/// The same agent session against the real kube-apiserver 1.20 (reached
/// from the pod's network at the "Service IP"): the sidecar holds a real
/// TokenRequest token of the pod's ServiceAccount, which RBAC lets edit;
/// the policy keeps the agent read-only, masks, and records.
#[test]
fn simulated_pod_real_mcp_server_against_the_real_api_server() {
    use mcp_warden_tests::realkube::{ADMIN, RealKube};
    let kube = RealKube::shared().unwrap();
    kube.apply(REAL_OBJECTS).unwrap();
    let real = RealUpstream {
        addr: kube.addr(),
        ca_pem: kube.ca_pem().to_string(),
        admin_token: kube.token(ADMIN).unwrap(),
        pod_token: kube
            .service_account_token("mcp", "kubernetes-mcp-server", 3600)
            .unwrap(),
    };
    let pod = mcp_pod_with(
        "simulated_pod_real_mcp_server_against_the_real_api_server",
        MCP_CALLS,
        Some(real),
    );
    let server = format!("{MCP_SERVER_DIR}/kubernetes-mcp-server");
    let argv = agent_argv(
        &pod,
        &["stdio", "--", &server, "--cluster-provider", "in-cluster"],
    );
    let out = pod.app_run("agent-real", argv, b"");
    check_agent_session(&pod, &out);
    // The server's own audit log saw the reads as the pod's ServiceAccount,
    // and never the refused delete.
    let audited = kube.audit_events();
    let sa = "system:serviceaccount:mcp:kubernetes-mcp-server";
    let by_sa = |verb: &str, uri: &str| {
        audited.iter().any(|e| {
            e["user"]["username"] == sa
                && e["verb"] == verb
                && e["requestURI"].as_str().unwrap_or("").starts_with(uri)
        })
    };
    assert!(by_sa(
        "get",
        "/api/v1/namespaces/default/secrets/db-credentials"
    ));
    assert!(!by_sa("delete", "/api/v1/namespaces/default/pods/web-0"));
}
