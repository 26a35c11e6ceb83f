-- Run once by the postgres image on an empty data volume (docker-entrypoint-initdb.d):
-- one database per service, each owned by its own role. Local-development credentials only.
CREATE ROLE customer_service LOGIN PASSWORD 'customer_service';
CREATE DATABASE customer_service OWNER customer_service;

CREATE ROLE transaction_service LOGIN PASSWORD 'transaction_service';
CREATE DATABASE transaction_service OWNER transaction_service;

CREATE ROLE notification_service LOGIN PASSWORD 'notification_service';
CREATE DATABASE notification_service OWNER notification_service;
