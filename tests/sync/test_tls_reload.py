"""`stockade.tls.reload.TLSFiles`: when renewed files are adopted, when they are refused, and
the expiry warning (real certificates on disk, a settable clock)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from stockade.tls import issue_brain_cert, make_ca
from stockade.tls.reload import TLSFileError, TLSFiles


def _files(tmp_path: Path, days: int = 3) -> tuple[TLSFiles, list[float]]:
    ca = make_ca()
    (tmp_path / "ca.crt").write_bytes(ca.cert)
    issue_brain_cert(ca, days=days).write(tmp_path / "b.crt", tmp_path / "b.key")
    now = [0.0]
    files = TLSFiles(tmp_path / "b.crt", tmp_path / "b.key", tmp_path / "ca.crt", what="the test's certificate")
    now[0] = files.material.not_before.timestamp() + 300  # made "now" (5 minutes back-dated)
    files.clock = lambda: now[0]
    return files, now


def test_adopts_a_whole_renewal_and_ignores_a_touch(tmp_path: Path) -> None:
    files, _ = _files(tmp_path)
    first = files.material
    assert not files.refresh()  # nothing changed: no read at all
    os.utime(tmp_path / "b.crt")  # touched, same bytes
    assert not files.refresh() and files.version == 0
    ca = make_ca()
    (tmp_path / "ca.crt").write_bytes(ca.cert)
    issue_brain_cert(ca).write(tmp_path / "b.crt", tmp_path / "b.key")
    assert files.refresh() and files.version == 1 and files.renewals == 1
    assert files.material.serial != first.serial and files.material.ca == ca.cert


def test_keeps_the_last_good_set_while_the_files_are_broken(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files, _ = _files(tmp_path)
    good = files.material
    (tmp_path / "b.key").write_bytes(b"not a key")
    with caplog.at_level(logging.ERROR):
        assert not files.refresh()
    assert files.material == good and files.problem is not None and "b.key" in files.problem
    assert "still serving" in caplog.text and f"serial {good.serial:x}" in caplog.text
    (tmp_path / "b.crt").unlink()
    assert not files.refresh() and files.material == good and "No such file" in str(files.problem)


def test_the_first_read_must_succeed(tmp_path: Path) -> None:
    ca = make_ca()
    (tmp_path / "ca.crt").write_bytes(ca.cert)
    pair = issue_brain_cert(ca)
    (tmp_path / "b.crt").write_bytes(pair.cert)
    (tmp_path / "b.key").write_bytes(issue_brain_cert(ca).key)  # another certificate's key
    with pytest.raises(TLSFileError, match="is not the key of"):
        TLSFiles(tmp_path / "b.crt", tmp_path / "b.key", tmp_path / "ca.crt", what="x")


def test_warns_in_the_last_third_of_the_lifetime_and_once_expired(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files, now = _files(tmp_path, days=3)
    assert files.check_expiry() is None  # fresh
    day = 86400.0
    now[0] += 2.1 * day  # under a third left
    with caplog.at_level(logging.WARNING):
        text = files.check_expiry()
        again = files.check_expiry()  # same certificate, within the hour: not logged again
    assert text is not None and text == again and "expires in" in text and "no renewed one" in text
    assert caplog.text.count("expires in") == 1
    now[0] += day
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        expired = files.check_expiry()
    assert expired is not None and "EXPIRED" in expired and "EXPIRED" in caplog.text
    assert files.seconds_left() < 0
