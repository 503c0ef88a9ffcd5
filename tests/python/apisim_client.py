#!/usr/bin/env python3
"""Drives kube-apisim with the official Python `kubernetes` client.

Usage: apisim_client.py list|watch|crud|secret|errors
Reads KUBECONFIG like any client; prints one JSON document on stdout that the
Rust test (tests/tests/it/apisim_python.rs) asserts on. Exits non-zero on any
unexpected error.
"""

import base64
import json
import sys
import threading
import time

try:
    from kubernetes import client, config, watch
    from kubernetes.client.rest import ApiException
except ImportError as e:  # pragma: no cover - reported by the Rust test
    print(f"the Python `kubernetes` package is missing: {e}", file=sys.stderr)
    sys.exit(3)


def core():
    config.load_kube_config()
    return client.CoreV1Api()


def cmd_list():
    v1 = core()
    pods = v1.list_namespaced_pod("default")
    selected = v1.list_namespaced_pod("default", label_selector="app=web")
    all_ns = v1.list_pod_for_all_namespaces()
    first = v1.list_namespaced_pod("default", limit=1)
    rest = v1.list_namespaced_pod("default", limit=10, _continue=first.metadata._continue)
    apps = client.AppsV1Api().list_namespaced_deployment("default")
    return {
        "pods": sorted(p.metadata.name for p in pods.items),
        "phases": sorted({p.status.phase for p in pods.items}),
        "selected": sorted(p.metadata.name for p in selected.items),
        "all_namespaces": sorted(f"{p.metadata.namespace}/{p.metadata.name}" for p in all_ns.items),
        "page1": [p.metadata.name for p in first.items],
        "remaining": first.metadata.remaining_item_count,
        "page2": [p.metadata.name for p in rest.items],
        "deployments": [d.metadata.name for d in apps.items],
        "resource_version": pods.metadata.resource_version,
    }


def cmd_watch():
    v1 = core()
    events = []

    def create_later():
        time.sleep(1.0)
        v1.create_namespaced_config_map(
            "default",
            client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py-watched"), data={"k": "v"}),
        )

    t = threading.Thread(target=create_later)
    t.start()
    started = time.time()
    w = watch.Watch()
    for ev in w.stream(v1.list_namespaced_config_map, "default", timeout_seconds=4):
        events.append([ev["type"], ev["object"].metadata.name])
    t.join()
    return {"events": events, "elapsed": time.time() - started}


def cmd_crud():
    v1 = core()
    body = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="py-cm", labels={"made-by": "python"}),
        data={"greeting": "hello"},
    )
    created = v1.create_namespaced_config_map("default", body)
    read = v1.read_namespaced_config_map("py-cm", "default")
    patched = v1.patch_namespaced_config_map("py-cm", "default", {"data": {"extra": "1"}})
    conflict_status = None
    try:
        v1.create_namespaced_config_map("default", body)
    except ApiException as e:
        conflict_status = [e.status, json.loads(e.body)["reason"]]
    deleted = v1.delete_namespaced_config_map("py-cm", "default")
    missing_status = None
    try:
        v1.read_namespaced_config_map("py-cm", "default")
    except ApiException as e:
        missing_status = [e.status, json.loads(e.body)["reason"]]
    pod = v1.create_namespaced_pod(
        "team-a",
        client.V1Pod(
            metadata=client.V1ObjectMeta(generate_name="py-pod-"),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox:1.36")]),
        ),
    )
    return {
        "created_uid": created.metadata.uid,
        "read_data": read.data,
        "read_labels": read.metadata.labels,
        "patched_data": patched.data,
        "duplicate": conflict_status,
        # Newer clients return deletes as plain dicts, older ones as V1Status.
        "deleted_status": deleted.get("status") if isinstance(deleted, dict) else deleted.status,
        "after_delete": missing_status,
        "pod_name": pod.metadata.name,
        "pod_phase": pod.status.phase,
    }


def cmd_secret():
    v1 = core()
    s = v1.read_namespaced_secret("db-credentials", "default")
    decoded = {k: base64.b64decode(v).decode() for k, v in s.data.items()}
    return {"type": s.type, "decoded": decoded}


def main():
    cmds = {"list": cmd_list, "watch": cmd_watch, "crud": cmd_crud, "secret": cmd_secret}
    if len(sys.argv) != 2 or sys.argv[1] not in cmds:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    print(json.dumps(cmds[sys.argv[1]](), default=str))


if __name__ == "__main__":
    main()
