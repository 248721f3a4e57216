"""The artifacts module's file helpers."""

import os

from nextdest import artifacts


def test_copy_atomic_replaces_a_hard_link_instead_of_writing_through(tmp_path):
    # experiment B's summary is a hard link to experiment A's (cp -al); publishing B's new summary
    # must leave A's file as it was
    a, b = tmp_path / "a.md", tmp_path / "b.md"
    a.write_text("summary of A")
    os.link(a, b)
    src = tmp_path / "new.md"
    src.write_text("summary of B")
    artifacts.copy_atomic(src, b)
    assert b.read_text() == "summary of B"
    assert a.read_text() == "summary of A"
    assert os.stat(a).st_ino != os.stat(b).st_ino
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.md", "b.md", "new.md"]  # no temp file left


def test_copy_atomic_creates_a_missing_target(tmp_path):
    src = tmp_path / "s.csv"
    src.write_text("utrip_id,city_id_1\n")
    artifacts.copy_atomic(src, tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_text() == "utrip_id,city_id_1\n"
