DROP TABLE sessions;
DROP TABLE api_tokens;
ALTER TABLE projects DROP COLUMN anonymous_read;
DROP TABLE project_members;
DROP TABLE users;
DROP TYPE project_role;
