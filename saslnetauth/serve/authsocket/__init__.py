"""The Dovecot auth-socket responder: listeners, peer checks, sessions, userdb."""
