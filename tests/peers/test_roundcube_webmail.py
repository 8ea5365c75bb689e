"""A real Roundcube (Debian 12's 1.6.5) in front of a real Dovecot 2.3 and Postfix.

A browser on 127.0.0.x logs in over HTTP, lists its mailbox and sends a
message (tests/support/webmail.py); Roundcube (tests/support/roundcube.py)
logs in to Dovecot over IMAP from 127.0.0.1, with the project's forwarding
plugin (dovecot-examples/roundcube/) telling Dovecot the browser's address,
and sends through Postfix from 127.0.0.1. Dovecot asks saslnetauth through
saslnetauth-checkpassword (the shipped example), Postfix asks ``serve``.

The harness tests (``test_roundcube_*``) hold with or without trusted
proxies: the browser's address is the user's network, 127.0.0.1 a global
network (what admins do without ``[proxies]``), no ``[proxies]`` section.
The webmail acceptance tests of issue 23 (``test_proxied_webmail_*``:
trusted proxies, forwarded logins, the webmail session binding; the setup of
dovecot-examples/roundcube/README.md) run when the configuration accepts
``[proxies]``.

Roundcube starts once for the module; each test points it at its back end.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.clitools import run
from tests.support.dovecot import DovecotInstance, mail_ids
from tests.support.net import make_peer_dir, peer_tmpdir, require_source_addresses
from tests.support.postfix import OUTSIDE_RECIPIENT, PostfixInstance
from tests.support.roundcube import PLUGIN, RoundcubeInstance
from tests.support.serverproc import ServerProcess, run_server
from tests.support.webmail import Browser

pytestmark = pytest.mark.peer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "dovecot-examples" / "dovecot" / "auth-saslnetauth.conf.ext"
CHECKPASSWORD = Path(sys.executable).parent / "saslnetauth-checkpassword"
PW = "w3bm4il pw"
SERVE = (
    '[serve]\nsocket_mode = "0666"\npenalty_max = 0\n'  # Postfix's smtpd connects as postfix
    "[passwords]\nargon2_memory_kib = 1024\nargon2_time_cost = 1\n"
)
PROXY = "127.0.0.1"
"""Roundcube's own address: where its IMAP and SMTP connections come from."""
BROWSER_OK = "127.0.0.23"
BROWSER_DENIED = "127.0.0.66"
PROXIES = '[proxies]\nnetworks = ["127.0.0.1/32"]\nsession_seconds = 1800\n'


@dataclass
class Backend:
    """saslnetauth serve, the Dovecot that asks it through checkpassword, the Postfix
    that asks it directly, and the database they share."""

    db: str
    server: ServerProcess
    dovecot: DovecotInstance
    postfix: PostfixInstance

    def serve_lines(self, since: int, verdict: str, **fields: str) -> list[str]:
        """The server's ``auth VERDICT:`` log lines after ``since`` with all ``fields``."""
        want = {f"{k}={v}" for k, v in fields.items()}
        return [
            line
            for line in self.server.log()[since:].splitlines()
            if f"auth {verdict}:" in line and want <= set(line.split())
        ]


def dovecot_passdb(sock: str, cfg: Path, home: Path) -> tuple[str, str]:
    """The shipped checkpassword example's passdb and userdb, with the test's paths."""
    text = EXAMPLE.read_text()
    program = f"{CHECKPASSWORD} --socket {sock} --config {cfg}"
    text, count = re.subn(r"\S*saslnetauth-checkpassword --socket \S+", program, text)
    assert count == 2, "example changed: update this test's rendering"
    uid, gid = mail_ids()
    fields = f"override_fields = uid={uid} gid={gid} home={home}/%u"
    text = re.sub(r"override_fields = .*", fields, text)
    passdb, _, userdb = text.partition("userdb {")
    return passdb, "userdb {" + userdb


@contextmanager
def backend(tmp: Path, config: str, global_nets: tuple[str, ...]) -> Iterator[Backend]:
    make_peer_dir(tmp)
    db = f"sqlite:///{tmp}/sna.db"
    assert run("init", db=db).code == 0
    r = run("user", "add", "alice", "--password-stdin", "--net", BROWSER_OK, db=db, stdin=PW)
    assert r.code == 0, r.err
    for net in global_nets:
        r = run("net", "add", net, db=db)
        assert r.code == 0, r.err
    cfg = tmp / "saslnetauth.toml"
    cfg.write_text(f'database_url = "{db}"\n{SERVE}{config}')
    cfg.chmod(0o644)
    passdb, userdb = dovecot_passdb(str(tmp / "auth-client"), cfg, tmp / "home")
    with (
        run_server(db, config=cfg, workdir=tmp) as server,
        DovecotInstance(
            tmp / "dovecot",
            passdb=passdb,
            userdb=userdb,
            protocols=("imap",),
            auth_debug=True,
            extra_config="login_trusted_networks = 127.0.0.0/8\n",
        ) as dovecot,
        PostfixInstance(
            tmp / "postfix",
            server.unix,
            main_cf={"smtpd_authorized_xclient_hosts": "127.0.0.0/8"},
        ) as postfix,
    ):
        yield Backend(db, server, dovecot, postfix)


