"""The command line as a user meets it: clear errors, no tracebacks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from promptrec.cli.main import main


def test_data_import_writes_a_dataset_and_reports_counts(tmp_path, capsys):
    src = tmp_path / "events.csv"
    src.write_text("uid,iid,ts\n1,a,10\n1,b,20\n1,c,30\n1,c,30\n2,a,5\n")
    code = main(
        [
            "data",
            "import",
            str(src),
            "--user-col",
            "uid",
            "--item-col",
            "iid",
            "--timestamp-col",
            "ts",
            "--out",
            str(tmp_path / "ds"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert (tmp_path / "ds" / "interactions.parquet").is_file()
    assert "duplicate" in out.lower()


def test_bad_input_is_a_one_line_error_with_the_row_and_column(tmp_path, capsys):
    src = tmp_path / "events.csv"
    src.write_text("user,item,timestamp\n1,a,10\n1,b,yesterday-ish\n")
    code = main(["data", "import", str(src), "--out", str(tmp_path / "ds")])
    err = capsys.readouterr().err
    assert code == 1
    assert "events.csv" in err and "row 2" in err and "timestamp" in err
    assert "Traceback" not in err


def test_eval_on_a_missing_model_says_what_to_do(tmp_path):
    ds = tmp_path / "ds"
    (tmp_path / "e.csv").write_text("user,item,timestamp\n1,a,1\n1,b,2\n1,c,3\n")
    assert main(["data", "import", str(tmp_path / "e.csv"), "--out", str(ds)]) == 0
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "promptrec.cli",
            "eval",
            "--model",
            str(tmp_path / "none"),
            "--data",
            str(ds),
            "--no-baselines",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "error:" in proc.stderr


def test_every_command_has_help():
    for command in (["data", "fetch"], ["data", "import"], ["train"], ["eval"], ["sensitivity"]):
        proc = subprocess.run(
            [sys.executable, "-m", "promptrec.cli", *command, "--help"],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, command
        assert "usage: promptrec" in proc.stdout


def test_every_command_the_readme_names_exists():
    """`promptrec ...` and `make ...` in README.md: each subcommand parses its `--help`, each
    make target is in the Makefile."""
    import re
    from pathlib import Path

    from promptrec.cli.main import build_parser

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    commands = set(re.findall(r"`promptrec ([a-z][a-z-]*(?: [a-z][a-z-]*)?)", readme))
    assert {"serve", "worker", "demo", "db load-dataset", "data import"} <= {
        c if c.split()[0] in ("db", "data") else c.split()[0] for c in commands
    }
    parser = build_parser()
    for command in commands:
        words = command.split()
        if words[0] not in ("db", "data"):
            words = words[:1]
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([*words, "--help"])
        assert exit_info.value.code == 0, command
    makefile = (root / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, flags=re.MULTILINE))
    for target in set(re.findall(r"`make ([a-z][a-z-]*)", readme)):
        assert target in targets, f"README names `make {target}`, the Makefile has no such target"


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [
        *(
            ("search", option, v)
            for option in ("--screen-fraction", "--recheck-fraction")
            for v in ("2", "-0.1", "half")
        ),
        *(
            ("search", option, v)
            for option in ("--candidates", "--personal-candidates")
            for v in ("0", "ten")
        ),
        *(
            ("search", option, v)
            for option in ("--metrics", "--personal-metrics")
            for v in ("MRR", "NDCG@10,HR@0", ",")
        ),
        *(("sensitivity", "--shuffles", v) for v in ("0", "-3", "many")),
        *(("train", "--field-drop", v) for v in ("1.5", "-0.1", "some")),
        *(("train", "--epochs", v) for v in ("0", "many")),
    ],
)
def test_a_bad_option_value_exits_2_naming_the_option(command, option, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, option, value])
    assert exit_info.value.code == 2
    assert option in capsys.readouterr().err


def test_search_fraction_zero_turns_screening_or_recheck_off():
    from promptrec.cli.main import build_parser

    parser = build_parser()
    assert parser.parse_args(["search", "--screen-fraction", "0"]).screen_fraction is None
    assert parser.parse_args(["search", "--recheck-fraction", "0"]).recheck_fraction is None
