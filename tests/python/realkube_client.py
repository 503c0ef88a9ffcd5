#!/usr/bin/env python3
"""Drives a real kube-apiserver through the mcp-warden sidecar with the official
Python `kubernetes` client, as a service account bound to a least-privilege Role.

Usage: realkube_client.py NAMESPACE
Reads KUBECONFIG like any client; prints one JSON document on stdout that the
Rust test (tests/tests/it/realkube_sidecar.rs) asserts on. Exits non-zero on any
unexpected error.
"""

import json
import sys

try:
    from kubernetes import client, config, watch
    from kubernetes.client.rest import ApiException
except ImportError as e:  # pragma: no cover - reported by the Rust test
    print(f"the Python `kubernetes` package is missing: {e}", file=sys.stderr)
    sys.exit(3)


def status_of(fn):
    """(code, reason, message) of an ApiException raised by fn."""
    try:
        fn()
    except ApiException as e:
        body = json.loads(e.body) if e.body else {}
        return {"code": e.status, "reason": body.get("reason"), "message": body.get("message")}
    return None


def main(ns):
    config.load_kube_config()
    v1 = client.CoreV1Api()
    out = {}
    name = "py-cm"
    cm = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=name, labels={"made-by": "python"}),
        data={"color": "green", "db_password": "py-hunter2"},
    )
    created = v1.create_namespaced_config_map(ns, cm)
    out["created"] = created.metadata.name
    dry = v1.create_namespaced_config_map(
        ns,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py-dry"), data={"a": "b"}),
        dry_run="All",
    )
    out["dry_run_name"] = dry.metadata.name
    out["got"] = v1.read_namespaced_config_map(name, ns).data.get("color")
    lst = v1.list_namespaced_config_map(ns, label_selector="made-by=python")
    out["listed"] = sorted(c.metadata.name for c in lst.items)
    # merge patch (a dict body)
    v1.patch_namespaced_config_map(name, ns, {"data": {"shape": "round"}})
    # JSON patch (a list body)
    v1.patch_namespaced_config_map(
        name, ns, [{"op": "add", "path": "/data/size", "value": "big"}]
    )
    cur = v1.read_namespaced_config_map(name, ns)
    cur.data["color"] = "blue"
    replaced = v1.replace_namespaced_config_map(name, ns, cur)
    out["replaced"] = dict(sorted(replaced.data.items()))
    # watch: bounded by the server-side timeout
    w = watch.Watch()
    seen = []
    for ev in w.stream(
        v1.list_namespaced_config_map, ns, label_selector="made-by=python", timeout_seconds=2
    ):
        seen.append(f"{ev['type']} {ev['object'].metadata.name}")
    out["watched"] = seen
    v1.delete_namespaced_config_map(name, ns)
    # the policy refuses secrets: the sidecar's 403
    out["policy_denial"] = status_of(lambda: v1.list_namespaced_secret(ns))
    # the Role does not grant pods: the server's own 403
    out["rbac_denial"] = status_of(lambda: v1.list_namespaced_pod(ns))
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
