#!/usr/bin/env bash
# Builds the Complement image: bash build/complement/build.sh [IMAGE]
# (default hearth:complement). Needs a running Docker engine; pulls nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
image=${1:-hearth:complement}
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/complement/ca" "$ctx/rootfs/complement/appservice" "$ctx/rootfs/data" "$ctx/rootfs/tmp"
chmod 1777 "$ctx/rootfs/tmp"
(cd "$here/../.." && CGO_ENABLED=0 go build -trimpath -o "$ctx/rootfs/hearth" ./cmd/hearth)
cp "$here/Dockerfile" "$ctx/Dockerfile"
DOCKER_BUILDKIT=0 docker build -t "$image" "$ctx"
echo "built $image"
