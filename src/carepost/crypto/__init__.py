"""Key ring, envelope encryption (AES-256-GCM, AAD-bound) and blind indexes."""
