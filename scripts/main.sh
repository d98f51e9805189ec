#!/usr/bin/env bash
# The main job on a fresh machine: install what is missing, then run the default job.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$here/scripts/install.sh"
cd "$here"
exec .venv/bin/vclab run experiments/default.yaml "$@"
