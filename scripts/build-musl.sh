#!/usr/bin/env bash
# Builds mcp-warden-sidecar and mcp-warden-webhook as the image ships them (see Dockerfile): static
# x86_64-unknown-linux-musl binaries of the release profile, into target/x86_64-unknown-linux-musl/release.
# Installs musl-tools (musl-gcc, for ring's C code) from Debian and the Rust target if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-musl
if ! command -v musl-gcc >/dev/null; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get install -y --no-install-recommends musl-tools >/dev/null ||
    { $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends musl-tools >/dev/null; }
fi
rustup target list --installed | grep -qx "$target" || rustup target add "$target"
CC=musl-gcc RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --locked --target "$target" -p mcp-warden-sidecar -p mcp-warden-webhook \
  --bin mcp-warden-sidecar --bin mcp-warden-webhook
