"""Consents, HIPAA marketing authorizations, suppression and the send gate."""
