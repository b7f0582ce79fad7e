#!/usr/bin/env bash
# Starts Garage, and on first start gives it a one-node layout, the bucket and the app's key
# (deploy/garage/setup.sh, as deploy/local/stack does).
set -euo pipefail
export GARAGE_DIR=/var/lib/garage GARAGE_RPC_BIND=0.0.0.0:3901 GARAGE_RPC_PUBLIC=127.0.0.1:3901 \
  GARAGE_S3_BIND=0.0.0.0:3900 GARAGE_ADMIN_BIND=0.0.0.0:3903
envsubst </etc/garage/garage.toml.template >/etc/garage.toml
garage -c /etc/garage.toml server &
server=$!
trap 'kill -TERM $server; wait $server' TERM INT
until garage -c /etc/garage.toml status >/dev/null 2>&1; do sleep 0.5; done
if [ ! -f /var/lib/garage/meta/.configured ]; then
  bash /etc/garage/setup.sh /etc/garage.toml "${S3_BUCKET}" "${S3_ACCESS_KEY_ID}" "${S3_SECRET_ACCESS_KEY}"
  touch /var/lib/garage/meta/.configured
fi
wait $server
