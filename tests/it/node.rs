//! Tests for this area live here; see the mod comment in main.rs.
