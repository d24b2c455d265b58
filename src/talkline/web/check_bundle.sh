#!/bin/sh
# Rebuilds the page into a temporary directory and compares it with the committed dist/.
# Exits non-zero when they differ (someone changed the source without running
# `npm run build`, or the build is not reproducible).
set -eu
cd "$(dirname "$0")"

if ! command -v node >/dev/null 2>&1; then
  echo "check_bundle: node is not installed; cannot rebuild the web client" >&2
  exit 2
fi
if [ ! -d node_modules ]; then
  echo "check_bundle: installing the web client's dependencies (npm ci)" >&2
  npm ci --no-audit --no-fund --loglevel=error >&2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
node build.mjs "$tmp/dist"

if diff -r dist "$tmp/dist" >"$tmp/diff.txt" 2>&1; then
  echo "check_bundle: dist/ matches the source"
else
  echo "check_bundle: src/talkline/web/dist/ is out of date with its source:" >&2
  head -n 20 "$tmp/diff.txt" >&2
  echo "Run: cd src/talkline/web && npm ci && npm run build, then commit dist/." >&2
  exit 1
fi
