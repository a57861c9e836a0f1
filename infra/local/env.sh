#!/usr/bin/env bash
# Prints the environment that points tiersweep at the local emulators:
#   eval "$(infra/local/env.sh)"
set -euo pipefail
source "$(dirname "$0")/common.sh"
print_env
