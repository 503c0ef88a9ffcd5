#!/usr/bin/env bash
# Builds (once) and caches the real control plane the realkube tests run:
# kube-apiserver and kube-controller-manager 1.20.2 from Debian's own source
# package `kubernetes` (bookworm, Go dependencies vendored), plus Debian's etcd.
# Idempotent; a cache hit touches no network.
#
#   scripts/deps/kube-control-plane.sh     # prints the cache directory on stdout
#
# Result: $MCP_WARDEN_KUBE_DIR (default ${XDG_CACHE_HOME:-$HOME/.cache}/mcp-warden/kube-1.20.2)
# holding kube-apiserver, kube-controller-manager and SOURCE (what they were built
# from). The cache lives outside the checkout: CI runs in a fresh clone.
#
# How:
# - `apt-get source` through a private apt configuration (its own sources list,
#   lists and cache directories under the cache dir) holding one `deb-src`
#   entry for the Debian archive this machine already uses; the system's apt
#   configuration is read, never changed.
# - The vendored github.com/modern-go/reflect2 1.0.1 crashes under Go >= 1.18
#   (`fatal error: fault` in mapaccess soon after start); it is replaced by the
#   source of Debian's golang-github-modern-go-reflect2-dev (1.0.2), taken from
#   the .deb without installing it.
# - Built with Debian's golang-go through the tree's own `make WHAT=...`,
#   CGO_ENABLED=0, with the version stamped from a version file (the Debian
#   source has no .git, so `hack/lib/version.sh` would otherwise report
#   v0.0.0-master and kubectl's version dispatcher would pick the wrong client).
#
# The build log goes to $cache/build.log, not to the terminal.
set -euo pipefail

upstream_version="1.20.2"
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/mcp-warden"
out="${MCP_WARDEN_KUBE_DIR:-$cache_root/kube-$upstream_version}"
bins=(kube-apiserver kube-controller-manager)

say() { printf 'kube-control-plane: %s\n' "$*" >&2; }

