#!/usr/bin/env bash
# Installs kubernetes-validate (PyPI), which bundles the Kubernetes JSON schemas
# so `kubernetes-validate --strict -k 1.32 FILE` works offline. Idempotent.
# Prints the command's path on stdout.
set -euo pipefail

if ! command -v kubernetes-validate >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate >&2
  # pyenv shims need a rehash before a new console script is on PATH.
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash >/dev/null 2>&1 || true; fi
fi
command -v kubernetes-validate