@pytest.fixture(scope="module")
def module_tmp() -> Iterator[Path]:
    require_source_addresses(BROWSER_OK, BROWSER_DENIED)
    with peer_tmpdir("sna-rc-") as tmp:
        yield tmp


@pytest.fixture(scope="module")
def roundcube(module_tmp: Path, request: pytest.FixtureRequest) -> Iterator[RoundcubeInstance]:
    started = time.monotonic()
    with RoundcubeInstance(module_tmp / "roundcube") as rc:
        yield rc
    took = f"Roundcube webmail module: {time.monotonic() - started:.1f} s (peers included)"
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if capture is None or reporter is None:
        print(took)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(f"\n{took}")


@pytest.fixture(scope="module")
def today(module_tmp: Path) -> Iterator[Backend]:
    """No ``[proxies]``: 127.0.0.1 (the webmail) is a global network."""
    with backend(module_tmp / "today", "", (PROXY,)) as b:
        yield b


@pytest.fixture
def webmail(roundcube: RoundcubeInstance, today: Backend) -> RoundcubeInstance:
    assert today.dovecot.imap_port is not None
    roundcube.use(today.dovecot.imap_port, today.postfix.port, plugins=[PLUGIN])
    return roundcube


def sent_through(postfix: PostfixInstance, since: int, client: str) -> str:
    """Postfix's log of the message that Roundcube sent: accepted from ``client`` for
    alice's SASL login, queued, and handed to the discard sink."""
    log = postfix.wait_log(rf"to=<{re.escape(OUTSIDE_RECIPIENT)}>.*status=sent", since=since)
    text = postfix.maillog()[since:]
    assert re.search(
        rf"client=\S*\[{re.escape(client)}\], sasl_method=\w+, sasl_username=alice", text
    ), text
    assert "from=<alice@saslnetauth.test>" in text, text
    return log.group(0)


def read_and_send(browser: Browser, postfix: PostfixInstance, client: str) -> None:
    """List INBOX and Sent, send a message, and see it in Sent and in Postfix's log."""
    browser.list_mailbox("INBOX")  # PeerError unless Roundcube answers with the list
    sent_before = browser.list_mailbox("Sent")["env"]["messagecount"]
    mark = postfix.log_mark()
    page = browser.send(OUTSIDE_RECIPIENT, "saslnetauth webmail test", "sent from Roundcube")
    assert Browser.sent(page) == "Message sent successfully.", (page.body, postfix.maillog())
    sent_through(postfix, mark, client)
    assert browser.list_mailbox("Sent")["env"]["messagecount"] == sent_before + 1


# -- the harness: no [proxies], the webmail's address a global network -------------


def test_roundcube_reads_and_sends_and_the_plugin_forwards(
    webmail: RoundcubeInstance, today: Backend
) -> None:
    dovecot_mark, serve_mark = today.dovecot.log_mark(), len(today.server.log())
    browser = Browser(webmail.url, BROWSER_OK)
    login = browser.login("alice", PW)
    assert login.ok, (login.messages, webmail.log())
    read_and_send(browser, today.postfix, PROXY)
    # Dovecot's auth request: the browser's address, and Roundcube's as the real one
    auth = re.findall(r"client in: AUTH\t.*", today.dovecot.log()[dovecot_mark:])
    assert auth, today.dovecot.log()
    assert all(f"\trip={BROWSER_OK}\t" in a and f"\treal_rip={PROXY}\t" in a for a in auth), auth
    # saslnetauth decided both (which address it judges on IMAP is issue 23's business)
    assert today.serve_lines(serve_mark, "ok", user="alice", service="imap")
    assert today.serve_lines(serve_mark, "ok", user="alice", service="smtp", rip=PROXY)


def test_roundcube_wrong_password_sees_login_failed(
    webmail: RoundcubeInstance, today: Backend
) -> None:
    serve_mark = len(today.server.log())
    login = Browser(webmail.url, BROWSER_OK).login("alice", "not " + PW)
    assert not login.ok
    assert login.page.status == 401
    assert ("Login failed.", "warning") in login.messages, login.page.body[-2000:]
    assert today.serve_lines(serve_mark, "fail", user="alice", service="imap")


