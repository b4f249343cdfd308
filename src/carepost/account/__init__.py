"""Account-wide settings: choices an organisation makes once for all its staff (kept in
the database so every process, web or worker, reads the same value)."""
