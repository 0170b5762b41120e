#!/bin/sh
# Fly mounts volumes owned by root: give the data directory to the unprivileged firescroll user,
# then run the node as that user (never as root), with the signals Fly sends going to it.
set -eu
data="${DB_PATH:-/data/firescroll}"
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$data"
    chown -R firescroll:firescroll "$data"
    exec setpriv --reuid=firescroll --regid=firescroll --init-groups /usr/local/bin/firescroll "$@"
fi
exec /usr/local/bin/firescroll "$@"
