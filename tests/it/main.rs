//! Integration tests: one binary, real server on port 0.
