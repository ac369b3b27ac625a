"""Embedded offline backends: built only from parts that install from PyPI/Debian with their weights."""
