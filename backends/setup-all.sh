#!/usr/bin/env bash
# Installs, and starts on 127.0.0.1, everything the test suite needs: the
# reference registry (filesystem backend) and the storage emulators (moto for
# S3, Azurite for Azure Blob, fake-gcs-server for GCS). LocalStack, the second
# S3 target, is separate: localstack/start.sh and localstack/run-tests.sh.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bash "$here/filesystem/setup.sh"
bash "$here/s3/start.sh"
bash "$here/azure/start.sh"
bash "$here/gcs/start.sh"
