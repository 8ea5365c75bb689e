"""``saslnetauth serve``: the process (``app``: its start-up checks and listening
sockets; ``services``: the responder and the services beside it, and their shutdown),
the auth-socket responder (``authsocket``), deciding logins off the event loop
(``decide``), the HTTP layer (``http``: Dovecot's auth policy endpoint, /metrics),
the alert command (``alerts``), ``metrics`` and the revoke watch (``revokewatch``)."""
