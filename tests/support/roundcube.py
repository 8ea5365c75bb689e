"""A real Roundcube (Debian 12's ``roundcube-core``) under PHP's built-in web server.

The instance is a private install tree under a temp dir (docs/protocols.md,
"Roundcube in the tests"): an ``index.php`` that sets Roundcube's
``INSTALL_PATH`` to the tree and runs the packaged ``/usr/share/roundcube``,
symlinks to the packaged program, skins and SQL, its own ``config/`` (SQLite
database, a fresh ``des_key``, IMAP and SMTP on the test's Dovecot and
Postfix) and its own ``plugins/`` holding the project's forwarding plugin
from ``dovecot-examples/roundcube/``. ``php -S 127.0.0.1:PORT`` serves it, so
a browser that connects from 127.0.0.x is Roundcube's ``REMOTE_ADDR``.

The browser side is :mod:`tests.support.webmail`.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.support.net import (
    PeerError,
    free_port,
    make_peer_dir,
    require_root,
    tail,
    wait_port,
)
from tests.support.peers import Daemon, missing, require_binary

REPO = Path(__file__).resolve().parents[2]
PLUGIN_DIR = REPO / "dovecot-examples" / "roundcube"
PLUGIN = "saslnetauth_originating_ip"
PACKAGE_DIR = Path("/usr/share/roundcube")
PACKAGE_CONFIG = Path("/etc/roundcube")
MAIL_DOMAIN = "saslnetauth.test"

PhpValue = bool | int | str | Sequence[str]


def php_literal(value: PhpValue) -> str:
    """``value`` as a PHP literal (bools, ints, strings, lists of strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return "[" + ", ".join(php_literal(v) for v in value) + "]"


def require_roundcube() -> str:
    """The ``php`` binary, once Roundcube and its SQLite driver are installed, or missing()."""
    php = require_binary("php")
    if not (PACKAGE_DIR / "index.php").exists():
        missing(f"Roundcube at {PACKAGE_DIR} (Debian package roundcube-core)")
    res = subprocess.run([php, "-m"], capture_output=True, text=True, check=False, timeout=60)
    if "pdo_sqlite" not in res.stdout:
        missing("PHP's pdo_sqlite module (Debian package php-sqlite3)")
    return php


class RoundcubeInstance(Daemon):
    """A private Roundcube on 127.0.0.1:``port``, using IMAP and SMTP on 127.0.0.1.

    ``plugins``: the plugins to enable (default: the project's forwarding
    plugin). ``config``: more ``$config[...]`` settings, e.g.
    ``{"smtp_xclient_addr": True}``. Roundcube reads its configuration on
    every request, so :meth:`use` and :meth:`reconfigure` change a running
    instance: one Roundcube serves several back ends in turn.
    """

    def __init__(
        self,
        tmpdir: Path,
        imap_port: int = 143,
        smtp_port: int = 25,
        *,
        plugins: Sequence[str] = (PLUGIN,),
        config: Mapping[str, PhpValue] | None = None,
    ) -> None:
        require_root()
        self.php = require_roundcube()
        self.root = make_peer_dir(Path(tmpdir))
        self.tree = self.root / "www"
        self.config_dir = self.tree / "config"
        self.log_dir = self.root / "logs"
        self.server_log = self.root / "php-server.log"
        self.db_path = self.root / "db" / "roundcube.db"
        self.port = free_port()
        self.imap_port = imap_port
        self.smtp_port = smtp_port
        self.plugins = list(plugins)
        self.extra = dict(config or {})
        self.des_key = secrets.token_urlsafe(18)[:24]
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    # -- the install tree and its configuration --------------------------
    def settings(self) -> dict[str, PhpValue]:
        settings: dict[str, PhpValue] = {
            "db_dsnw": f"sqlite:///{self.db_path}?mode=0640",
            "imap_host": f"127.0.0.1:{self.imap_port}",
            "smtp_host": f"127.0.0.1:{self.smtp_port}",
            "smtp_user": "%u",
            "smtp_pass": "%p",
            "des_key": self.des_key,
            "plugins": self.plugins,
            "skin": "elastic",
            "mail_domain": MAIL_DOMAIN,
            "create_default_folders": True,
            "enable_spellcheck": False,
            "log_dir": str(self.log_dir),
            "temp_dir": str(self.root / "temp"),
            "log_logins": True,
            # the tests log in and fail on purpose: no lock-out of the test addresses
            "login_rate_limit": 0,
            "enable_installer": False,
        }
        settings.update(self.extra)
        return settings

    def config_text(self) -> str:
        lines = [
            "<?php",
            "// private Roundcube instance (tests/support/roundcube.py)",
            "$config = [];",
        ]
        lines += [
            f"$config[{php_literal(k)}] = {php_literal(v)};" for k, v in self.settings().items()
        ]
        return "\n".join(lines) + "\n"

    def use(self, imap_port: int, smtp_port: int, **config: PhpValue) -> None:
        """Talk to these IMAP and SMTP ports from now on, with only ``config`` on top
        of the defaults (what earlier :meth:`reconfigure` calls set is dropped)."""
        self.imap_port, self.smtp_port = imap_port, smtp_port
        self.extra = dict(config)
        self._write_config()

    def reconfigure(self, **config: PhpValue) -> None:
        """Change settings of the running instance (read again on the next request)."""
        self.extra.update(config)
        self._write_config()

    def _write_config(self) -> None:
        tmp = self.config_dir / "config.inc.php.new"
        tmp.write_text(self.config_text())
        os.replace(tmp, self.config_dir / "config.inc.php")

    def _build_tree(self) -> None:
        for d in (
            self.tree,
            self.config_dir,
            self.tree / "plugins",
            self.log_dir,
            self.root / "temp",
        ):
            d.mkdir(parents=True, exist_ok=True)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        for name in ("program", "skins", "SQL"):
            (self.tree / name).symlink_to(PACKAGE_DIR / name)
        for name in ("defaults.inc.php", "mimetypes.php"):
            (self.config_dir / name).symlink_to(PACKAGE_CONFIG / name)
        # the packaged plugins (Roundcube requires two of them), then the project's
        for source in [*(PACKAGE_DIR / "plugins").iterdir(), PLUGIN_DIR / PLUGIN]:
            (self.tree / "plugins" / source.name).symlink_to(source)
        (self.tree / "index.php").write_text(
            "<?php\n// Roundcube's packaged entry point, with this tree as its install path\n"
            f"define('INSTALL_PATH', {php_literal(str(self.tree) + '/')});\n"
            f"require {php_literal(str(PACKAGE_DIR / 'index.php'))};\n"
        )
        self._write_config()

    def _opcache_blacklist(self) -> Path:
        path = self.root / "opcache-blacklist.txt"
        path.write_text(f"{self.config_dir}/config.inc.php\n")
        return path

    # -- life cycle ----------------------------------------------------
    def start(self) -> None:
        self._build_tree()
        with open(self.server_log, "wb") as log:
            self._proc = subprocess.Popen(
                [
                    self.php,
                    # PHP's opcode cache looks at a changed file only every 2 s:
                    # the configuration is read afresh on every request
                    "-d",
                    f"opcache.blacklist_filename={self._opcache_blacklist()}",
                    "-S",
                    f"127.0.0.1:{self.port}",
                    "-t",
                    str(self.tree),
                ],
                cwd=self.tree,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TZ": "UTC"},
            )
        try:
            wait_port("127.0.0.1", self.port)
        except TimeoutError as e:
            raise PeerError(f"php -S did not listen:\n{tail(self.log())}") from e

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    # -- logs ----------------------------------------------------------
    def log(self) -> str:
        """PHP's server log (one line per request) and Roundcube's own error log."""
        text = ""
        for path in (self.server_log, self.log_dir / "errors.log"):
            if path.exists():
                text += f"== {path.name}\n{path.read_text(errors='replace')}"
        return text
