"""Dovecot's authentication protocol: the server-side codec (``protocol``), SASL
PLAIN/LOGIN (``sasl``) and a small client (``client``).

Standard library only, and nothing is imported here: the checkpassword fast
path imports ``saslnetauth.dovecot.client`` on every login.
"""
