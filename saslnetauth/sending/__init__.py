"""Sending limits after AUTH (README and docs/sending.md, "Sending limits").

``protocol`` is the Postfix policy delegation codec (no I/O), ``counters`` the
sliding windows, ``logins`` the link from a Postfix session to the credential
that authenticated it, ``state`` the embedded and Redis stores, ``limits`` the
decision, ``server`` the socket loop around them.
"""
