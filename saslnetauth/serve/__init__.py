"""``saslnetauth serve``: the asyncio responder (``server``), its sockets
(``listeners``), decision workers (``workers``), brute-force brake (``penalty``),
alert command (``alerts``) and metrics (``metrics``)."""
