#!/bin/sh
# Run once by the postgres image on an empty data directory (/docker-entrypoint-initdb.d): one role and one
# database per derbridge system, each role owning its database, its password from the environment
# (ASSETHUB_DB_PASSWORD, DERMS_DB_PASSWORD, BRIDGE_DB_PASSWORD: deploy/.env). The tables are made by
# `derbridge db upgrade` (the compose file's migrate service), not here.
set -eu

create() {  # create ROLE PASSWORD
    # psql's own variables quote the name (:"role") and the password (:'password'): no shell quoting games.
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
        -v role="$1" -v password="$2" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
CREATE DATABASE :"role" OWNER :"role";
REVOKE ALL ON DATABASE :"role" FROM PUBLIC;
SQL
}

create assethub "$ASSETHUB_DB_PASSWORD"
create derms "$DERMS_DB_PASSWORD"
create bridge "$BRIDGE_DB_PASSWORD"
