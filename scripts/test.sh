#!/usr/bin/env bash
# The test suite on a fresh machine: install what is missing, then unit and root tests.
# Extra arguments go to pytest (e.g. `-m "not slow"`).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$here/scripts/install.sh"
cd "$here"
set +e
.venv/bin/python -m pytest -p no:cacheprovider --timeout=600 "$@"
rc=$?
set -e
# pytest's 5 means no test was collected: that is a failure here, never a pass.
exit $rc
