//! Attacks on tenants (filled in by its change).
