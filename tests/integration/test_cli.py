"""The `sitemail` CLI in-process (Typer's CliRunner): help, output, JSON, errors and exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.testing
from typer.testing import CliRunner, Result

from sitemail.admin.cli import app
from sitemail.admin.service import AdminService
from sitemail.directory import ObjectKind

runner = CliRunner()


def command_paths(command: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group of the CLI, as argument paths."""
    paths = [prefix]
    # Typer vendors its own click: recognise groups by their `commands`, not by class.
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        paths += command_paths(sub, (*prefix, name))
    return paths


COMMAND = typer.main.get_command(app)
ALL_COMMANDS = command_paths(COMMAND)


@pytest.fixture(autouse=True)
def _build_cli_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Typer rebuilds the click command on every invoke (~50 ms of annotation work): reuse one."""
    monkeypatch.setattr(typer.testing, "_get_command", lambda _app: COMMAND)


def run(*args: str | Path, stdin: str | None = None) -> Result:
    return runner.invoke(app, [str(a) for a in args], input=stdin)


def ok(*args: str | Path, stdin: str | None = None) -> Result:
    result = run(*args, stdin=stdin)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def as_json(*args: str | Path) -> Any:
    return json.loads(ok(*args, "--json").stdout)


def assert_error(result: Result, exit_code: int, fragment: str) -> None:
    """One `error:` line on stderr (after the context line) with the sysexits code, nothing
    on stdout, no traceback."""
    assert result.exit_code == exit_code, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if not line.startswith("sitemail: ")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert fragment in lines[0]
    assert result.stdout == ""
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


INIT = {
    "org": "ExchangeORG",
    "site": "SiteA",
    "server": "ServerA",
    "domain": "sitea.example.com",
    "listen": ["127.0.0.1"],
}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Data dirs made once per module (init costs ~100 ms); each test works on a copy."""
    base = tmp_path_factory.mktemp("prepared")
    AdminService.init(base / "empty", **INIT).close()  # type: ignore[arg-type]
    site = AdminService.init(base / "populated", **INIT)  # type: ignore[arg-type]
    try:
        site.add_recipient(
            ObjectKind.MAILBOX, "jsmith", display_name="John Smith", given_name="John",
            surname="Smith", password="hunter2-secret",
        )  # fmt: skip
        site.add_recipient(ObjectKind.MAILBOX, "mjones", display_name="Mary Jones")
        site.add_recipient(
            ObjectKind.CONTACT, "partner", display_name="Partner", target="p@partner.example"
        )
        site.add_recipient(
            ObjectKind.GROUP, "staff", display_name="Staff", members=["jsmith", "mjones"]
        )
    finally:
        site.close()
    return {"empty": base / "empty", "populated": base / "populated"}


@pytest.fixture
def data_dir(prepared: dict[str, Path], tmp_path: Path) -> Path:
    """A fresh SiteA (ExchangeORG, ServerA, %m@sitea.example.com) with no recipients."""
    return Path(shutil.copytree(prepared["empty"], tmp_path / "SiteA"))


@pytest.fixture
def populated(prepared: dict[str, Path], tmp_path: Path) -> Path:
    """SiteA with jsmith (with a password), mjones, a contact `partner` and a group `staff`."""
    return Path(shutil.copytree(prepared["populated"], tmp_path / "SiteA"))


# -- help ----------------------------------------------------------------------------------------


def test_cli_has_the_commands_of_issue_2() -> None:
    """init, mailbox/contact/group add|list|show|set|remove, addressing, directory exist."""
    names = {" ".join(p) for p in ALL_COMMANDS}
    for kind in ("mailbox", "contact", "group"):
        for verb in ("add", "list", "show", "set", "remove"):
            assert f"{kind} {verb}" in names
    assert {"init", "addressing show", "addressing set", "directory export"} <= names
    assert "directory import" in names


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p) or "sitemail")
def test_cli_every_command_has_help(path: tuple[str, ...]) -> None:
    """`--help` works on every command and group, and describes it."""
    result = ok(*path, "--help")
    assert "Usage:" in result.stdout
    assert len(result.stdout.strip().splitlines()) > 3


