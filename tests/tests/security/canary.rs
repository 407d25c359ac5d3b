//! Attacks on canary (filled in by its change).
