"""Symbols for ORT's native module: ELF facts, function boundaries, spin sites."""
