"""A browser, over plain HTTP, for the Roundcube of :mod:`tests.support.roundcube`.

It makes the requests Roundcube 1.6's pages and scripts make (read from
Debian 12's 1.6.5): the login page and its form with the ``_token`` hidden
field, the redirect to ``?_task=mail``, the message list (an AJAX request
with the ``X-Roundcube-Request`` header carrying the session's
``request_token``), and the compose form (``?_action=compose`` redirects to
its ``_id``; the form posts ``_action=send`` into a frame, whose answer calls
``sent_successfully``). Each connection starts from ``source_ip``, so that
Roundcube's ``REMOTE_ADDR`` is the browser's address. Standard library only
(``urllib`` with a cookie jar).
"""

from __future__ import annotations

import functools
import http.client
import http.cookiejar
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from typing import Any, NamedTuple

from tests.support.net import PeerError

TIMEOUT = 60.0
_MESSAGE = re.compile(r'display_message\("((?:[^"\\]|\\.)*)","(\w+)"')
_SENT = re.compile(r'sent_successfully\("\w+","((?:[^"\\]|\\.)*)"')
_TOKEN = re.compile(r'"request_token":"([^"]+)"')


class Page(NamedTuple):
    status: int
    url: str
    body: str

    def messages(self) -> list[tuple[str, str]]:
        """Roundcube's on-screen messages: (text, type), e.g. ("Login failed.", "warning")."""
        return [(json.loads(f'"{m[0]}"'), m[1]) for m in _MESSAGE.findall(self.body)]


class LoginResult(NamedTuple):
    ok: bool
    page: Page

    @property
    def messages(self) -> list[tuple[str, str]]:
        return self.page.messages()


class FormParser(HTMLParser):
    """The fields of one ``<form>`` (by its ``name``) as a browser would submit them."""

    def __init__(self, form_name: str) -> None:
        super().__init__(convert_charrefs=True)
        self.form_name = form_name
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self._inside = False
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._inside = a.get("name") == self.form_name and self.action is None
            if self._inside:
                self.action = a.get("action", "")
            return
        if not self._inside:
            return
        name = a.get("name", "")
        if tag == "option" and self._select is not None:
            # the first option, unless a later one is selected
            if self._select not in self.fields or "selected" in a:
                self.fields[self._select] = a.get("value", "")
        elif not name:
            return
        elif tag == "input" and a.get("type", "text") not in ("checkbox", "radio", "submit"):
            self.fields.setdefault(name, a.get("value", ""))
        elif tag == "select":
            self._select = name
        elif tag == "textarea":
            self._textarea = name
            self.fields.setdefault(name, "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._inside = False
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self.fields[self._textarea] += data


def form_fields(html: str, form_name: str) -> tuple[str, dict[str, str]]:
    """``(action, fields)`` of the form named ``form_name``, or :class:`PeerError`."""
    parser = FormParser(form_name)
    parser.feed(html)
    if parser.action is None:
        raise PeerError(f"no <form name={form_name!r}> in the page:\n{html[:2000]}")
    return parser.action, parser.fields


class Browser:
    """One browser (one cookie jar) on ``source_ip``, using the Roundcube at ``base_url``."""

    def __init__(self, base_url: str, source_ip: str) -> None:
        if not base_url.startswith("http://"):
            raise ValueError(f"not an http:// URL: {base_url}")
        self.base_url = base_url
        self.source_ip = source_ip
        self.cookies = http.cookiejar.CookieJar()
        connection = functools.partial(http.client.HTTPConnection, source_address=(source_ip, 0))

        class FromSource(urllib.request.HTTPHandler):
            def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
                return self.do_open(connection, req)

        self.opener = urllib.request.build_opener(
            FromSource(), urllib.request.HTTPCookieProcessor(self.cookies)
        )
        self.request_token: str | None = None

    def request(
        self, path: str, data: dict[str, str] | None = None, headers: dict[str, str] | None = None
    ) -> Page:
        """GET (or POST ``data``) ``path``, redirects followed; a 4xx/5xx page is returned too."""
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        url = urllib.parse.urljoin(self.base_url, path)  # http:// (checked in __init__)
        req = urllib.request.Request(url, body, headers or {})  # noqa: S310
        try:
            with self.opener.open(req, timeout=TIMEOUT) as r:
                return Page(r.status, r.url, r.read().decode(errors="replace"))
        except urllib.error.HTTPError as e:
            return Page(e.code, e.url, e.read().decode(errors="replace"))

    # -- what a user does ------------------------------------------------
    def login(self, user: str, password: str) -> LoginResult:
        """Open the login page and post its form. ``ok``: Roundcube shows the mailbox."""
        page = self.request("?_task=login")
        if page.status != 200:
            raise PeerError(f"login page: HTTP {page.status}\n{page.body[:2000]}")
        action, fields = form_fields(page.body, "login-form")
        fields.update(_user=user, _pass=password, _timezone="UTC")
        after = self.request(action, fields)
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(after.url).query)
        ok = (
            after.status == 200 and query.get("_task") == ["mail"] and '"task":"mail"' in after.body
        )
        if ok:
            token = _TOKEN.search(after.body)
            self.request_token = token.group(1) if token else None
        elif after.status not in (200, 401):
            raise PeerError(f"login: HTTP {after.status} at {after.url}\n{after.body[:2000]}")
        return LoginResult(ok, after)

    def ajax(self, query: str) -> dict[str, Any]:
        """An AJAX request as Roundcube's scripts make it; its JSON answer."""
        if self.request_token is None:
            raise PeerError("not logged in")
        page = self.request(
            f"?{query}&_remote=1",
            headers={
                "X-Roundcube-Request": self.request_token,
                "X-Requested-With": "XMLHttpRequest",
            },
        )
        if page.status != 200:
            raise PeerError(f"AJAX {query}: HTTP {page.status}\n{page.body[:2000]}")
        answer: dict[str, Any] = json.loads(page.body)
        return answer

    def list_mailbox(self, mailbox: str = "INBOX") -> dict[str, Any]:
        """The message list's answer; ``["env"]["messagecount"]`` is the number of messages."""
        answer = self.ajax(f"_task=mail&_action=list&_mbox={urllib.parse.quote(mailbox)}")
        if answer.get("action") != "list" or "messagecount" not in answer.get("env", {}):
            raise PeerError(f"not a message list: {answer}")
        return answer

    def send(self, to: str, subject: str, text: str) -> Page:
        """Compose and send a plain-text message; :meth:`sent` tells whether it went."""
        compose = self.request("?_task=mail&_action=compose")
        if compose.status != 200 or "_id=" not in compose.url:
            raise PeerError(
                f"compose: HTTP {compose.status} at {compose.url}\n{compose.body[:2000]}"
            )
        action, fields = form_fields(compose.body, "form")
        fields.update(_to=to, _subject=subject, _message=text, _is_html="0", _draft="")
        # the script posts the form into a frame and names the busy message to unlock
        return self.request(f"{action}&_unlock=loading1&_framed=1", fields)

    @staticmethod
    def sent(page: Page) -> str | None:
        """Roundcube's "Message sent successfully." from the send answer, or None."""
        m = _SENT.search(page.body)
        return json.loads(f'"{m.group(1)}"') if m else None
