#!/bin/sh
# For the postgres container of deploy/compose.yaml (mounted into /docker-entrypoint-initdb.d/): runs the kit's
# issue-bridge.sql once, when the data volume is first created, with the role's password from the environment.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v password="$BRIDGE_DB_PASSWORD" -f /kit/issue-bridge.sql
