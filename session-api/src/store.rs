//! `tower_sessions::SessionStore` backed by replicated sessions (cargo feature `tower`).
