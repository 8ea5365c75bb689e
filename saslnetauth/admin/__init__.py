"""Admin file formats: importers (parsing), importplan (what an import changes),
exporters (Dovecot passwd-file) and atomicfile (safe replacement of files)."""
