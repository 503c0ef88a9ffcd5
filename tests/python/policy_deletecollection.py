#!/usr/bin/env python3
"""Sends one real deletecollection (DELETE on the ConfigMap collection) with
the official Python `kubernetes` client, as an app would.

Usage: policy_deletecollection.py NAMESPACE
Reads KUBECONFIG like any client; prints one JSON document on stdout for the
Rust test (tests/tests/it/policy_e2e.rs): `{"status": 200, ...}` when the call
succeeded, or the API error's status, reason and message. Exits non-zero only
on an unexpected failure (no HTTP answer).
"""

import json
import sys

try:
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException
except ImportError as e:  # pragma: no cover - reported by the Rust test
    print(f"the Python `kubernetes` package is missing: {e}", file=sys.stderr)
    sys.exit(3)


def main():
    namespace = sys.argv[1]
    config.load_kube_config()
    v1 = client.CoreV1Api()
    try:
        v1.delete_collection_namespaced_config_map(namespace)
        out = {"status": 200}
    except ApiException as e:
        try:
            body = json.loads(e.body)
        except (TypeError, ValueError):
            body = {}
        out = {
            "status": e.status,
            "reason": body.get("reason"),
            "message": body.get("message"),
            "kind": body.get("kind"),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