def test_roundcube_xclient_gives_postfix_the_browser_address(
    webmail: RoundcubeInstance, today: Backend
) -> None:
    webmail.reconfigure(smtp_xclient_addr=True)
    serve_mark = len(today.server.log())
    browser = Browser(webmail.url, BROWSER_OK)
    login = browser.login("alice", PW)
    assert login.ok, (login.messages, webmail.log())
    read_and_send(browser, today.postfix, BROWSER_OK)  # Postfix saw the browser
    assert today.serve_lines(serve_mark, "ok", user="alice", service="smtp", rip=BROWSER_OK)
    assert not today.serve_lines(serve_mark, "ok", service="smtp", rip=PROXY)


def test_roundcube_without_the_plugin_forwards_nothing(
    webmail: RoundcubeInstance, today: Backend
) -> None:
    webmail.reconfigure(plugins=[])
    mark = today.dovecot.log_mark()
    login = Browser(webmail.url, BROWSER_DENIED).login("alice", PW)
    # the webmail's own address is all Dovecot knows: the global network admits it
    assert login.ok, (login.messages, webmail.log())
    auth = re.findall(r"client in: AUTH\t.*", today.dovecot.log()[mark:])
    assert auth and all(f"\trip={PROXY}\t" in a and "real_rip" not in a for a in auth), auth


# -- issue 23's acceptance: webmail behind a trusted proxy --------------------------


@pytest.fixture(scope="module")
def proxied(module_tmp: Path) -> Iterator[Backend]:
    """``[proxies] networks = ["127.0.0.1/32"]``; 127.0.0.1 in no network."""
    with backend(module_tmp / "proxied", PROXIES, ()) as b:
        yield b


@pytest.fixture
def proxied_webmail(roundcube: RoundcubeInstance, proxied: Backend) -> RoundcubeInstance:
    assert proxied.dovecot.imap_port is not None
    roundcube.use(proxied.dovecot.imap_port, proxied.postfix.port, plugins=[PLUGIN])
    return roundcube


def test_proxied_webmail_reads_and_sends_with_xclient(
    proxied_webmail: RoundcubeInstance, proxied: Backend
) -> None:
    proxied_webmail.reconfigure(smtp_xclient_addr=True)
    serve_mark = len(proxied.server.log())
    browser = Browser(proxied_webmail.url, BROWSER_OK)
    login = browser.login("alice", PW)
    assert login.ok, (login.messages, proxied_webmail.log())
    read_and_send(browser, proxied.postfix, BROWSER_OK)  # Postfix saw the browser's address
    imap = proxied.serve_lines(serve_mark, "ok", user="alice", service="imap")
    assert imap and all({f"rip={BROWSER_OK}", f"proxy={PROXY}"} <= set(x.split()) for x in imap)
    assert proxied.serve_lines(serve_mark, "ok", user="alice", service="smtp", rip=BROWSER_OK)
    assert not proxied.serve_lines(serve_mark, "ok", service="smtp", proxy=PROXY)


def test_proxied_webmail_reads_and_sends_through_the_session_binding(
    proxied_webmail: RoundcubeInstance, proxied: Backend
) -> None:
    proxied_webmail.reconfigure(smtp_xclient_addr=False)
    serve_mark = len(proxied.server.log())
    browser = Browser(proxied_webmail.url, BROWSER_OK)
    login = browser.login("alice", PW)
    assert login.ok, (login.messages, proxied_webmail.log())
    read_and_send(browser, proxied.postfix, PROXY)  # SMTP AUTH from the webmail itself
    assert proxied.serve_lines(serve_mark, "ok", user="alice", service="smtp", proxy=PROXY)


def test_proxied_webmail_denied_browser_sees_login_failed_and_ends_the_binding(
    proxied_webmail: RoundcubeInstance, proxied: Backend
) -> None:
    allowed = Browser(proxied_webmail.url, BROWSER_OK).login("alice", PW)
    assert allowed.ok, allowed.messages
    # inside the binding: the webmail host's own SMTP AUTH for alice works
    assert proxied.postfix.login(PROXY, "alice", PW)[0] == 235
    login = Browser(proxied_webmail.url, BROWSER_DENIED).login("alice", PW)
    assert not login.ok
    assert ("Login failed.", "warning") in login.messages, login.page.body[-2000:]
    # the refused forwarded login ended the binding at once
    assert proxied.postfix.login(PROXY, "alice", PW)[0] == 535


def test_proxied_webmail_without_the_plugin_is_refused(
    proxied_webmail: RoundcubeInstance, proxied: Backend
) -> None:
    proxied_webmail.reconfigure(plugins=[])
    serve_mark = len(proxied.server.log())
    login = Browser(proxied_webmail.url, BROWSER_OK).login("alice", PW)
    assert not login.ok
    assert ("Login failed.", "warning") in login.messages, login.page.body[-2000:]
    lines = proxied.serve_lines(serve_mark, "fail", user="alice", service="imap", proxy=PROXY)
    assert lines and all("reason=proxy_without_client_address" in line for line in lines), lines
