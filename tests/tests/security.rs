//! Security: each test performs one attack with only what its attacker can reach (the public
//! listener, a browser on the host, a container in the pod) and checks that it fails. The
//! threat model is in SECURITY.md.

#[path = "security/admin.rs"]
mod admin;
#[path = "security/bounds.rs"]
mod bounds;
#[path = "security/callbacks.rs"]
mod callbacks;
#[path = "security/canary.rs"]
mod canary;
#[path = "security/files.rs"]
mod files;
#[path = "security/tenants.rs"]
mod tenants;
