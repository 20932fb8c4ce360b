#!/usr/bin/env bash
# Builds Ory Hydra (an OpenID Connect provider) into the tool cache, for the
# company SSO test (oauth/sso_test.go), which finds it there. Hydra's
# go.mod has replace directives, so `go install hydra@version` refuses it:
# it is built as a tool of a scratch module with the same replacements
# (its internal client module is taken from the proxy at the version
# Hydra requires). cgo for its in-memory SQLite store. Once per version.
set -euo pipefail
hydra_version=v2.3.0
tool_bin="${XDG_CACHE_HOME:-$HOME/.cache}/hearth-tools/bin"
bin="$tool_bin/hydra"
if [ -x "$bin" ] && [ "$(cat "$bin.version" 2>/dev/null)" = "$hydra_version" ]; then
  exit 0
fi
mkdir -p "$tool_bin"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
cat > go.mod <<MOD
module hydrabuild

go 1.26

replace github.com/gobuffalo/pop/v6 => github.com/ory/pop/v6 v6.2.1-0.20241121111754-e5dfc0f3344b
MOD
GOFLAGS=-mod=mod go get -tool "github.com/ory/hydra/v2@$hydra_version"
CGO_ENABLED=1 GOFLAGS=-mod=mod go build -tags sqlite,sqlite_omit_load_extension,json1 -o "$bin" github.com/ory/hydra/v2
echo "$hydra_version" > "$bin.version"
