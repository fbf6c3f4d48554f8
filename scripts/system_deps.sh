#!/usr/bin/env bash
# Install the Debian packages given as arguments if they are missing (make system-deps).
# Best effort: as root or with password-less sudo it runs apt-get; otherwise it says what to
# install and carries on, and the tests that need the packages skip, saying why.
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
    echo "WARNING: missing ${missing[*]}; install them with: sudo apt-get install ${missing[*]}" >&2
    exit 0
fi
echo "installing ${missing[*]} with apt-get"
if ! { "${sudo[@]}" apt-get update -qq &&
       DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}"; }; then
    echo "WARNING: apt-get could not install ${missing[*]}; the tests that need them will skip" >&2
fi
exit 0
