"""Server-rendered public pages."""
