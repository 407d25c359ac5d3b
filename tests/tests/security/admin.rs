//! Attacks on admin (filled in by its change).
