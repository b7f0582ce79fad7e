#!/usr/bin/env bash
# Starts Garage, and on first start gives it a one-node layout, the bucket and the app's key
# (the same steps deploy/local/stack performs).
set -euo pipefail
cat >/etc/garage.toml <<CONF
metadata_dir = "/var/lib/garage/meta"
data_dir = "/var/lib/garage/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "0.0.0.0:3901"
rpc_public_addr = "127.0.0.1:3901"
rpc_secret = "${GARAGE_RPC_SECRET}"
[s3_api]
s3_region = "garage"
api_bind_addr = "0.0.0.0:3900"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "0.0.0.0:3903"
admin_token = "${GARAGE_ADMIN_TOKEN}"
CONF
garage -c /etc/garage.toml server &
server=$!
trap 'kill -TERM $server; wait $server' TERM INT
until garage -c /etc/garage.toml status >/dev/null 2>&1; do sleep 0.5; done
if [ ! -f /var/lib/garage/meta/.configured ]; then
  node=$(garage -c /etc/garage.toml node id -q | cut -d@ -f1)
  garage -c /etc/garage.toml layout assign -z local -c 1G "$node"
  garage -c /etc/garage.toml layout apply --version 1
  garage -c /etc/garage.toml bucket create "${S3_BUCKET}"
  garage -c /etc/garage.toml key import --yes -n scaleout "${S3_ACCESS_KEY_ID}" "${S3_SECRET_ACCESS_KEY}"
  garage -c /etc/garage.toml bucket allow --read --write --owner "${S3_BUCKET}" --key scaleout
  touch /var/lib/garage/meta/.configured
fi
wait $server
