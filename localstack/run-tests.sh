#!/usr/bin/env bash
# The LocalStack run: starts LocalStack on 127.0.0.1 (on the host, no Docker;
# see README.md here) and runs the S3 tests against it, the conformance suite
# and the end-to-end suite with the real registry pulling through its s3 driver.
# These tests are #[ignore]d in the normal suite because CI does not start
# LocalStack; this script runs exactly those.
set -euo pipefail
cd "$(dirname "$0")/.."
bash backends/filesystem/setup.sh
bash localstack/start.sh
cargo test --locked --test storage_objects --test e2e_cloud -- --ignored localstack
