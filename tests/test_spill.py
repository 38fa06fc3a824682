"""Spill folders of drivers that died are removed by the next run on the host; live ones stay."""

from __future__ import annotations

import os
import subprocess
import sys

from vidbatch import spill


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_dead_drivers_folder_is_removed_and_every_other_one_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(spill.tempfile, "tempdir", str(tmp_path))
    host = spill._host_key()
    dead = tmp_path / f"vidbatch-spill-20261205T024424Z-f3aaa1-pid{_dead_pid()}-{host}-abc"
    (dead / "sub").mkdir(parents=True)
    (dead / "clips.parquet").write_bytes(b"x" * 1000)
    (dead / "sub" / "more").write_bytes(b"y" * 24)
    live = tmp_path / f"vidbatch-spill-20261205T024425Z-0a0b0c-pid{os.getpid()}-{host}-def"
    live.mkdir()
    elsewhere = tmp_path / f"vidbatch-spill-20261205T024426Z-0a0b0d-pid{_dead_pid()}-00000000-ghi"  # another host
    elsewhere.mkdir()
    unrelated = [tmp_path / "vidbatch-bench", tmp_path / "vidbatch-20261205T024424Z-f3aaa1-xyz"]
    for folder in unrelated:
        folder.mkdir()
    a_file = tmp_path / f"vidbatch-spill-20261205T024427Z-0a0b0e-pid{_dead_pid()}-{host}-file"
    a_file.write_text("not a folder")

    swept = spill.remove_dead_runs_folders()
    assert swept == spill.Swept(folders=1, bytes=1024)
    assert not dead.exists()
    assert live.is_dir() and elsewhere.is_dir() and a_file.is_file() and all(f.is_dir() for f in unrelated)
    assert spill.remove_dead_runs_folders() == spill.Swept(0, 0)


def test_a_runs_folder_is_named_so_that_it_is_kept_while_it_runs_and_gone_after(tmp_path, monkeypatch):
    monkeypatch.setattr(spill.tempfile, "tempdir", str(tmp_path))
    with spill.spill_folder("20261205T024424Z-f3aaa1") as folder:
        (folder / "clips.parquet").write_bytes(b"x")
        assert spill.remove_dead_runs_folders() == spill.Swept(0, 0) and folder.is_dir()
    assert not folder.exists()
