-- The tables of the FastAPI example (rules.yaml maps them under cdc:), run
-- once as the tables' owner. Each row carries a version that every UPDATE
-- bumps (the trigger), however the row is written: the tests compare it.

CREATE TABLE courses (
  id         int PRIMARY KEY,
  title      text NOT NULL,
  version    bigint NOT NULL DEFAULT 1,
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE students (
  id          int PRIMARY KEY,
  name        text NOT NULL,
  course_id   int NOT NULL REFERENCES courses (id),
  progress    real NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 1),
  last_active timestamptz NOT NULL DEFAULT now(),
  version     bigint NOT NULL DEFAULT 1
);
-- The rules map students.course_id, a non-key column: PostgreSQL sends its
-- old value (so a student who changes course invalidates both courses) only
-- under FULL.
ALTER TABLE students REPLICA IDENTITY FULL;

CREATE TABLE users (
  id      int PRIMARY KEY,
  email   text NOT NULL UNIQUE,
  name    text NOT NULL,
  version bigint NOT NULL DEFAULT 1
);

CREATE FUNCTION bump_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.version := OLD.version + 1;
  RETURN NEW;
END $$;
CREATE TRIGGER courses_version BEFORE UPDATE ON courses FOR EACH ROW EXECUTE FUNCTION bump_version();
CREATE TRIGGER students_version BEFORE UPDATE ON students FOR EACH ROW EXECUTE FUNCTION bump_version();
CREATE TRIGGER users_version BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION bump_version();

INSERT INTO courses (id, title) VALUES (7, 'Python'), (42, 'Go'), (420, 'Rust');
INSERT INTO students (id, name, course_id, progress, last_active) VALUES
  (1, 'Ann', 42, 0.9, now()),
  (2, 'Bob', 42, 0.2, now() - interval '10 days'),
  (3, 'Cid', 420, 0.5, now() - interval '2 days'),
  (4, 'Dee', 7, 0.1, now() - interval '20 days');
INSERT INTO users (id, email, name) VALUES
  (7, 'ann@example.com', 'Ann'),
  (42, 'bob@example.com', 'Bob'),
  (43, 'cid@example.com', 'Cid'),
  (420, 'dee@example.com', 'Dee');

-- The publication, made by the tables' owner, so that cdc needs no
-- ownership (cdc makes it if missing, when it may).
CREATE PUBLICATION invalidator FOR TABLE courses, students, users;