# -- init and the data dir --------------------------------------------------------------------------


def test_cli_init_reports_the_new_site(tmp_path: Path) -> None:
    """`init` says what it created, including the site's addressing."""
    result = ok(
        "init", "-D", tmp_path / "d", "--org", "ExchangeORG", "--site", "SiteA", "--server",
        "ServerA", "--domain", "SiteA.Example.com", "--listen", "127.10.10.10",
    )  # fmt: skip
    assert "organisation ExchangeORG, site SiteA, server ServerA" in result.stdout
    assert "%m@sitea.example.com" in result.stdout


def test_cli_init_on_existing_data_dir_is_conflict(data_dir: Path) -> None:
    """A second `init` of one data dir exits 73."""
    result = run(
        "init", "-D", data_dir, "--org", "O", "--site", "S", "--server", "S", "--domain",
        "s.example", "--listen", "127.0.0.1",
    )  # fmt: skip
    assert_error(result, 73, "already a sitemail data dir")


def test_cli_init_bad_domain_is_invalid_address(tmp_path: Path) -> None:
    """A malformed domain at init exits 65."""
    result = run(
        "init", "-D", tmp_path / "d", "--org", "O", "--site", "S", "--server", "S",
        "--domain", "bad_domain", "--listen", "127.0.0.1",
    )  # fmt: skip
    assert_error(result, 65, "bad_domain")


def test_cli_remembers_the_last_initialised_data_dir(tmp_path: Path) -> None:
    """Without --data-dir, commands use the data dir of the last `init`."""
    data_dir = tmp_path / "d"
    ok(
        "init", "-D", data_dir, "--org", "ExchangeORG", "--site", "SiteA", "--server",
        "ServerA", "--domain", "sitea.example.com", "--listen", "127.0.0.1",
    )  # fmt: skip
    ok("mailbox", "add", "jsmith", "--name", "J")
    assert [r["alias"] for r in as_json("mailbox", "list", "-D", data_dir)] == ["jsmith"]


