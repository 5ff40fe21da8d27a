#!/usr/bin/env bash
# The whole test suite: vet, unit and end-to-end tests with the race
# detector, then the interop suite with unmodified third-party clients.
# Needs Go and Node.js with npm; installs the interop npm packages itself,
# and Chromium, PostgreSQL and iproute2 from Debian's packages when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each stage announces itself; a failure names the stage it stopped in, so
# a red CI run says which part failed even when the output is long.
STAGE="setup"
stage() { STAGE="$1"; echo "== $1"; }
trap 'echo "scripts/test.sh: FAILED in stage: $STAGE" >&2' ERR

# need PACKAGE WHY CHECK...: installs Debian's PACKAGE (as root) unless
# CHECK succeeds.
need() {
  local pkg="$1" why="$2"
  shift 2
  "$@" >/dev/null 2>&1 && return 0
  echo "== installing $pkg (Debian package) $why"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" >/dev/null
  else
    echo "$pkg is missing and cannot be installed here: install Debian's $pkg package" >&2
  fi
}
need chromium "for the browser tests (web client, load test report)" command -v chromium
# store/pgtest starts its own server from Debian's package, as the
# postgres user when run as root.
need postgresql "for the PostgreSQL store tests" \
  sh -c 'ls /usr/lib/postgresql/*/bin/pg_ctl && { [ "$(id -u)" != 0 ] || id postgres; }'
# The partition tests put cluster nodes in network namespaces (root).
need iproute2 "for the cluster partition tests" command -v ip

stage "go vet"
go vet ./...
stage "go test (race detector on)"
go test -race -count=1 -timeout 20m $(go list ./... | grep -v '/cluster/clustertest$')
# The cluster tests run three nats-server processes, PostgreSQL and several
# chorus processes each: beside other packages' tests they would starve
# them of the two cores, so they run on their own.
stage "cluster end-to-end tests (nats-server, PostgreSQL and chorus processes; race detector on)"
go test -race -count=1 -timeout 20m ./cluster/clustertest
stage "the server suite again, every node on PostgreSQL instead of the embedded store"
CHORUS_TEST_STORE=postgres go test -race -count=1 -timeout 20m ./server
stage "allocation tests without the race detector (it allocates on its own)"
go test -count=1 -run 'Allocation' ./...

# Every fuzz target also runs for a while (plain go test above replayed its
# seed corpus only). A crasher it finds is written under the package's
# testdata/fuzz and fails this stage: commit it with the fix. The budget is
# a count of inputs, not a duration: Go 1.26's fuzz coordinator can fail a
# target with "context deadline exceeded" at the end of a -fuzztime
# duration on a loaded machine (golang/go#75804, fixed in Go 1.27).
stage "fuzzing each target for ${FUZZTIME:=20000x} inputs"
grep -rl --include='*_test.go' '^func Fuzz' . | grep -v '^./interop/' | sort | while read -r file; do
  dir=$(dirname "$file")
  for target in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$file"); do
    echo "   $dir $target"
    go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$dir" >/tmp/chorus-fuzz.log 2>&1 || { cat /tmp/chorus-fuzz.log; false; }
  done
done

# The web client's committed build (web/dist, embedded in the binary) must
# be exactly what its pinned toolchain makes of web/src (go test ./web
# checks the sources' digest; this checks the output itself).
stage "web client: rebuild and compare with the committed web/dist"
if [ ! -d web/node_modules/esbuild ] || [ web/package-lock.json -nt web/node_modules/.package-lock.json ]; then
  (cd web && npm ci --no-audit --no-fund)
fi
(cd web && npm run --silent build && git diff --exit-code --stat -- dist) || {
  echo "web/dist differs from a fresh build of web/src: run npm run build in web/ and commit dist" >&2; false; }

stage "interop: npm packages"
if [ ! -d interop/node_modules/discord.js ] || [ interop/package-lock.json -nt interop/node_modules/.package-lock.json ]; then
  (cd interop && npm ci --no-audit --no-fund)
fi
stage "interop: go vet and go test"
# The chorus binary under test is built with -race by the harness. The test
# process itself runs without it: disgo v0.19.6 races in its own gateway
# Close (heartbeatCancel), which is not ours to fix.
(cd interop && go vet ./... && go test -count=1 -timeout 20m ./...)
echo "scripts/test.sh: every stage passed"
