"""The two kinds of source (cgh.data.base): a FileSource names the file it cannot decode."""

from __future__ import annotations

import os

import pytest

from cgh.data import open_source
from cgh.errors import DataError
from tests.helpers import random_hwc, save_png

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_file_source_load_reports_undecodable(tmp_path):
    save_png(str(tmp_path / "a" / "ok.png"), random_hwc())
    (tmp_path / "a" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    src = open_source("folder", str(tmp_path), "train")
    bad = src.paths.index(os.path.join("a", "bad.png"))
    with pytest.raises(DataError, match=f"cannot decode image .*{os.path.join('a', 'bad.png')}"):
        src.load(bad)
