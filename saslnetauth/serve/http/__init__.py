"""HTTP: Dovecot's auth policy endpoint and /metrics."""
