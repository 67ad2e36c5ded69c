"""`retinaseg run --shard K/N` and `retinaseg report`: N processes share one output folder (issue 34, item 1)."""
import json

import pytest

from retinaseg.cli import cli as retinaseg_cli
from retinaseg.inference.runner import shard_of


@pytest.mark.parametrize("count, parts", [(7, 3), (3, 5), (4, 1), (0, 2), (10, 10)])
def test_shards_are_disjoint_and_cover_every_input(count, parts):
    items = [f"p{i:02d}" for i in range(count)]
    shards = [shard_of(items, (k, parts)) for k in range(1, parts + 1)]
    assert sorted(sum(shards, [])) == items
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def run(cli, *args):
    return cli.invoke(retinaseg_cli, ["run", "-q", "-m", "dark-vessels", *map(str, args)])


def test_shards_run_one_after_the_other_make_what_one_run_makes(cli, tmp_path, photo_folder, fake_models):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert run(cli, photo_folder, whole).exit_code == 0
    for k in (1, 2):
        result = run(cli, "--shard", f"{k}/2", photo_folder, parts)
        assert result.exit_code == 0, result.output
    assert (parts / "run-1-of-2.json").is_file() and (parts / "run-2-of-2.json").is_file()
    assert not (parts / "run.json").exists()
    for folder in ("raw_pre", "small_pre"):
        names = sorted(p.name for p in (whole / folder).iterdir())
        assert names == sorted(p.name for p in (parts / folder).iterdir())
        for name in names:
            assert (whole / folder / name).read_bytes() == (parts / folder / name).read_bytes()
    first = json.loads((parts / "run-1-of-2.json").read_text())
    assert first["settings"]["shard"] == [1, 2] and len(first["images"]) == 2  # a, c of a, b, c
    report = cli.invoke(retinaseg_cli, ["report", str(parts)])
    assert report.exit_code == 0 and "3 ok, 0 skipped, 0 failed" in report.output, report.output
    again = run(cli, "--shard", "2/2", photo_folder, parts)  # a shard resumes on its own
    assert again.exit_code == 0 and "0 ok, 1 skipped" in again.output


def test_a_shard_with_no_photos_succeeds_and_report_names_failures(cli, tmp_path, photo_folder, fake_models):
    out = tmp_path / "out"
    result = run(cli, "--shard", "5/5", photo_folder, out)
    assert result.exit_code == 0 and "0 ok, 0 skipped, 0 failed" in result.output, result.output
    (photo_folder / "broken.png").write_text("not a PNG")
    assert run(cli, "--shard", "3/5", photo_folder, out).exit_code == 1  # a, b, broken, c: broken is the 3rd
    report = cli.invoke(retinaseg_cli, ["report", str(out)])
    assert report.exit_code == 1 and "failed: " in report.output and "broken.png" in report.output


@pytest.mark.parametrize("value", ["0/2", "3/2", "2", "a/b"])
def test_bad_shards_are_usage_errors(cli, tmp_path, photo_folder, value):
    result = run(cli, "--shard", value, photo_folder, tmp_path / "out")
    assert result.exit_code == 2 and "expected K/N with 1 <= K <= N" in result.output


def test_a_shard_measures_its_own_photos_into_its_own_table(cli, tmp_path, photo_folder, fake_models):
    out = tmp_path / "out"
    result = run(cli, "--shard", "1/2", "--measure", photo_folder, out)
    assert result.exit_code == 0, result.output
    table = (out / "measurements-1-of-2.csv").read_text().splitlines()
    assert len(table) == 3 and not (out / "measurements.csv").exists()  # a header and photos a and c


def test_measure_after_the_shards_joins_their_rows_into_one_table_without_measuring_again(cli, tmp_path, photo_folder,
                                                                                          fake_models):
    out = tmp_path / "out"
    for k in (1, 2):
        assert run(cli, "--shard", f"{k}/2", "--measure", photo_folder, out).exit_code == 0
    shards = [(out / f"measurements-{k}-of-2.csv").read_text().splitlines() for k in (1, 2)]
    report = cli.invoke(retinaseg_cli, ["report", str(out)])
    assert report.exit_code == 0 and "measurements-1-of-2.csv: 2 row(s), " in report.output, report.output
    assert "measurements.csv is not made yet for 3 of the 3 photos done" in report.output
    result = cli.invoke(retinaseg_cli, ["measure", str(out)])
    assert result.exit_code == 0, result.output
    assert "3 of 3 photo(s) measured before with the same files and settings: their rows are reused" in result.output
    joined = (out / "measurements.csv").read_text().splitlines()
    assert joined[0] == shards[0][0] and sorted(joined[1:]) == sorted(shards[0][1:] + shards[1][1:])
    report = cli.invoke(retinaseg_cli, ["report", str(out)])
    assert "measurements.csv: 3 row(s), " in report.output and "note: measurements.csv" not in report.output
