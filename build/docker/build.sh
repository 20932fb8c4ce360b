#!/usr/bin/env bash
# Builds the deploy image: bash build/docker/build.sh [IMAGE] (default
# hearth:latest). Needs a running Docker engine; pulls nothing: the image is
# FROM scratch with the static binary, the build host's CA bundle (for
# outbound federation and push) and a data directory owned by uid 10001.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
image=${1:-hearth:latest}
ca=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
[ -r "$ca" ] || { echo "no CA bundle at $ca: install ca-certificates or set CA_BUNDLE" >&2; exit 1; }
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/data" "$ctx/rootfs/tmp" "$ctx/rootfs/etc/ssl/certs"
chmod 1777 "$ctx/rootfs/tmp"
cp "$ca" "$ctx/rootfs/etc/ssl/certs/ca-certificates.crt"
printf 'hearth:x:10001:10001:Hearth:/data:/sbin/nologin\n' > "$ctx/rootfs/etc/passwd"
printf 'hearth:x:10001:\n' > "$ctx/rootfs/etc/group"
(cd "$here/../.." && CGO_ENABLED=0 go build -trimpath -o "$ctx/rootfs/hearth" ./cmd/hearth)
cp "$here/Dockerfile" "$ctx/Dockerfile"
DOCKER_BUILDKIT=0 docker build -t "$image" "$ctx"
echo "built $image"
