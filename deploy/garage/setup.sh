#!/usr/bin/env bash
# Gives a fresh, running Garage node its one-node layout, the bucket and the app's key. Both
# the local topology and the compose image run it once, on first start.
#
#   deploy/garage/setup.sh CONFIG BUCKET KEY_ID SECRET_KEY    (GARAGE: the binary, default garage)
set -euo pipefail
config=$1 bucket=$2 key_id=$3 secret=$4
g() { "${GARAGE:-garage}" -c "$config" "$@"; }
node=$(g node id -q | cut -d@ -f1)
[ -n "$node" ] || { echo "garage setup: cannot read the node id" >&2; exit 1; }
g layout assign -z local -c 1G "$node"
g layout apply --version 1
g bucket create "$bucket"
g key import --yes -n scaleout "$key_id" "$secret"
g bucket allow --read --write --owner "$bucket" --key scaleout
