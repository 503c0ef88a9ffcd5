#!/usr/bin/env python3
"""Reads one Secret with the official Python `kubernetes` client (through the
sidecar in tests/tests/it/masking_e2e.rs) and base64-decodes its data, as an
application would.

Usage: masking_read_secret.py NAMESPACE NAME
Prints {"name": ..., "decoded": {key: text}}; exits non-zero on any error
(a value that is not valid base64 or UTF-8 included).
"""

import base64
import json
import sys

try:
    from kubernetes import client, config
except ImportError as e:  # pragma: no cover - reported by the Rust test
    print(f"the Python `kubernetes` package is missing: {e}", file=sys.stderr)
    sys.exit(3)


def main():
    namespace, name = sys.argv[1], sys.argv[2]
    config.load_kube_config()
    secret = client.CoreV1Api().read_namespaced_secret(name, namespace)
    decoded = {
        k: base64.b64decode(v, validate=True).decode("utf-8")
        for k, v in (secret.data or {}).items()
    }
    print(json.dumps({"name": secret.metadata.name, "decoded": decoded}))


if __name__ == "__main__":
    main()
