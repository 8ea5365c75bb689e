"""Sending limits after AUTH (docs/sending.md).

``protocol`` is the Postfix policy delegation codec (no I/O), ``state`` the
sliding windows in this process and ``redisstate`` in Redis or Valkey,
``logins`` the link from a Postfix session to the credential that
authenticated it, ``limits`` the decision, ``server`` the socket loop around
them, ``checks`` their configuration's, ``explain`` ``saslnetauth sending
show``. Nothing here is imported by importing the package.
"""

#: The limits a user or an app password may set (their columns in ``users`` and
#: ``app_passwords``, the keys of ``[sending]``, the options of ``user set``).
SENDING_LIMITS = (
    "messages_per_hour",
    "recipients_per_hour",
    "messages_per_day",
    "recipients_per_day",
)
