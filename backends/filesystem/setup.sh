#!/usr/bin/env bash
# Installs what the filesystem backend's tests need: the reference registry
# (Debian's docker-registry, distribution 2.8.2), which writes every test
# fixture through its HTTP API, serves pulls back, and runs the reference
# `garbage-collect` for side-by-side comparison. Nothing is started here: each
# test starts its own registry on a free 127.0.0.1 port.
set -euo pipefail

if command -v docker-registry >/dev/null 2>&1; then
    echo "docker-registry: $(docker-registry --version 2>&1 | head -n1)"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# The package's postinst tries to start a service; policy-rc.d on CI machines
# refuses, which is fine: tests start their own instances.
$SUDO apt-get install -y -qq docker-registry >/dev/null
echo "docker-registry: $(docker-registry --version 2>&1 | head -n1)"
