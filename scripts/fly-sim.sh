#!/usr/bin/env bash
# A many-region Fly.io deployment simulated on this machine with Linux network namespaces (needs
# root): 3 regions x 2 machines configured from FLY_* variables alone, then a fourth region
# that starts from S3 snapshots; one broker, one S3 server.
# See scripts/fly_sim.py for what it checks; it removes everything it creates, also on failure.
#
#   scripts/fly-sim.sh        # FIRESCROLL_BIN, NISSHI_BIN, S3S_FS_BIN override the binaries
set -euo pipefail
exec python3 "$(dirname "$0")/fly_sim.py" "$@"
