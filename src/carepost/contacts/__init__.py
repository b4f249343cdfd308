"""Contacts, clinical facts and their importers (CSV, FHIR)."""