def test_cli_data_dir_from_environment(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$SITEMAIL_DATA_DIR names the data dir when --data-dir is not given."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "elsewhere"))  # forget the last init
    monkeypatch.setenv("SITEMAIL_DATA_DIR", str(data_dir))
    assert as_json("addressing", "show")["smtp"] == "%m@sitea.example.com"


def test_cli_no_data_dir_at_all_is_config_error(tmp_path: Path) -> None:
    """No option, no environment, no earlier init: exit 78 with a hint."""
    assert_error(run("mailbox", "list"), 78, "no data dir given")


def test_cli_missing_data_dir_is_config_error(tmp_path: Path) -> None:
    """A --data-dir that is not a data dir exits 78 (EX_CONFIG)."""
    assert_error(run("mailbox", "list", "-D", tmp_path / "nowhere"), 78, "not found")


# -- recipients -----------------------------------------------------------------------------------


def test_cli_mailbox_add_prints_the_new_mailbox(data_dir: Path) -> None:
    """`mailbox add` shows the mailbox with its generated address."""
    result = ok("mailbox", "add", "jsmith", "--name", "John Smith", "-D", data_dir)
    assert "jsmith@sitea.example.com" in result.stdout


def test_cli_mailbox_add_warns_when_it_numbers_the_address(data_dir: Path) -> None:
    """`mailbox add` says on stderr when the template's address was taken (user2 -> user22)."""
    ok("mailbox", "add", "other", "--name", "Other", "--address", "user2@sitea.example.com",
       "-D", data_dir)  # fmt: skip
    result = ok("mailbox", "add", "user2", "--name", "User Two", "-D", data_dir)
    assert "user22@sitea.example.com" in result.stdout
    assert "warning: user2@sitea.example.com is held by other (SiteA)" in result.stderr
    assert "user22@sitea.example.com" in result.stderr
    quiet = ok("mailbox", "add", "user3", "--name", "User Three", "-D", data_dir)
    assert "warning" not in quiet.stderr


def test_cli_addressing_set_warns_of_each_renamed_recipient(populated: Path) -> None:
    """`addressing set --update-recipients` warns on stderr of each address it numbered."""
    ok("mailbox", "set", "mjones", "--add-address", "JSmith@example.com", "-D", populated)
    result = ok("addressing", "set", "smtp", "%1g%s@example.com", "--update-recipients",
                "-D", populated)  # fmt: skip
    assert "warning: JSmith@example.com is held by mjones (SiteA)" in result.stderr
    assert "jsmith was given JSmith2@example.com" in result.stderr


def test_cli_mailbox_show_json(populated: Path) -> None:
    """`mailbox show --json` is one JSON object with addresses, names and no secret."""
    data = as_json("mailbox", "show", "jsmith", "-D", populated)
    assert data["alias"] == "jsmith"
    assert data["kind"] == "mailbox"
    assert data["primary_address"] == "jsmith@sitea.example.com"
    assert data["proxies"] == ["SMTP:jsmith@sitea.example.com"]
    assert (data["given_name"], data["surname"]) == ("John", "Smith")
    assert data["read_only"] is False
    assert "hunter2" not in json.dumps(data)
    assert "scrypt" not in json.dumps(data)


def test_cli_list_json_per_kind(populated: Path) -> None:
    """`list --json` returns a JSON array of that kind only."""
    assert [r["alias"] for r in as_json("mailbox", "list", "-D", populated)] == ["jsmith", "mjones"]
    (contact,) = as_json("contact", "list", "-D", populated)
    assert contact["target"] == "p@partner.example"
    (group,) = as_json("group", "list", "-D", populated)
    assert group["members"] == ["jsmith", "mjones"]


def test_cli_list_table(populated: Path) -> None:
    """Without --json, list prints a table and a count."""
    result = ok("mailbox", "list", "-D", populated)
    assert "jsmith@sitea.example.com" in result.stdout
    assert "2 recipient(s)" in result.stdout


def test_cli_show_finds_by_address(populated: Path) -> None:
    """`show` accepts any of the recipient's addresses, in any case."""
    assert as_json("group", "show", "STAFF@sitea.example.com", "-D", populated)["alias"] == "staff"


def test_cli_mailbox_set_changes_addresses(populated: Path) -> None:
    """`mailbox set` adds a secondary and switches the primary."""
    data = json.loads(
        ok(
            "mailbox", "set", "jsmith", "--add-address", "john@legacy.example", "--primary",
            "john@legacy.example", "--name", "Johnny", "-D", populated, "--json",
        ).stdout
    )  # fmt: skip
    assert data["primary_address"] == "john@legacy.example"
    assert data["display_name"] == "Johnny"
    assert "smtp:jsmith@sitea.example.com" in data["proxies"]


def test_cli_group_set_changes_members(populated: Path) -> None:
    """`group set --add-member/--remove-member` edits the member list."""
    data = json.loads(
        ok("group", "set", "staff", "--remove-member", "jsmith", "--add-member", "partner",
           "-D", populated, "--json").stdout
    )  # fmt: skip
    assert data["members"] == ["mjones", "partner"]


def test_cli_contact_set_changes_target(populated: Path) -> None:
    """`contact set --target` changes where mail is forwarded."""
    data = json.loads(
        ok("contact", "set", "partner", "--target", "new@partner.example", "-D", populated,
           "--json").stdout
    )  # fmt: skip
    assert data["target"] == "new@partner.example"


def test_cli_remove_reports_the_tombstone(populated: Path) -> None:
    """`remove` deletes the recipient and says which USN the tombstone took."""
    result = ok("mailbox", "remove", "mjones", "-D", populated)
    assert "removed mailbox mjones (tombstone usn" in result.stdout
    assert [r["alias"] for r in as_json("mailbox", "list", "-D", populated)] == ["jsmith"]
    assert as_json("group", "show", "staff", "-D", populated)["members"] == ["jsmith"]


def test_cli_password_from_stdin(data_dir: Path) -> None:
    """`--password-file -` reads the password from standard input; it is never printed."""
    result = ok(
        "mailbox", "add", "jsmith", "--name", "J", "--password-file", "-", "-D", data_dir,
        stdin="s3cret-from-stdin\n",
    )  # fmt: skip
    assert "s3cret" not in result.output


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("mailbox", "show", "nobody"), "no recipient 'nobody'"),
        (("mailbox", "remove", "nobody"), "no recipient 'nobody'"),
        (("mailbox", "set", "nobody@sitea.example.com", "--name", "X"), "nobody@sitea"),
        (("contact", "show", "jsmith"), "is a mailbox, not a contact"),  # wrong kind
        (("group", "set", "staff", "--add-member", "nobody"), "no recipient 'nobody'"),
        (("group", "add", "sales", "--name", "Sales", "--member", "ghost"), "'ghost'"),
        (("mailbox", "set", "jsmith", "--remove-address", "x@sitea.example.com"), "no address"),
    ],
)
def test_cli_unknown_object_exits_66(populated: Path, args: tuple[str, ...], fragment: str) -> None:
    """Naming a recipient (or an address of it) that does not exist exits 66 (EX_NOINPUT)."""
    assert_error(run(*args, "-D", populated), 66, fragment)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("contact", "add", "c2", "--name", "C", "--target", "not an address"), "not an address"),
        (("contact", "add", "c2", "--name", "C", "--target", "x@bad_domain"), "bad_domain"),
        (("mailbox", "add", "m2", "--name", "M", "--address", "m2@"), "domain"),
        (("mailbox", "set", "jsmith", "--add-address", "a b@example.com"), "a b"),
        (("contact", "set", "partner", "--target", "@x.example"), "@x.example"),
    ],
)
def test_cli_invalid_address_exits_65(
    populated: Path, args: tuple[str, ...], fragment: str
) -> None:
    """A malformed address exits 65 (EX_DATAERR) and quotes it."""
    assert_error(run(*args, "-D", populated), 65, fragment)


