"""Run the ``saslnetauth`` command as an admin would: in this process, or as a process.

:func:`run` calls the console script's entry point (``saslnetauth.cli:main``) in
this process by default, as a fresh process would see it: its own standard
input, output and error, ``os.environ`` without the caller's ``SASLNETAUTH_*``
variables plus ``env``, ``cwd``, the logging of a process that configured none,
Python's default warning filters, and the command table as loaded before the
call (see :func:`_isolated`). A command that changes a signal handler or the
umask, or leaves a thread running, fails the call: it belongs in a process.
Starting a Python process and importing the CLI took most of a CLI test's
time (docs/testing.md, "Time").

``run(..., process=True)`` runs the installed console script instead; a call
site asks for it where the test is about the process itself (its imports,
signals, exit, the console script). ``serve`` and another ``prog`` (the
checkpassword script) always need it: the runner refuses them in-process.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent

#: Commands that only run as a process (they install signal handlers, log, serve).
PROCESS_ONLY = {"serve"}
_SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE, signal.SIGCHLD]


@dataclass
class Result:
    code: int
    out: str
    err: str


def run(
    *args: str,
    db: str | None = None,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    prog: str = "saslnetauth",
    timeout: float = 60,
    cwd: str | Path | None = None,
    process: bool = False,
) -> Result:
    argv = (["--database", db] if db is not None else []) + list(args)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SASLNETAUTH_")}
    full_env.update(env or {})
    if process:
        return _process(prog, argv, stdin, full_env, timeout, cwd)
    if prog != "saslnetauth" or PROCESS_ONLY & set(args):
        raise ValueError(f"{prog} {' '.join(args)}: run it with process=True")
    # A process with its output on pipes sees no terminal: 80 columns unless COLUMNS says
    # otherwise (click's help, rich's tables); this process may have one on -s.
    full_env.setdefault("COLUMNS", "80")
    return _in_process(argv, stdin, full_env, cwd)


def _process(
    prog: str,
    argv: list[str],
    stdin: str | None,
    env: dict[str, str],
    timeout: float,
    cwd: str | Path | None,
) -> Result:
    p = subprocess.run(
        [str(BIN / prog), *argv],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=cwd,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )
    return Result(p.returncode, p.stdout, p.stderr)


def _in_process(
    argv: list[str], stdin: str | None, env: dict[str, str], cwd: str | Path | None
) -> Result:
    from saslnetauth.cli import main

    out, err = io.BytesIO(), io.BytesIO()
    with _isolated(stdin or "", out, err, env, cwd):
        try:
            code = main(argv)
        except SystemExit as exc:  # as the interpreter turns it into a status
            code = _exit_status(exc)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
    return Result(code, _text(out, "strict"), _text(err, "backslashreplace"))


def _exit_status(exc: SystemExit) -> int:
    if exc.code is None or isinstance(exc.code, int):
        return exc.code or 0
    print(exc.code, file=sys.stderr)
    return 1


def _text(buf: io.BytesIO, errors: str) -> str:
    """What ``subprocess.run(text=True)`` makes of the bytes (universal newlines)."""
    text = buf.getvalue().decode("utf-8", errors)
    return text.replace("\r\n", "\n").replace("\r", "\n")


@contextlib.contextmanager
def _isolated(
    stdin: str, out: io.BytesIO, err: io.BytesIO, env: dict[str, str], cwd: str | Path | None
) -> Iterator[None]:
    """Standard streams, environment, directory, logging, warnings and the command
    table as a fresh ``saslnetauth`` process has them; all put back afterwards."""
    from saslnetauth.cli import cli

    saved_streams = sys.stdin, sys.stdout, sys.stderr
    saved_env, saved_cwd, saved_commands = dict(os.environ), os.getcwd(), dict(cli.commands)
    saved_signals = {s: signal.getsignal(s) for s in _SIGNALS}
    saved_umask = os.umask(0o022)
    os.umask(saved_umask)
    threads = set(threading.enumerate())
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin.encode()), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(out, encoding="utf-8", write_through=True)
    sys.stderr = io.TextIOWrapper(err, encoding="utf-8", errors="backslashreplace")
    os.environ.clear()
    os.environ.update(env)
    try:
        if cwd is not None:
            os.chdir(cwd)
        with _fresh_logging(), warnings.catch_warnings():
            warnings.resetwarnings()
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning):
                warnings.simplefilter("ignore", category)
            warnings.simplefilter("ignore", ResourceWarning)
            warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
            yield
    finally:
        for stream in (sys.stdin, sys.stdout, sys.stderr):
            stream.flush() if stream.writable() else None
            stream.detach()
        sys.stdin, sys.stdout, sys.stderr = saved_streams
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)
        cli.commands.clear()
        cli.commands.update(saved_commands)
    _changed_process_state(saved_signals, saved_umask, threads)


def _changed_process_state(
    signals: Mapping[signal.Signals, object], umask: int, threads: set[threading.Thread]
) -> None:
    """Fail (after putting it back) when the command changed what a process owns."""
    changed = [s for s in _SIGNALS if signal.getsignal(s) != signals[s]]
    for s in changed:
        old = signals[s]
        if callable(old) or isinstance(old, int):
            signal.signal(s, old)
    now = os.umask(umask)
    left = [t.name for t in threading.enumerate() if t not in threads and t.is_alive()]
    if changed or now != umask or left:
        raise AssertionError(
            f"the command changed signal handlers {[s.name for s in changed]}, the umask ({now:o} from "
            f"{umask:o}) or left threads {left} running: run it with process=True"
        )


def _our_loggers() -> list[logging.Logger]:
    return [
        lg
        for name, lg in logging.Logger.manager.loggerDict.items()
        if isinstance(lg, logging.Logger)
        and (name == "saslnetauth" or name.startswith("saslnetauth."))
    ]


@contextlib.contextmanager
def _fresh_logging() -> Iterator[None]:
    """No handler on the root logger nor on ``saslnetauth``'s (a process that set up
    none: warnings reach standard error through logging's last resort)."""
    root = logging.getLogger()
    ours = _our_loggers()
    saved = {lg: (lg.handlers[:], lg.level, lg.propagate, lg.disabled) for lg in [root, *ours]}
    disable = logging.root.manager.disable
    logging.disable(logging.NOTSET)
    root.handlers = []
    root.setLevel(logging.WARNING)
    for lg in ours:
        lg.handlers, lg.propagate, lg.disabled = [], True, False
        lg.setLevel(logging.NOTSET)  # setLevel also forgets the loggers' cached levels
    try:
        yield
    finally:
        for new in _our_loggers():  # made by a module the command imported: as it was made
            saved.setdefault(new, ([], logging.NOTSET, True, False))
        for lg, (handlers, level, propagate, disabled) in saved.items():
            for h in lg.handlers:
                if h not in handlers:
                    h.close()
            lg.handlers, lg.propagate, lg.disabled = handlers, propagate, disabled
            lg.setLevel(level)
        logging.disable(disable)


def init_with_user(
    db: str, name: str, password: str, *nets: str, extra: tuple[str, ...] = ()
) -> str:
    """``saslnetauth init`` then ``user add NAME --password-stdin --net NET...`` on
    ``db`` (the "database with alice" most tests start from); returns ``db``."""
    assert run("init", db=db).code == 0
    args = ["user", "add", name, "--password-stdin", *extra]
    for net in nets:
        args += ["--net", net]
    r = run(*args, db=db, stdin=password + "\n")
    assert r.code == 0, r.err
    return db
