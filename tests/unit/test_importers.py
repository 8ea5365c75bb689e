"""Pure parts of import/export: file parsers, the import plan, the passwd-file builder."""

from __future__ import annotations

import pytest

from saslnetauth.admin.csvimport import parse_csv
from saslnetauth.admin.exporters import NO_NETWORK, allow_nets, dovecot_passwd_file
from saslnetauth.admin.importers import ImportRecord
from saslnetauth.admin.importplan import hash_pending, matching_plaintext, plan_import
from saslnetauth.admin.passwdfile import parse_passwd_file
from saslnetauth.credentials.passwords import PasswordHasher
from saslnetauth.policy.model import UserRecord
from saslnetauth.policy.rules.netrules import NetworkRule, RuleSet
from saslnetauth.store.changes import ExistingNetwork, ExistingUser

#: A real SHA512-CRYPT value (without the {SCHEME} prefix).
SHA512 = PasswordHasher().hash("pw", "SHA512-CRYPT").removeprefix("{SHA512-CRYPT}")


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    return PasswordHasher("ARGON2ID", argon2_memory_kib=256, argon2_time_cost=1)


def errors(result: object) -> list[tuple[int, str]]:
    return [(e.line, e.message) for e in result.errors]  # type: ignore[attr-defined]


# -- passwd-file ---------------------------------------------------------------------


def test_passwd_file_fields_comments_and_short_lines(hasher: PasswordHasher) -> None:
    text = "\n".join(
        [
            "# a comment",
            "",
            f"alice:{{SHA512-CRYPT}}{SHA512}:1000:1000:Alice:/home/alice:/bin/sh:"
            "allow_nets=192.0.2.0/24,2001:db8::/32,local userdb_quota_rule=*:storage=1G",
            "bob:{PLAIN}pw",
            "carol",
            f"dave:{SHA512}",
            "   ",
            "eve:{PLAIN}x::::::nopassword allow_nets=any",
            "frank:{PLAIN}x::::::fail",
            "gina:{PLAIN}x::::::nologin proxy=y host=10.0.0.1",
        ]
    )
    res = parse_passwd_file(text, hasher)
    assert res.errors == []
    recs = {r.name: r for r in res.records}
    assert [r.line for r in res.records] == [3, 4, 5, 6, 8, 9, 10]
    alice = recs["alice"]
    assert alice.password_hash == f"{{SHA512-CRYPT}}{SHA512}"
    assert [n.spec for n in alice.networks] == ["192.0.2.0/24", "2001:db8::/32", "local"]
    assert all(n.services is None for n in alice.networks)
    assert recs["bob"].password_hash == "{PLAIN}pw" and recs["bob"].networks == ()
    assert recs["carol"].password_hash is None  # only a name: no password
    assert recs["dave"].password_hash == f"{{SHA512-CRYPT}}{SHA512}"  # bare value: CRYPT
    # Dovecot's nopassword accepts any password; here it means NO password.
    assert recs["eve"].password_hash is None and recs["eve"].networks[0].spec == "any"
    assert recs["frank"].enabled is False and recs["gina"].enabled is False
    assert alice.enabled and recs["bob"].enabled
    assert res.no_password == 2
    assert res.disabled_by_field == 2
    assert res.plaintext_hashes == 3
    assert dict(res.ignored_fields) == {"userdb_quota_rule": 1, "proxy": 1, "host": 1}


def test_passwd_file_old_format_mail_location_is_ignored(hasher: PasswordHasher) -> None:
    res = parse_passwd_file("u:{PLAIN}x:1000:1000::/home/u:/bin/sh::maildir:~/Maildir\n", hasher)
    assert res.errors == [] and res.records[0].networks == ()
    assert dict(res.ignored_fields) == {"userdb_mail": 1}


def test_passwd_file_errors_name_every_bad_line(hasher: PasswordHasher) -> None:
    text = "\n".join(
        [
            "# header",
            "ok1:{PLAIN}a",
            ":nouser",
            "badnet:{PLAIN}a::::::allow_nets=10.1.2.3/8",
            "badscheme:{FOO}bar",
            "twice:{PLAIN}a::::::allow_nets=192.0.2.1 allow_nets=192.0.2.2",
            "Ok1:{PLAIN}b",
            "garbage:notahash",
            "emptyplain:{PLAIN}",
            "bad\udcffutf8:{PLAIN}a",
            "badtoo:{SHA512-CRYPT}$6$short",
        ]
    )
    res = parse_passwd_file(text, hasher)
    errs = errors(res)
    assert [line for line, _ in errs] == [3, 4, 5, 6, 7, 8, 9, 10, 11]
    msgs = dict(errs)
    assert "no user name" in msgs[3]
    assert "host bits are set; did you mean 10.0.0.0/8?" in msgs[4]
    assert "unknown password scheme {FOO}" in msgs[5]
    assert "allow_nets given twice" in msgs[6]
    assert msgs[7] == "user ok1 already defined on line 2"
    assert "{CRYPT}" in msgs[8]
    assert "empty password" in msgs[9]
    assert "not valid UTF-8" in msgs[10]
    assert "password" in msgs[11]
    assert [r.name for r in res.records] == ["ok1"]