dpkg_installed() { dpkg-query -W -f '${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

apt_install() {
  local missing=()
  for p in "$@"; do dpkg_installed "$p" || missing+=("$p"); done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q "${missing[@]}" >"$cache_root/apt-install.log" 2>&1; then
    apt-get update -q >>"$cache_root/apt-install.log" 2>&1
    apt-get install -y -q "${missing[@]}" >>"$cache_root/apt-install.log" 2>&1 \
      || { say "apt-get install ${missing[*]} failed, see $cache_root/apt-install.log"; exit 1; }
  fi
}

cache_hit() {
  [[ -f "$out/SOURCE" ]] || return 1
  for b in "${bins[@]}"; do
    [[ -x "$out/$b" ]] || return 1
    local v
    v="$("$out/$b" --version 2>/dev/null)" || return 1
    [[ "$v" == *"v$upstream_version"* ]] || return 1
  done
}

mkdir -p "$cache_root"
# etcd is needed at run time whatever the cache says.
apt_install etcd-server
# The package's postinst may start a system etcd where an init system runs; the
# harness starts its own on other ports, so a system one only costs CPU.

if cache_hit; then
  echo "$out"
  exit 0
fi

# rsync: the tree's hack/lib/golang.sh places the built binaries with it.
apt_install golang-go rsync
log="$cache_root/build.log"
say "building kube-apiserver and kube-controller-manager $upstream_version from Debian's source (several minutes; log: $log)"
start=$(date +%s)
: >"$log"

work="$cache_root/build"
rm -rf "$work"
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/apt/sources.list.d" "$work/src"

# One deb-src entry for the archive the system fetches its bookworm packages from.
codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"
archive="$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Created-By: Packages' 2>/dev/null \
  | awk -v c="$codename" '$2 == c { print $1; exit }')"
archive="${archive:-http://deb.debian.org/debian/}"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
echo "deb-src [signed-by=$keyring] $archive $codename main" >"$work/apt/sources.list"
cat >"$work/apt/apt.conf" <<EOF
Dir::Etc::SourceList "$work/apt/sources.list";
Dir::Etc::SourceParts "$work/apt/sources.list.d";
Dir::State::Lists "$work/apt/lists";
Dir::Cache "$work/apt/cache";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT::Sandbox::User "root";
EOF
export APT_CONFIG="$work/apt/apt.conf"
{
  echo "== apt-get update ($archive $codename, deb-src only)"
  apt-get update -q
  echo "== apt-get source kubernetes"
  (cd "$work/src" && apt-get source -q kubernetes)
} >>"$log" 2>&1 || { say "fetching the source failed, see $log"; exit 1; }
src_version="$(apt-cache showsrc kubernetes 2>/dev/null | awk '/^Version:/ { print $2; exit }')"
unset APT_CONFIG

tree="$(find "$work/src" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)"
[[ -n "$tree" && -f "$tree/Makefile" ]] || { say "no source tree unpacked in $work/src, see $log"; exit 1; }

# reflect2 1.0.2 from Debian's -dev package (source files only; not installed).
{
  echo "== reflect2 swap"
  (cd "$work" && apt-get download -q -o APT::Sandbox::User=root golang-github-modern-go-reflect2-dev)
  deb="$(ls "$work"/golang-github-modern-go-reflect2-dev_*.deb | head -n1)"
  dpkg-deb -x "$deb" "$work/reflect2"
  dpkg-deb -f "$deb" Version
} >>"$log" 2>&1 || { say "fetching reflect2 failed, see $log"; exit 1; }
reflect2_version="$(dpkg-deb -f "$(ls "$work"/golang-github-modern-go-reflect2-dev_*.deb | head -n1)" Version)"
r2src="$work/reflect2/usr/share/gocode/src/github.com/modern-go/reflect2"
[[ -f "$r2src/reflect2.go" ]] || { say "no reflect2 source in the .deb"; exit 1; }
rm -rf "$tree/vendor/github.com/modern-go/reflect2"
mkdir -p "$tree/vendor/github.com/modern-go/reflect2"
# Only the package's own .go files (no tests), as `go mod vendor` would copy them.
find "$r2src" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' -o -name 'LICENSE' \) ! -name '*_test.go' \
  -exec cp {} "$tree/vendor/github.com/modern-go/reflect2/" \;

# Version stamp: no .git in a source package.
cat >"$work/version.env" <<EOF
KUBE_GIT_COMMIT='0000000000000000000000000000000000000000'
KUBE_GIT_TREE_STATE='archive'
KUBE_GIT_VERSION='v$upstream_version'
KUBE_GIT_MAJOR='1'
KUBE_GIT_MINOR='${upstream_version#1.}'
EOF
sed -i "s/^KUBE_GIT_MINOR='\([0-9]*\)\..*'/KUBE_GIT_MINOR='\1'/" "$work/version.env"

{
  echo "== go version: $(go version)"
  echo "== make WHAT=cmd/kube-apiserver WHAT=cmd/kube-controller-manager"
  cd "$tree"
  CGO_ENABLED=0 KUBE_GIT_VERSION_FILE="$work/version.env" KUBE_BUILD_PLATFORMS=linux/amd64 \
    GOFLAGS= GOPROXY=off GO111MODULE= \
    make WHAT="cmd/kube-apiserver cmd/kube-controller-manager"
} >>"$log" 2>&1 || { say "the build failed, see $log"; exit 1; }

staging="$out.tmp"
rm -rf "$staging"
mkdir -p "$staging"
for b in "${bins[@]}"; do
  f="$(find "$tree/_output" -type f -name "$b" -perm -u+x | head -n1)"
  [[ -n "$f" ]] || { say "$b was not built, see $log"; exit 1; }
  install -m 0755 "$f" "$staging/$b"
done
cat >"$staging/SOURCE" <<EOF
source: kubernetes $src_version (Debian $codename, apt-get source)
reflect2: golang-github-modern-go-reflect2-dev $reflect2_version
go: $(go version)
built: CGO_ENABLED=0 make WHAT="cmd/kube-apiserver cmd/kube-controller-manager"
EOF
rm -rf "$out"
mv "$staging" "$out"
rm -rf "$work"
cache_hit || { say "the built binaries do not report v$upstream_version"; exit 1; }
say "built in $(( $(date +%s) - start ))s"
echo "$out"