def test_cli_invalid_address_from_undecodable_argument_exits_65(populated: Path) -> None:
    """An argument that was not valid UTF-8 (a lone surrogate in argv) is refused, not a crash."""
    result = run("contact", "add", "c2", "--name", "C", "--target", "\udcff@x.example", "-D",
                 populated)  # fmt: skip
    assert_error(result, 65, "")


def test_cli_duplicate_alias_exits_73(populated: Path) -> None:
    """An alias already used in the site (in any case, by any kind) exits 73 (EX_CANTCREAT)."""
    assert_error(run("group", "add", "JSmith", "--name", "G", "-D", populated), 73, "JSmith")


def test_cli_duplicate_address_exits_73(populated: Path) -> None:
    """An address another recipient holds exits 73, naming the address."""
    result = run("mailbox", "set", "mjones", "--add-address", "JSMITH@sitea.example.com", "-D",
                 populated)  # fmt: skip
    assert_error(result, 73, "jsmith@sitea.example.com")


@pytest.mark.parametrize("alias", ["john smith", "j@smith", "x" * 65])
def test_cli_invalid_alias_exits_65(data_dir: Path, alias: str) -> None:
    """An alias with forbidden characters or too long exits 65."""
    assert_error(run("mailbox", "add", alias, "--name", "J", "-D", data_dir), 65, "alias")


def test_cli_primary_address_cannot_be_removed(populated: Path) -> None:
    """Removing the primary address exits 65 and says what to do instead."""
    result = run("mailbox", "set", "jsmith", "--remove-address", "jsmith@sitea.example.com",
                 "-D", populated)  # fmt: skip
    assert_error(result, 65, "set another primary first")


@pytest.mark.parametrize("template", ["%q@example.com", "example.com", "%m@a@b.example", "%m@"])
def test_cli_bad_template_exits_65(populated: Path, template: str) -> None:
    """A malformed SMTP template exits 65 and nothing changes."""
    assert_error(run("addressing", "set", "smtp", template, "-D", populated), 65, "template")
    assert as_json("addressing", "show", "-D", populated)["smtp"] == "%m@sitea.example.com"


