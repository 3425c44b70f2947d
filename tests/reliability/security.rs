//! Tenant isolation, admin authentication, no secret anywhere.