def test_passwd_file_duplicate_after_a_bad_line_is_still_reported(
    hasher: PasswordHasher,
) -> None:
    res = parse_passwd_file("bob:{FOO}x\nbob:{PLAIN}y\n", hasher)
    assert errors(res)[1] == (2, "user bob already defined on line 1")


def test_passwd_file_case_sensitive_names(hasher: PasswordHasher) -> None:
    text = "Alice:{PLAIN}a\nalice:{PLAIN}b\n"
    assert errors(parse_passwd_file(text, hasher))[0][0] == 2
    res = parse_passwd_file(text, hasher, lowercase=False)
    assert res.errors == [] and [r.name for r in res.records] == ["Alice", "alice"]


def test_passwd_file_network_forms(hasher: PasswordHasher) -> None:
    line = "u:{PLAIN}a::::::allow_nets=192.0.2.7,::ffff:192.0.2.0/120,2001:DB8::/32,192.0.2.7"
    res = parse_passwd_file(line, hasher)
    assert res.errors == []
    assert [n.spec for n in res.records[0].networks] == [
        "192.0.2.7",
        "192.0.2.0/24",
        "2001:db8::/32",
    ]


def test_passwd_file_default_scheme(hasher: PasswordHasher) -> None:
    res = parse_passwd_file("u:secret\n", hasher, default_scheme="PLAIN")
    assert res.records[0].password_hash == "{PLAIN}secret"


# -- CSV ---------------------------------------------------------------------------------


def test_csv_columns_services_and_quoting(hasher: PasswordHasher) -> None:
    text = (
        "\ufeffName, networks ,password_hash,enabled\r\n"
        f"alice,192.0.2.0/24@smtp+Submission 2001:db8::/32,{{SHA512-CRYPT}}{SHA512},yes\r\n"
        '"bob","10.0.0.0/8, local",{PLAIN}pw,no\r\n'
        "\r\n"
        "carol,,,\r\n"
    )
    res = parse_csv(text, hasher)
    assert res.errors == []
    alice, bob, carol = res.records
    assert alice.line == 2 and bob.line == 3 and carol.line == 5
    assert [(n.spec, n.services) for n in alice.networks] == [
        ("192.0.2.0/24", frozenset({"smtp", "submission"})),
        ("2001:db8::/32", None),
    ]
    assert [n.spec for n in bob.networks] == ["10.0.0.0/8", "local"]
    assert bob.enabled is False and alice.enabled is True and carol.enabled is True
    assert carol.password_hash is None and carol.networks == ()
    assert res.no_password == 1 and res.plaintext_hashes == 1 and not res.plaintext_column


def test_csv_plaintext_column(hasher: PasswordHasher) -> None:
    res = parse_csv('name,password\nalice,"s3cret, with comma"\nbob,\n', hasher)
    assert res.errors == [] and res.plaintext_column
    assert res.records[0].password_plain == "s3cret, with comma"
    assert res.records[0].password_hash is None
    assert res.records[1].password_plain is None and res.no_password == 1


def test_csv_multiline_record_reports_its_first_line(hasher: PasswordHasher) -> None:
    text = 'name,password\nalice,"two\nlines"\nbob,x\nbob,y\n'
    res = parse_csv(text, hasher)
    assert [r.line for r in res.records] == [2, 4]
    assert errors(res) == [(5, "user bob already defined on line 4")]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("name,pasword_hash", "unknown column(s) 'pasword_hash'"),
        ("password_hash,networks", "no 'name' column"),
        ("name,password,password_hash", "not both"),
        ("name,name", "given twice: name"),
    ],
)
def test_csv_bad_header(hasher: PasswordHasher, header: str, message: str) -> None:
    res = parse_csv(f"{header}\nalice,x,y\n", hasher)
    assert res.records == []
    assert any(line == 1 and message in msg for line, msg in errors(res)), errors(res)


def test_csv_empty_file(hasher: PasswordHasher) -> None:
    assert "empty" in errors(parse_csv("\n\n", hasher))[0][1]