def test_cli_unknown_address_type_exits_65(populated: Path) -> None:
    """Only the smtp address type exists."""
    assert_error(run("addressing", "set", "x400", "@example.com", "-D", populated), 65, "x400")


def test_cli_drop_old_without_update_recipients_exits_65(populated: Path) -> None:
    """--drop-old alone is refused: it only means something while re-addressing."""
    result = run("addressing", "set", "smtp", "@example.com", "--drop-old", "-D", populated)
    assert_error(result, 65, "--drop-old only makes sense with --update-recipients")
    assert as_json("addressing", "show", "-D", populated)["smtp"] == "%m@sitea.example.com"


def test_cli_password_file_missing_exits_66(data_dir: Path, tmp_path: Path) -> None:
    """A password file that cannot be read exits 66 (EX_NOINPUT); no mailbox is created."""
    result = run("mailbox", "add", "jsmith", "--name", "J", "--password-file",
                 tmp_path / "missing.txt", "-D", data_dir)  # fmt: skip
    assert_error(result, 66, "missing.txt")
    assert as_json("mailbox", "list", "-D", data_dir) == []


def test_cli_password_file_empty_exits_65(data_dir: Path, tmp_path: Path) -> None:
    """An empty password file exits 65."""
    pw = tmp_path / "empty.txt"
    pw.write_text("", encoding="utf-8")
    result = run("mailbox", "add", "jsmith", "--name", "J", "--password-file", pw, "-D", data_dir)
    assert_error(result, 65, "empty")


def test_cli_replica_of_another_site_is_read_only(populated: Path, tmp_path: Path) -> None:
    """Changing an object owned by another site exits 77 (EX_NOPERM)."""
    record = {
        "guid": "guid-b", "site": "SiteB", "kind": "mailbox", "name": "bsmith",
        "display_name": "B", "attrs": {"proxies": ["SMTP:bsmith@siteb.example.com"]},
        "usn_changed": 4, "version": 1, "is_deleted": False,
    }  # fmt: skip
    source = tmp_path / "replica.jsonl"
    source.write_text(json.dumps(record) + "\n", encoding="utf-8")
    ok("directory", "import", source, "-D", populated)
    assert as_json("mailbox", "show", "bsmith", "-D", populated)["read_only"] is True
    assert_error(run("mailbox", "remove", "bsmith", "-D", populated), 77, "SiteB")


# -- addressing ----------------------------------------------------------------------------------


def test_cli_addressing_show(populated: Path) -> None:
    """`addressing show` prints the SMTP template (and JSON with the site)."""
    assert ok("addressing", "show", "-D", populated).stdout.strip() == "SMTP  %m@sitea.example.com"
    assert as_json("addressing", "show", "-D", populated) == {
        "site": "SiteA",
        "smtp": "%m@sitea.example.com",
    }


def test_cli_addressing_dry_run_prints_the_diff(populated: Path) -> None:
    """`--dry-run` prints old -> new for every recipient and changes nothing."""
    result = ok("addressing", "set", "smtp", "@example.com", "--update-recipients", "--dry-run",
                "-D", populated)  # fmt: skip
    for alias in ("jsmith", "mjones", "partner", "staff"):
        assert f"{alias}: {alias}@sitea.example.com -> {alias}@example.com" in result.stdout
    assert "dry run: 4 recipient(s) would change; nothing was changed" in result.stdout
    assert as_json("addressing", "show", "-D", populated)["smtp"] == "%m@sitea.example.com"
    shown = as_json("mailbox", "show", "jsmith", "-D", populated)
    assert shown["primary_address"] == "jsmith@sitea.example.com"


