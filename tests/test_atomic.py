"""Atomic writes: a reader sees the old file or the whole new one, and a failed write leaves nothing behind."""

import csv
from pathlib import Path

import pytest

from engine.atomic import staged, staged_folder, write_csv, write_text
from engine.errors import OutputError


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "results.json"
    write_text(target, '{"old": 1}')
    with pytest.raises(RuntimeError), staged(target) as tmp:
        tmp.write_text('{"new": ')  # half written, then the writer fails
        raise RuntimeError("writer died")
    assert target.read_text() == '{"old": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_an_unwritable_folder_is_an_output_error_that_says_where(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    with pytest.raises(OutputError, match="not_a_folder"):
        write_text(blocker / "sub" / "results.json", "{}")


def test_csv_rows_round_trip_with_their_header(tmp_path: Path) -> None:
    rows = [{"n": 2, "dice": 0.25}, {"n": 8, "dice": 0.5}]
    write_csv(tmp_path / "runs.csv", rows)
    with open(tmp_path / "runs.csv", newline="") as handle:
        assert list(csv.DictReader(handle)) == [{"n": "2", "dice": "0.25"}, {"n": "8", "dice": "0.5"}]


def test_a_staged_folder_moves_its_files_in_together_or_leaves_nothing(tmp_path) -> None:
    with pytest.raises(RuntimeError), staged_folder(tmp_path) as stage:
        (stage / "a.tif").write_bytes(b"half")
        raise RuntimeError("GDAL failed mid-write")
    assert list(tmp_path.iterdir()) == []
    with staged_folder(tmp_path) as stage:
        (stage / "mask.png").write_bytes(b"png")
        (stage / "mask.pgw").write_text("world")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.pgw", "mask.png"]
    with pytest.raises(OutputError, match="never overwritten"), staged_folder(tmp_path, overwrite=False) as stage:
        (stage / "mask.pgw").write_text("other world")
        (stage / "other.png").write_bytes(b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.pgw", "mask.png"]
    assert (tmp_path / "mask.pgw").read_text() == "world"


def test_a_staged_file_gets_the_permissions_of_a_plainly_written_one(tmp_path: Path) -> None:
    (tmp_path / "plain.txt").write_text("plain")
    write_text(tmp_path / "staged.txt", "staged")
    assert (tmp_path / "staged.txt").stat().st_mode & 0o777 == (tmp_path / "plain.txt").stat().st_mode & 0o777


def test_a_model_file_gets_them_too_though_safetensors_replaces_the_file_it_writes(tmp_path: Path, model_factory) -> None:
    (tmp_path / "plain.txt").write_text("plain")
    model = model_factory(tmp_path / "model.safetensors", tile_size=256)
    assert model.stat().st_mode & 0o777 == (tmp_path / "plain.txt").stat().st_mode & 0o777
