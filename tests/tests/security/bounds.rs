//! Attacks on bounds (filled in by its change).