def test_cli_addressing_json_reports_changes_and_collisions(populated: Path) -> None:
    """`addressing set --json` lists each change and each collision with its holder."""
    ok("mailbox", "set", "mjones", "--add-address", "JSmith@example.com", "-D", populated)
    data = as_json("addressing", "set", "smtp", "%1g%s@example.com", "--update-recipients",
                   "-D", populated)  # fmt: skip
    assert data["old_template"] == "%m@sitea.example.com"
    assert data["new_template"] == "%1g%s@example.com"
    assert data["dry_run"] is False
    assert data["updated"] == 4
    changes = {c["alias"]: (c["old"], c["new"]) for c in data["changes"]}
    assert changes["jsmith"] == ("jsmith@sitea.example.com", "JSmith2@example.com")
    assert data["collisions"] == [
        {
            "alias": "jsmith",
            "wanted": "JSmith@example.com",
            "given": "JSmith2@example.com",
            "held_by": "mjones (SiteA)",
        }
    ]


def test_cli_addressing_update_keeps_old_primary(populated: Path) -> None:
    """After `--update-recipients` the old address is still a secondary of the recipient."""
    result = ok("addressing", "set", "smtp", "@example.com", "--update-recipients", "-D",
                populated)  # fmt: skip
    assert "4 recipient(s) re-addressed" in result.stdout
    shown = as_json("mailbox", "show", "jsmith", "-D", populated)
    assert shown["primary_address"] == "jsmith@example.com"
    assert "smtp:jsmith@sitea.example.com" in shown["proxies"]


def test_cli_addressing_drop_old(populated: Path) -> None:
    """`--drop-old` removes the old primary."""
    ok("addressing", "set", "smtp", "@example.com", "--update-recipients", "--drop-old", "-D",
       populated)  # fmt: skip
    assert as_json("mailbox", "show", "jsmith", "-D", populated)["addresses"] == [
        "jsmith@example.com"
    ]


def test_cli_addressing_without_update_touches_only_new_recipients(populated: Path) -> None:
    """Without --update-recipients the template changes and existing addresses stay."""
    result = ok("addressing", "set", "smtp", "@example.com", "-D", populated)
    assert "only new recipients get the new template" in result.stdout
    assert as_json("mailbox", "show", "jsmith", "-D", populated)["addresses"] == [
        "jsmith@sitea.example.com"
    ]
    added = json.loads(ok("mailbox", "add", "new", "--name", "N", "-D", populated, "--json").stdout)
    assert added["primary_address"] == "new@example.com"


# -- export / import -----------------------------------------------------------------------------


def test_cli_export_import_is_idempotent(populated: Path, tmp_path: Path) -> None:
    """`directory export` then `directory import` of the same file changes nothing."""
    exported = ok("directory", "export", "-D", populated).stdout
    lines = exported.splitlines()
    assert all(isinstance(json.loads(line), dict) for line in lines)
    dump = tmp_path / "dir.jsonl"
    dump.write_text(exported, encoding="utf-8")
    result = ok("directory", "import", dump, "-D", populated)
    assert result.stdout.strip() == f"created 0, updated 0, unchanged {len(lines)}"


def test_cli_export_to_file_and_import_from_stdin(populated: Path, tmp_path: Path) -> None:
    """`export -o FILE` writes the same lines; `import -` reads standard input."""
    dump = tmp_path / "dir.jsonl"
    result = ok("directory", "export", "-o", dump, "-D", populated)
    assert "exported 7 object(s)" in result.stderr
    text = dump.read_text(encoding="utf-8")
    assert text == ok("directory", "export", "-D", populated).stdout
    assert "unchanged 7" in ok("directory", "import", "-", "-D", populated, stdin=text).stdout


def test_cli_import_bad_line_exits_65_with_line_number(populated: Path, tmp_path: Path) -> None:
    """A malformed line aborts the import with its line number; nothing is imported."""
    source = tmp_path / "bad.jsonl"
    good = ok("directory", "export", "-D", populated).stdout.splitlines()[0]
    source.write_text(f"{good}\n{{not json\n", encoding="utf-8")
    assert_error(run("directory", "import", source, "-D", populated), 65, "line 2")


def test_cli_import_missing_file_exits_66(populated: Path, tmp_path: Path) -> None:
    """An import file that cannot be read exits 66 (EX_NOINPUT)."""
    result = run("directory", "import", tmp_path / "missing.jsonl", "-D", populated)
    assert_error(result, 66, "missing.jsonl")
