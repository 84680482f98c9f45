-- The example tables of testdata/rules-cdc.yaml, and a least-privilege role
-- for `invalidator cdc`. docker-compose runs this once, as the database owner.

CREATE TABLE courses (
  id    int PRIMARY KEY,
  title text NOT NULL DEFAULT ''
);
CREATE TABLE users (
  id    int PRIMARY KEY,
  email text,
  name  text
);
-- The rules map users.email, a non-key column: PostgreSQL sends its old
-- value (so the old user:email:<email> key can go) only under FULL.
ALTER TABLE users REPLICA IDENTITY FULL;

INSERT INTO courses (id, title) VALUES (42, 'Go'), (420, 'Rust');
INSERT INTO users (id, email, name) VALUES (7, 'ann@example.com', 'Ann');

-- The publication, made by the tables' owner, so cdc needs no ownership.
CREATE PUBLICATION invalidator FOR TABLE courses, users;

-- cdc reads the slot: REPLICATION and LOGIN are all it needs.
CREATE ROLE invalidator_cdc WITH LOGIN REPLICATION PASSWORD 'cdc-password';
