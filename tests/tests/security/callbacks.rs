//! Attacks on callbacks (filled in by its change).
