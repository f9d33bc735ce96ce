-- The PostgreSQL role and database of issue-bridge. Run as a superuser (or a role with CREATEROLE and CREATEDB):
--   sudo -u postgres psql -v password="$(openssl rand -hex 24)" -f deploy/postgres/issue-bridge.sql
-- then DATABASE_URL=postgresql://issue_bridge:<that password>@<host>:5432/issue_bridge in the .env.
-- Optional: -v role=... -v dbname=... (default issue_bridge for both).
--
-- The bridge needs an ordinary role that owns its database: its migrations (`issue-bridge db upgrade`) create and
-- alter its tables. No superuser, no other database, nothing for PUBLIC.
\set ON_ERROR_STOP on
\if :{?role}
\else
  \set role issue_bridge
\endif
\if :{?dbname}
\else
  \set dbname issue_bridge
\endif
\if :{?password}
\else
  \echo 'pass the role''s password: psql -v password=... -f issue-bridge.sql'
  \quit
\endif

CREATE ROLE :"role" LOGIN PASSWORD :'password' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
  CONNECTION LIMIT 200;  -- each bridge process keeps up to 10 connections (docs/deploy.md, "Database connections")
CREATE DATABASE :"dbname" OWNER :"role" ENCODING 'UTF8' TEMPLATE template0;
REVOKE ALL ON DATABASE :"dbname" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"dbname" TO :"role";

\connect :"dbname"
-- Its own schema: the role creates the tables there (PostgreSQL 15+ gives PUBLIC no CREATE on `public` anyway).
REVOKE ALL ON SCHEMA public FROM PUBLIC;
ALTER SCHEMA public OWNER TO :"role";
-- A session stuck in a transaction (a killed worker's connection, say) cannot hold locks for ever.
ALTER ROLE :"role" IN DATABASE :"dbname" SET idle_in_transaction_session_timeout = '10min';
