#!/usr/bin/env bash
# Install the Debian packages given as arguments if they are missing (make system-deps).
# As root or with password-less sudo it runs apt-get. When it cannot install them (no root, no
# sudo, or apt-get fails) it says what to install and exits 1: the tests that need them would
# skip (and fail under CI=true), so nothing may look installed that is not.
set -uo pipefail
missing=()
for package in "$@"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "system packages present: $*"
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    echo "ERROR: missing ${missing[*]}, and no root or password-less sudo to install them;" \
         "install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
fi
echo "installing ${missing[*]} with apt-get"
if ! { "${sudo[@]}" apt-get update -qq &&
       DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}"; }; then
    echo "ERROR: apt-get could not install ${missing[*]}" >&2
    exit 1
fi
still=()
for package in "${missing[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || still+=("$package")
done
if [ ${#still[@]} -ne 0 ]; then
    echo "ERROR: still not installed after apt-get: ${still[*]}" >&2
    exit 1
fi
