"""The bad-input corpus of the command line and the results database (issue 11).

Every case is bad input given to ``kdbench.cli.main`` in-process: the answer must be exactly one
line ``kdbench: error: ...`` on stderr naming what is wrong, the expected exit code, no
traceback, Ray not started, and nothing written: every file under the case's folder (a
database given with ``--db`` included) byte-identical afterwards, nothing created there.

A case is ``(id, setup, argv, words, code)``: ``setup(tmp)`` lays out the input files in the
case's folder, ``argv`` may name them with ``{tmp}`` (that folder), ``{suite}`` (the shipped
tiny suite) and ``{board}`` (a copy of the leaderboard test database); ``words`` must appear in
the line.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from kdbench import store
from kdbench.cli import main

from .. import appdata

SUITE = Path(__file__).resolve().parents[2] / "leaderboards" / "tiny.toml"


# --------------------------------------------------------------------------- inputs


def nothing(tmp: Path) -> None:
    """No files: the case is in its arguments."""


def a_file(tmp: Path) -> None:
    (tmp / "afile").write_text("not a folder\n")


def binary_files(tmp: Path) -> None:
    (tmp / "bin.toml").write_bytes(bytes(range(256)) * 4)


def prices_folder(tmp: Path) -> None:
    (tmp / "prices").mkdir()


def kdbench_db(tmp: Path) -> Path:
    """An empty kdbench database (schema only), as `kdbench run` leaves it at first."""
    path = tmp / "k.duckdb"
    store.connect(path).close()
    return path


def _sql(path: Path, *statements: str) -> None:
    con = duckdb.connect(str(path))
    for sql in statements:
        con.execute(sql)
    con.close()


def foreign_db(tmp: Path) -> None:
    _sql(
        tmp / "db.duckdb",
        "CREATE TABLE orders (id INTEGER, total DOUBLE)",
        "INSERT INTO orders VALUES (1, 2.5)",
    )


def foreign_meta(tmp: Path) -> None:
    """Another program's ``meta`` table: other columns."""
    _sql(
        tmp / "db.duckdb",
        "CREATE TABLE meta (name VARCHAR, size INTEGER)",
        "INSERT INTO meta VALUES ('x', 1)",
    )


def foreign_meta_kv(tmp: Path) -> None:
    """A ``meta (key, value)`` table without kdbench's schema_version."""
    _sql(
        tmp / "db.duckdb",
        "CREATE TABLE meta (key VARCHAR, value VARCHAR)",
        "INSERT INTO meta VALUES ('owner', 'dbt')",
    )


