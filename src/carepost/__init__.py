"""carepost: self-hosted, HIPAA-minded patient communications."""

__version__ = "0.1.0"
