"""pipeline.predict's folder walk: every file or link it cannot read is named, one each."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.predict.cli import collect


def test_a_folder_names_each_link_it_cannot_follow(tmp_path: Path):
    folder = tmp_path / "pictures"
    (folder / "sub").mkdir(parents=True)
    (folder / "one.png").write_bytes(b"not decoded here")
    (folder / "sub" / "two.jpg").write_bytes(b"nor here")
    (folder / ".hidden.png").symlink_to(".hidden.png")  # hidden: never read, never named
    (folder / "loop.png").symlink_to("loop.png")
    os.symlink("a", folder / "sub" / "b")
    os.symlink("b", folder / "sub" / "a")  # a loop of two links, no image suffix
    (folder / "gone.png").symlink_to(tmp_path / "missing.png")
    (folder / "up").symlink_to(folder)  # a link to a folder: not walked, not an error

    files, errors = collect([folder])

    assert files == [folder / "one.png", folder / "sub" / "two.jpg"]
    assert dict(errors) == {
        folder / "gone.png": "cannot read this link: No such file or directory",
        folder / "loop.png": "cannot read this link: Too many levels of symbolic links",
        folder / "sub" / "a": "cannot read this link: Too many levels of symbolic links",
        folder / "sub" / "b": "cannot read this link: Too many levels of symbolic links",
    }
    assert all("\n" not in msg for _, msg in errors)


def test_a_loop_given_directly_is_kept_for_the_reader_to_name(tmp_path: Path):
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    assert collect([loop]) == ([loop], [])
    assert collect([tmp_path / "nothing.png"]) == (
        [],
        [(tmp_path / "nothing.png", "no such file or directory")],
    )
