"""``saslnetauth serve``: the asyncio responder (``server``, one ``session`` per
client connection) and who may connect (``access``), its sockets
(``listeners``), the ``classifier`` and ``scheduler`` in front of the decision
``workers`` (``worker_process`` and their ``frames``, or ``threads``), the
brute-force brake (``penalty``), the alert command (``alerts``) and
``metrics``; the HTTP layer (``http``) with Dovecot's auth ``policy``
endpoint, and the ``userdb`` lookups of the Dovecot 2.4 Lua bridge."""
