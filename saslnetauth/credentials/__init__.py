"""Credential checks: stored hashes in Dovecot's notation (``passwords``) and PAM (``pam``)."""