def test_csv_bad_rows_all_listed(hasher: PasswordHasher) -> None:
    text = "\n".join(
        [
            "name,password_hash,networks,enabled",
            "a,{PLAIN}x,192.0.2.0/24@,yes",
            "b,{PLAIN}x,10.1.2.3/8,yes",
            "c,{PLAIN}x,,maybe",
            "d,{PLAIN}x",
            "e,{NOPE}x,,",
            "f,{PLAIN}x,192.0.2.0/24@smtp 192.0.2.0/24@imap,",
            "g,{PLAIN}x,192.0.2.0/24@smtp 192.0.2.0/24@SMTP,",
            "h,{PLAIN}x,192.0.2.0/24@sm tp,",
        ]
    )
    res = parse_csv(text, hasher)
    msgs = dict(errors(res))
    assert sorted(msgs) == [2, 3, 4, 5, 6, 7, 9]
    assert "no service after '@'" in msgs[2]
    assert "did you mean 10.0.0.0/8?" in msgs[3]
    assert "not yes or no" in msgs[4]
    assert "expected 4 fields, found 2" in msgs[5]
    assert "unknown password scheme" in msgs[6]
    assert "given twice with different services" in msgs[7]
    assert "invalid network 'tp'" in msgs[9]
    assert [r.name for r in res.records] == ["g"]  # identical duplicates merge


# -- import plan ---------------------------------------------------------------------------


def rec(line: int, name: str, phash: str | None, *nets: str, **kw: object) -> ImportRecord:
    rules = tuple(
        NetworkRule.parse(n.split("@")[0], n.partition("@")[2].replace("+", ",") or None)
        for n in nets
    )
    return ImportRecord(line, name, phash, rules, **kw)  # type: ignore[arg-type]


def test_plan_add_update_unchanged_and_network_diff() -> None:
    existing = {
        "same": ExistingUser(
            1, "same", "{PLAIN}a", "hash", True, (ExistingNetwork(10, "192.0.2.0/24", None),)
        ),
        "nets": ExistingUser(
            2,
            "nets",
            "{PLAIN}a",
            "hash",
            True,
            (
                ExistingNetwork(20, "192.0.2.0/24", "smtp"),  # services change
                ExistingNetwork(21, "198.51.100.0/24", None),  # not in file: deleted
                ExistingNetwork(22, "not a network", None),  # invalid row: deleted
                ExistingNetwork(23, "10.0.0.7/32", None),  # same as 10.0.0.7: kept
                ExistingNetwork(24, "10.0.0.7", None),  # duplicate after canonicalising
            ),
        ),
        "state": ExistingUser(3, "state", "{PLAIN}a", "hash", True),
        "pam": ExistingUser(4, "pam", None, "pam", True),
    }
    records = [
        rec(1, "same", "{PLAIN}a", "192.0.2.0/24"),
        rec(2, "nets", "{PLAIN}a", "192.0.2.0/24@imap", "10.0.0.7", "2001:db8::/32"),
        rec(3, "state", "{PLAIN}b", enabled=False),
        rec(4, "pam", "{PLAIN}a"),
        rec(5, "new", None, "local"),
    ]
    plan = plan_import(records, existing)
    assert (plan.added, plan.updated, plan.unchanged) == (1, 2, 1)
    assert [(e.line, "PAM" in e.message) for e in plan.errors] == [(4, True)]
    ch = plan.changes
    assert sorted(ch.network_deletes) == [21, 22, 24]
    assert ch.network_updates == [(20, "imap")]
    assert [(uid, row.network) for uid, row in ch.network_inserts] == [(2, "2001:db8::/32")]
    assert [(u.user_id, u.password_hash, u.enabled) for u in ch.user_updates] == [
        (2, "{PLAIN}a", True),
        (3, "{PLAIN}b", False),
    ]
    assert [(u.name, [r.network for r in u.networks]) for u in ch.new_users] == [("new", ["local"])]


def test_plan_plaintext_passwords(hasher: PasswordHasher) -> None:
    stored = hasher.hash("right")
    existing = {
        "keep": ExistingUser(1, "keep", stored, "hash", True),
        "change": ExistingUser(2, "change", stored, "hash", True),
    }
    records = [
        rec(1, "keep", None, password_plain="right"),
        rec(2, "change", None, password_plain="other"),
        rec(3, "new", None, password_plain="fresh"),
    ]
    matches = matching_plaintext(records, existing, hasher)
    assert matches == {"keep"}
    plan = plan_import(records, existing, plaintext_matches=matches)
    assert (plan.added, plan.updated, plan.unchanged) == (1, 1, 1)
    assert set(plan.changes.pending_plain) == {"change", "new"}
    done = hash_pending(plan.changes, hasher)
    assert done.pending_plain == {}
    assert hasher.verify("other", done.user_updates[0].password_hash or "")
    assert hasher.verify("fresh", done.new_users[0].password_hash or "")


# -- export --------------------------------------------------------------------------------