def _version(value: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        path = kdbench_db(tmp)
        _sql(path, f"UPDATE meta SET value = '{value}' WHERE key = 'schema_version'")
        path.rename(tmp / "db.duckdb")

    setup.__name__ = f"version_{value}"
    return setup


def runs_without_columns(tmp: Path) -> None:
    """kdbench's meta, but a ``runs`` table that is not kdbench's."""
    _sql(
        tmp / "db.duckdb",
        "CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)",
        f"INSERT INTO meta VALUES ('schema_version', '{store.SCHEMA_VERSION}')",
        "CREATE TABLE runs (id INTEGER)",
    )


def truncated_db(tmp: Path) -> None:
    path = kdbench_db(tmp)
    data = path.read_bytes()
    path.unlink()
    (tmp / "db.duckdb").write_bytes(data[: len(data) // 2])


def empty_file(tmp: Path) -> None:
    (tmp / "db.duckdb").write_bytes(b"")


def text_file(tmp: Path) -> None:
    (tmp / "db.duckdb").write_text("run_id,score\nr1,0.5\n")


def db_folder(tmp: Path) -> None:
    (tmp / "db.duckdb").mkdir()


DAMAGED = [
    foreign_db,
    foreign_meta,
    foreign_meta_kv,
    _version("two"),
    _version("2.0"),
    _version("0"),
    _version("99"),
    runs_without_columns,
    truncated_db,
    empty_file,
    text_file,
    db_folder,
]
DAMAGED_WORDS = {
    "foreign_db": "not a kdbench results database",
    "foreign_meta": "not a kdbench results database",
    "foreign_meta_kv": "schema_version",
    "version_two": "'two', not an integer",
    "version_2.0": "'2.0', not an integer",
    "version_0": "unknown schema version 0",
    "version_99": "schema version 99",
    "runs_without_columns": "`runs` table lacks the columns",
    "truncated_db": "results database",
    "empty_file": "not a valid DuckDB database",
    "text_file": "not a valid DuckDB database",
    "db_folder": "is a folder",
}

DB = "{tmp}/db.duckdb"
NAME_300 = "a" * 300
CASES: list[tuple[str, Callable[[Path], None], list[str], str, int]] = [
    # suite files
    ("run-binary-suite", binary_files, ["run", "{tmp}/bin.toml", "--db", DB], "not a text file", 2),
    ("run-suite-folder", nothing, ["run", "{tmp}", "--db", DB], "no such file", 2),
    ("run-missing-suite", nothing, ["run", "{tmp}/nope.toml", "--db", DB], "no such file", 2),
    (
        "run-binary-suite-dry",
        binary_files,
        ["run", "{tmp}/bin.toml", "--dry-run"],
        "not a text file",
        2,
    ),
    # Ray addresses: the form before anything, the cluster within seconds, before Ray starts
    (
        "address-not-a-host",
        nothing,
        ["run", "{suite}", "--db", DB, "--address", "not a host!!"],
        "not a Ray address",
        2,
    ),
    (
        "address-dry-run",
        nothing,
        ["run", "{suite}", "--dry-run", "--address", "not a host!!"],
        "not a Ray address",
        2,
    ),
    (
        "address-no-port",
        nothing,
        ["run", "{suite}", "--db", DB, "--address", "10.0.0.5"],
        "not a Ray address",
        2,
    ),
    (
        "address-port-0",
        nothing,
        ["run", "{suite}", "--db", DB, "--address", "host:0"],
        "not a Ray address",
        2,
    ),
    (
        "address-port-big",
        nothing,
        ["run", "{suite}", "--db", DB, "--address", "host:99999"],
        "not a Ray address",
        2,
    ),
    (
        "address-no-host",
        nothing,
        ["run", "{suite}", "--db", DB, "--address", ":6379"],
        "not a Ray address",
        2,
    ),
    (
        "address-newline",
        nothing,
        ["run", "{suite}", "--db", DB, "--address", "h:1\nx"],
        "not a Ray address",
        2,
    ),
    (
        "address-ray-empty",
        nothing,
        ["run", "{suite}", "--db", DB, "--address", "ray://"],
        "not a Ray address",
        2,
    ),
    (
        "address-long",
        nothing,
        ["run", "{suite}", "--db", DB, "--address", NAME_300 + ":1"],
        "not a Ray address",
        2,
    ),
    (
        "address-unreachable",
        nothing,
        ["run", "{suite}", "--db", DB, "--address", "127.0.0.1:1"],
        "no Ray cluster reachable",
        2,
    ),
    (
        "address-unreachable-client",
        nothing,
        ["run", "{suite}", "--db", DB, "--address", "ray://127.0.0.1:1"],
        "no Ray cluster reachable",
        2,
    ),
    # --db of `kdbench run`, checked before Ray starts
    (
        "run-db-parent-file",
        a_file,
        ["run", "{suite}", "--db", "{tmp}/afile/x.duckdb"],
        "is a file, not a folder",
        2,
    ),
    (
        "run-db-grandparent-file",
        a_file,
        ["run", "{suite}", "--db", "{tmp}/afile/a/b/x.duckdb"],
        "is a file, not a folder",
        2,
    ),
    # --cache of `kdbench run`: the root and its stage folders, checked before Ray starts
    (
        "run-cache-a-file",
        a_file,
        ["run", "{suite}", "--db", DB, "--cache", "{tmp}/afile"],
        "is a file, not a folder",
        2,
    ),
    (
        "run-cache-under-a-file",
        a_file,
        ["run", "{suite}", "--db", DB, "--cache", "{tmp}/afile/cache"],
        "is a file, not a folder",
        2,
    ),
    *[
        (f"run-db-{s.__name__}", s, ["run", "{suite}", "--db", DB], DAMAGED_WORDS[s.__name__], 2)
        for s in DAMAGED
    ],
    *[
        (
            f"leaderboard-db-{s.__name__}",
            s,
            ["leaderboard", "--db", DB],
            DAMAGED_WORDS[s.__name__],
            2,
        )
        for s in DAMAGED
    ],
    ("app-db-foreign", foreign_db, ["app", "--db", DB], "not a kdbench results database", 2),
    ("app-db-version", _version("two"), ["app", "--db", DB], "not an integer", 2),
    ("app-port-0", nothing, ["app", "--db", DB, "--port", "0"], "--port 0", 2),
    ("app-port-text", nothing, ["app", "--db", DB, "--port", "http"], "invalid int value", 2),
    # leaderboard filters that match nothing say what exists
    (
        "leaderboard-suite-nope",
        nothing,
        ["leaderboard", "--db", "{board}", "--suite", "NOPE"],
        "no such suite; stored: ",
        2,
    ),
    (
        "leaderboard-suite-empty",
        nothing,
        ["leaderboard", "--db", "{board}", "--suite", ""],
        "no such suite",
        2,
    ),
    (
        "leaderboard-method-nope",
        nothing,
        ["leaderboard", "--db", "{board}", "--method", "nope"],
        "no such method in suite 5a17e000aaaa1111; stored: fkl, kd, seqkd, sft",
        2,
    ),
    (
        "leaderboard-method-one-bad",
        nothing,
        ["leaderboard", "--db", "{board}", "--method", "kd", "--method", "KD"],
        "--method 'KD'",
        2,
    ),
    (
        "leaderboard-student-nope",
        nothing,
        ["leaderboard", "--db", "{board}", "--student", "nope"],
        "no such student in suite 5a17e000aaaa1111; stored: student-0.1M",
        2,
    ),
    (
        "leaderboard-family-nope",
        nothing,
        ["leaderboard", "--db", "{board}", "--family", "nope"],
        "no such family in suite 5a17e000aaaa1111; stored: baseline",
        2,
    ),
    (
        "leaderboard-filters-apart",
        nothing,
        ["leaderboard", "--db", "{board}", "--method", "kd", "--family", "baseline"],
        "matches these filters together",
        2,
    ),
    (
        "leaderboard-other-suite-method",
        nothing,
        ["leaderboard", "--db", "{board}", "--suite", appdata.OTHER, "--method", "nope"],
        "no such method in suite 0bbe7000bbbb2222",
        2,
    ),
    (
        "leaderboard-empty-db-filter",
        kdbench_db,
        ["leaderboard", "--db", "{tmp}/k.duckdb", "--method", "kd"],
        "has no runs yet",
        2,
    ),
    (
        "leaderboard-empty-db-suite",
        kdbench_db,
        ["leaderboard", "--db", "{tmp}/k.duckdb", "--suite", "abc"],
        "holds no suite yet",
        2,
    ),
    ("leaderboard-missing-db", nothing, ["leaderboard", "--db", DB], "no results database", 2),
    # price tables
    (
        "prices-folder",
        prices_folder,
        ["leaderboard", "--db", "{board}", "--prices", "{tmp}/prices"],
        "a folder, not a price table",
        2,
    ),
    (
        "prices-binary",
        binary_files,
        ["leaderboard", "--db", "{board}", "--prices", "{tmp}/bin.toml"],
        "not a text file",
        2,
    ),
    (
        "prices-missing",
        nothing,
        ["leaderboard", "--db", "{board}", "--prices", "{tmp}/p.toml"],
        "no such price table",
        2,
    ),
    # plugin new: names and folders
    (
        "plugin-dir-file",
        a_file,
        ["plugin", "new", "mine", "--dir", "{tmp}/afile"],
        "is a file, not a folder",
        2,
    ),
    (
        "plugin-dir-under-file",
        a_file,
        ["plugin", "new", "mine", "--dir", "{tmp}/afile/sub"],
        "is a file, not a folder",
        2,
    ),
    (
        "plugin-name-300",
        nothing,
        ["plugin", "new", NAME_300, "--dir", "{tmp}"],
        "(300 characters)",
        2,
    ),
    (
        "plugin-name-41",
        nothing,
        ["plugin", "new", "a" * 41, "--dir", "{tmp}"],
        "1 to 40 lower-case",
        2,
    ),
    (
        "plugin-name-slash",
        nothing,
        ["plugin", "new", "../evil", "--dir", "{tmp}"],
        "plugin name '../evil'",
        2,
    ),
    (
        "plugin-name-newline",
        nothing,
        ["plugin", "new", "a\nb", "--dir", "{tmp}"],
        "plugin name 'a\\nb'",
        2,
    ),
    ("plugin-name-nul", nothing, ["plugin", "new", "a\x00b", "--dir", "{tmp}"], "plugin name", 2),
    (
        "plugin-name-keyword",
        nothing,
        ["plugin", "new", "class", "--dir", "{tmp}"],
        "not a Python keyword",
        2,
    ),
    (
        "plugin-name-upper",
        nothing,
        ["plugin", "new", "My-KD", "--dir", "{tmp}"],
        "plugin name 'My-KD'",
        2,
    ),
    ("plugin-check-unknown", nothing, ["plugin", "check", NAME_300], "unknown method", 2),
    # the command line itself
    ("no-command", nothing, [], "required", 2),
    ("unknown-command", nothing, ["bogus"], "invalid choice", 2),
    ("run-no-suite", nothing, ["run"], "required: suite", 2),
    ("leaderboard-unknown-flag", nothing, ["leaderboard", "--nope"], "unrecognized arguments", 2),
]


# --------------------------------------------------------------------------- the test


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` with its content's hash (folders as ``<dir>``)."""
    return {
        str(p.relative_to(folder)): "<dir>"
        if p.is_dir()
        else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
    }


@pytest.fixture(scope="module")
def board_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return appdata.template(tmp_path_factory)


@pytest.mark.parametrize(
    ("setup", "argv", "words", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_cli_input_is_one_line_and_writes_nothing(
    setup: Callable[[Path], None],
    argv: list[str],
    words: str,
    code: int,
    tmp_path: Path,
    board_template: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    case = tmp_path / "case"
    case.mkdir()
    board = tmp_path / "board.duckdb"
    shutil.copyfile(board_template, board)
    setup(case)
    before = snapshot(case)
    board_hash = hashlib.sha256(board.read_bytes()).hexdigest()
    args = [a.format(tmp=case, suite=SUITE, board=board) for a in argv]
    try:
        got = main(args)
    except SystemExit as exit_:  # argparse's own errors
        got = exit_.code
    err = capsys.readouterr().err
    assert got == code, err
    assert err.startswith("kdbench: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert words in err, err
    assert "Traceback" not in err
    assert snapshot(case) == before  # nothing written, nothing created, nothing changed
    assert hashlib.sha256(board.read_bytes()).hexdigest() == board_hash
    assert not ray.is_initialized()


def test_ray_address_from_the_environment_is_checked(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "not a host!!")
    assert main(["run", str(SUITE), "--db", str(tmp_path / "db.duckdb")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "$RAY_ADDRESS 'not a host!!': not a Ray address" in err
    assert not list(tmp_path.iterdir())


def test_internal_error_is_one_line_naming_its_traceback_file(capsys, monkeypatch) -> None:
    """An unexpected exception: one line with its type and where the full traceback is."""
    import kdbench.cli

    def broken(args: object) -> int:
        raise RuntimeError("something\nunexpected")

    monkeypatch.setattr(kdbench.cli, "cmd_methods", broken)
    assert main(["methods"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "kdbench: error: internal error RuntimeError: something;" in err
    where = Path(err.rsplit("full traceback in ", 1)[1].split(" (please report it)")[0])
    text = where.read_text()
    assert "Traceback (most recent call last)" in text and "RuntimeError" in text
    where.unlink()


def test_interrupt_keeps_its_message(capsys, monkeypatch) -> None:
    import kdbench.cli

    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(kdbench.cli, "cmd_methods", interrupted)
    assert main(["methods"]) == 130
    assert "interrupted; finished runs are stored" in capsys.readouterr().err


def test_filters_that_match_still_print_the_board(
    board_template: Path, tmp_path: Path, capsys
) -> None:
    board = tmp_path / "board.duckdb"
    shutil.copyfile(board_template, board)
    assert (
        main(["leaderboard", "--db", str(board), "--suite", appdata.SUITE[:8], "--method", "kd"])
        == 0
    )
    out = capsys.readouterr().out
    rows = [line.split()[1] for line in out.splitlines()[2:] if line and line[0] in "-0123456789"]
    assert sorted(set(rows)) == ["kd", "teacher"]
