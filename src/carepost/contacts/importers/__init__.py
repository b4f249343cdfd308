"""Importers turn outside formats into ContactInput/FactInput for the ContactWriter.

Each validates its whole input before anything is written: without --skip-invalid one bad
row writes nothing; with it, the valid rows go in and the report lists the rest.
"""
