//! Integration tests live in `all/`.
