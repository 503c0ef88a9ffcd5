#!/usr/bin/env python3
"""One scripted session of the official Python `kubernetes` client, run by
tests/tests/it/apisim_vs_real.rs against kube-apisim and against a real
kube-apiserver, which compares the two transcripts.

Usage: apisim_vs_real.py NAMESPACE
Reads KUBECONFIG. Prints one JSON line per step on stdout:
{"step": NAME, "status": HTTP_CODE, "body": RESPONSE_JSON_OR_TEXT}.
Every call is made with _preload_content=False, so the body is the server's
own JSON, not the client's model of it.
"""

import json
import sys

try:
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException
except ImportError as e:  # pragma: no cover - reported by the Rust test
    print(f"the Python `kubernetes` package is missing: {e}", file=sys.stderr)
    sys.exit(3)


MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


def record(step, fn):
    try:
        r = fn()
        status, raw = r.status, r.data
    except ApiException as e:
        status, raw = e.status, e.body
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, TypeError):
        body = raw.decode() if isinstance(raw, bytes) else raw
    print(json.dumps({"step": step, "status": status, "body": body}), flush=True)


def main(ns):
    config.load_kube_config()
    v1 = client.CoreV1Api()
    apps = client.AppsV1Api()
    raw = dict(_preload_content=False)

    def cm(name, data, labels=None):
        return client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=name, labels=labels), data=data
        )

    record("cm.create", lambda: v1.create_namespaced_config_map(ns, cm("py-cm", {"a": "1"}, {"made-by": "py"}), **raw))
    record("cm.create.exists", lambda: v1.create_namespaced_config_map(ns, cm("py-cm", {"a": "1"}), **raw))
    record("cm.create.dry-run", lambda: v1.create_namespaced_config_map(ns, cm("py-dry", {"a": "1"}), dry_run="All", **raw))
    record("cm.get.dry-run-stored-nothing", lambda: v1.read_namespaced_config_map("py-dry", ns, **raw))
    record("cm.create.invalid-name", lambda: v1.create_namespaced_config_map(ns, cm("Not_Valid", {"a": "1"}), **raw))
    record("cm.create.invalid-key", lambda: v1.create_namespaced_config_map(ns, cm("py-badkey", {"no/slash": "1"}), **raw))
    record("cm.get", lambda: v1.read_namespaced_config_map("py-cm", ns, **raw))
    record("cm.get.missing", lambda: v1.read_namespaced_config_map("py-missing", ns, **raw))
    record("cm.list", lambda: v1.list_namespaced_config_map(ns, label_selector="made-by=py", **raw))
    record("cm.list.bad-selector", lambda: v1.list_namespaced_config_map(ns, label_selector="a in (", **raw))
    record("cm.patch.merge", lambda: v1.patch_namespaced_config_map("py-cm", ns, {"data": {"b": "2"}}, _content_type=MERGE, **raw))
    record("cm.patch.json", lambda: v1.patch_namespaced_config_map("py-cm", ns, [{"op": "add", "path": "/data/c", "value": "3"}], **raw))
    record("cm.patch.json.test-fails", lambda: v1.patch_namespaced_config_map("py-cm", ns, [{"op": "test", "path": "/data/a", "value": "nope"}], **raw))
    record("cm.patch.json.remove-missing", lambda: v1.patch_namespaced_config_map("py-cm", ns, [{"op": "remove", "path": "/data/zzz"}], **raw))
    record("cm.patch.missing", lambda: v1.patch_namespaced_config_map("py-missing", ns, {"data": {"b": "2"}}, _content_type=MERGE, **raw))
    cur = v1.read_namespaced_config_map("py-cm", ns)
    stale_rv = cur.metadata.resource_version
    cur.data["a"] = "changed"
    record("cm.replace", lambda: v1.replace_namespaced_config_map("py-cm", ns, cur, **raw))
    cur.metadata.resource_version = stale_rv
    cur.data["a"] = "stale"
    record("cm.replace.conflict", lambda: v1.replace_namespaced_config_map("py-cm", ns, cur, **raw))
    record("cm.replace.name-mismatch", lambda: v1.replace_namespaced_config_map("py-cm", ns, cm("py-other", {"a": "1"}), **raw))
    record("cm.replace.missing", lambda: v1.replace_namespaced_config_map("py-missing", ns, cm("py-missing", {"a": "1"}), **raw))

    secret = client.V1Secret(
        metadata=client.V1ObjectMeta(name="py-secret"),
        string_data={"password": "py-hunter2"},
        type="Opaque",
    )
    record("secret.create", lambda: v1.create_namespaced_secret(ns, secret, **raw))
    record("secret.get", lambda: v1.read_namespaced_secret("py-secret", ns, **raw))
    record("secret.patch.strategic", lambda: v1.patch_namespaced_secret("py-secret", ns, {"metadata": {"labels": {"tier": "db"}}}, _content_type=STRATEGIC, **raw))
    record("secret.create.bad-base64", lambda: v1.create_namespaced_secret(
        ns, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "py-bad"}, "data": {"k": "!!!"}}, **raw))

    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "py-dep", "labels": {"app": "py-dep"}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "py-dep"}},
            "template": {
                "metadata": {"labels": {"app": "py-dep"}},
                "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]},
            },
        },
    }
    record("deploy.create", lambda: apps.create_namespaced_deployment(ns, dep, **raw))
    bad = json.loads(json.dumps(dep))
    bad["metadata"]["name"] = "py-dep-bad"
    bad["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    record("deploy.create.selector-mismatch", lambda: apps.create_namespaced_deployment(ns, bad, **raw))
    record("deploy.patch.strategic", lambda: apps.patch_namespaced_deployment(
        "py-dep", ns, {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "example.invalid/app:2"}]}}}},
        _content_type=STRATEGIC, **raw))
    record("deploy.scale.get", lambda: apps.read_namespaced_deployment_scale("py-dep", ns, **raw))

    record("cm.delete", lambda: v1.delete_namespaced_config_map("py-cm", ns, **raw))
    record("cm.delete.missing", lambda: v1.delete_namespaced_config_map("py-cm", ns, **raw))
    record("secret.delete", lambda: v1.delete_namespaced_secret("py-secret", ns, **raw))
    record("deploy.delete", lambda: apps.delete_namespaced_deployment("py-dep", ns, **raw))



if __name__ == "__main__":
    main(sys.argv[1])
