#!/usr/bin/env bash
# The whole test suite. Installs the real services the tests talk to (once; the first install of
# the Kafka-protocol broker takes 15-30 minutes on 2 cores), then runs every test.
#
#   scripts/test.sh [cargo test args...]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/kafka-broker.sh install >&2
# Integration tests start their own brokers from this binary, each on a free port.
NISSHI_BIN="$(scripts/kafka-broker.sh bin)"
export NISSHI_BIN
cargo test --workspace "$@"