def user(name: str, phash: str | None, *nets: str, **kw: object) -> UserRecord:
    rules = RuleSet(
        NetworkRule.parse(
            n.split("@")[0], n.partition("@")[2].replace("+", ",") or None, scope="user"
        )
        for n in nets
    )
    fields: dict[str, object] = {"enabled": True, **kw}
    return UserRecord(id=1, name=name, password_hash=phash, rules=rules, **fields)  # type: ignore[arg-type]


def test_allow_nets_scoping() -> None:
    rules = [
        NetworkRule.parse("192.0.2.0/24"),
        NetworkRule.parse("198.51.100.0/24", "imap"),
        NetworkRule.parse("203.0.113.0/24", "imap,pop3,smtp"),
        NetworkRule.parse("any", "smtp"),
        NetworkRule.parse("local"),
        NetworkRule.parse("192.0.2.0/24", "imap"),
    ]
    both = frozenset({"imap", "pop3"})
    assert allow_nets(rules, both) == (["192.0.2.0/24", "203.0.113.0/24", "local"], 3)
    assert allow_nets(rules, frozenset({"smtp"}))[0] == [
        "192.0.2.0/24",
        "203.0.113.0/24",
        "0.0.0.0/0",
        "::/0",
        "local",
    ]


def test_dovecot_passwd_file_lines_and_skips(hasher: PasswordHasher) -> None:
    users = [
        user("alice", f"{{SHA512-CRYPT}}{SHA512}", "192.0.2.0/24", "any@imap+pop3"),
        user("bare", SHA512, "2001:db8::/32"),
        user("nonet", "{PLAIN}x", "192.0.2.0/24@smtp"),
        user("off", "{PLAIN}x", "any", enabled=False),
        user("pam", None, "any", backend="pam"),
        user("nopw", None, "any"),
        user("broken", "{SHA512-CRYPT}nope", "any"),
        user("co:lon", "{PLAIN}x", "any"),
        user("#hash", "{PLAIN}x", "any"),
        user("spacey", "{PLAIN}a b", "any"),
    ]
    result = dovecot_passwd_file(
        users,
        [NetworkRule.parse("local"), NetworkRule.parse("203.0.113.0/24", "smtp")],
        ["imap", "pop3"],
        hasher,
    )
    assert result.lines == [
        f"alice:{{SHA512-CRYPT}}{SHA512}::::::allow_nets=192.0.2.0/24,0.0.0.0/0,::/0,local",
        f"bare:{{SHA512-CRYPT}}{SHA512}::::::allow_nets=2001:db8::/32,local",
        "nonet:{PLAIN}x::::::allow_nets=local",
    ]
    assert dict(result.skipped) == {
        "disabled": 1,
        "pam": 1,
        "no_password": 1,
        "bad_hash": 2,
        "bad_name": 2,
    }
    assert result.rules_left_out == 2 and result.no_network == 0
    alone = dovecot_passwd_file(users[2:3], [], ["imap"], hasher)
    assert alone.lines == [f"nonet:{{PLAIN}}x::::::allow_nets={NO_NETWORK}"]
    assert alone.no_network == 1


def test_csv_argon2_hash_needs_quotes(hasher: PasswordHasher) -> None:
    argon = hasher.hash("pw")
    assert "," in argon  # m=...,t=...,p=...
    res = parse_csv(f'name,password_hash\nok,"{argon}"\nbad,{argon}\n', hasher)
    assert res.records[0].password_hash == argon
    assert errors(res) == [
        (3, "expected 2 fields, found 4 (quote fields that contain commas, e.g. ARGON2 hashes)")
    ]


def test_dovecot_passwd_file_leaves_out_main_passwords_limited_to_other_services(
    hasher: PasswordHasher,
) -> None:
    """A passwd-file line cannot limit the main password to some services: a user whose
    main password may not log in to every service of the export is not written."""
    from dataclasses import replace

    users = [
        replace(user("smtp_only", "{PLAIN}x", "any"), main_password_services="smtp"),
        replace(user("imap_pop", "{PLAIN}x", "any"), main_password_services="imap,pop3"),
        replace(user("half", "{PLAIN}x", "any"), main_password_services="imap"),
        replace(user("typo", "{PLAIN}x", "any"), main_password_services="imap;pop3"),
        user("default", "{PLAIN}x", "any"),
    ]
    result = dovecot_passwd_file(users, [], ["imap", "pop3"], hasher)
    assert [line.split(":")[0] for line in result.lines] == ["imap_pop", "default"]
    assert dict(result.skipped) == {"app_password_required": 3}
    limited = dovecot_passwd_file(users, [], ["imap"], hasher, main_default=frozenset({"smtp"}))
    assert [line.split(":")[0] for line in limited.lines] == ["imap_pop", "half"]
