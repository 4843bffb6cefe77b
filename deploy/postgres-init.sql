-- Run once by the postgres container on its first start (docker-entrypoint-initdb.d): n8n keeps
-- its workflows and executions in a database of its own, beside Dagster's.
CREATE DATABASE n8n;
