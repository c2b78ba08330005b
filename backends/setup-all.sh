#!/usr/bin/env bash
# Installs (and, for emulators, starts on 127.0.0.1) everything the test suite
# needs, one script per backend.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bash "$here/filesystem/setup.sh"
