#!/bin/bash
# Builds the end-to-end tests (tests/e2e.rs) and runs them where a real
# Linux guest boots: on this host if its KVM has VMX/SVM, otherwise in the
# nested environment, in one outer boot for all of them.
#
# Usage: tests/nested/run-e2e.sh [TEST-FILTER...]
set -eu
cd "$(dirname "$0")/../.."

cargo build --workspace --bins --release
# The test executable's path is in cargo's JSON messages.
e2e=$(cargo test --release --test e2e --no-run --message-format=json |
    sed -n 's/.*"name":"e2e".*"executable":"\([^"]*\)".*/\1/p' | tail -1)
if [ -z "$e2e" ] || [ ! -x "$e2e" ]; then
    echo "run-e2e.sh: cannot find the e2e test executable" >&2
    exit 1
fi

name=$(basename "$e2e")
exec tests/nested/run.sh --auto --timeout 1800 \
    --bin target/release/vmd --bin target/release/vmctl --bin "$e2e" -- \
    sh -c 'VMD_BIN_DIR=$PWD exec "./$0" --include-ignored --test-threads=1 "$@"' \
    "$name" "$@"
