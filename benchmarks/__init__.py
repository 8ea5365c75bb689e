"""Benchmarks: load generator, side-by-side runs against Dovecot, micro-benchmarks.

Nothing here is imported by the package or the tests; see benchmarks/README.md.
"""
