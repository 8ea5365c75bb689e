"""Admin file formats: the parsers of ``saslnetauth import`` (``passwdfile``,
``csvimport``, and ``importers``, what they share), ``importplan`` (what an
import changes), ``exporters`` (Dovecot passwd-file) and ``atomicfile`` (safe
replacement of files)."""
