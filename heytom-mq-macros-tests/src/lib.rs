//! trybuild cases for the heytom-mq macros live in `tests/`.
