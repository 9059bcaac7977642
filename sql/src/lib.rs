//! AWS IoT rules SQL engine (placeholder until the SQL issue lands).
