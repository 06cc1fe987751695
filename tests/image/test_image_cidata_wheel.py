"""The builder VM's inputs: the cidata ISO (read back with pycdlib) and the fpvm wheel (real pip)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from fpvm.image import builder_vm, cidata, overlay, recipe, wheel

RECIPE = recipe.Recipe(release=recipe.parse_release("15.1"), arch="aarch64", method="builder-vm")


def test_cidata_iso_reads_back(tmp_path: Path) -> None:
    whl = wheel.build_wheel(tmp_path)
    iso = tmp_path / "cidata.iso"
    user_data = builder_vm.user_data(RECIPE, whl.name)
    cidata.write_cidata(
        iso, {"user-data": user_data.encode(), "meta-data": b"instance-id: x\n", whl.name: whl}
    )
    assert cidata.volume_id(iso) == "cidata"  # nuageinit looks for /dev/iso9660/cidata
    files = cidata.read_cidata(iso)
    assert set(files) == {"user-data", "meta-data", whl.name}
    assert files["user-data"].decode() == user_data
    assert files[whl.name] == whl.read_bytes()
    # Joliet names too (Lima: FreeBSD needs them to see the files as they are named).
    import io

    import pycdlib

    reader = pycdlib.PyCdlib()
    reader.open(str(iso))
    try:
        buf = io.BytesIO()
        reader.get_file_from_iso_fp(buf, joliet_path="/user-data")
        assert buf.getvalue() == user_data.encode()
    finally:
        reader.close()


def test_user_data_is_a_sh_script_that_builds_and_reports(tmp_path: Path) -> None:
    text = builder_vm.user_data(RECIPE, "fpvm-0.1.0-py3-none-any.whl")
    assert text.startswith("#!/bin/sh\n")  # nuageinit runs user-data that starts with #!
    script = tmp_path / "user-data"
    script.write_text(text)
    assert subprocess.run(["sh", "-n", str(script)], capture_output=True).returncode == 0
    assert 'mount -t cd9660 /dev/iso9660/cidata "${src}" || src=/media/nuageinit' in text
    assert 'env PYTHONPATH="${src}/fpvm-0.1.0-py3-none-any.whl" python3 -m fpvm build' in text
    assert "pkg install -y python3" in text
    assert "--method pkgbase --arch aarch64 --release 15.1-RELEASE" in text
    assert text.count('--wheel "${src}/fpvm-0.1.0-py3-none-any.whl"') == 1
    assert "of=/dev/vtbd1" in text
    assert 'echo "FPVM-BUILD-OK size=${size} sha256=${sum}"' in text
    assert "shutdown -p now" in text


def test_user_data_failure_path_reports_failed(tmp_path: Path) -> None:
    """Run the script's control flow with sh, the build replaced by a failing command."""
    text = builder_vm.user_data(RECIPE, "x.whl")
    body = text.replace("exec >/dev/console 2>&1\n", "").replace("shutdown -p now", "echo POWEROFF")
    body = body.replace("\tmkdir -p", "\tfalse\n\tmkdir -p", 1)
    script = tmp_path / "user-data"
    script.write_text(body)
    out = subprocess.run(["sh", str(script)], capture_output=True, text=True).stdout.splitlines()
    assert out[-2:] == ["FPVM-BUILD-FAILED status=1", "POWEROFF"]


def test_wheel_is_installable_by_pip_and_importable_from_the_zip(tmp_path: Path) -> None:
    whl = wheel.build_wheel(tmp_path / "dist")
    with zipfile.ZipFile(whl) as zf:
        names = set(zf.namelist())
    assert "fpvm/image/recipe.py" in names and "fpvm-0.1.0.dist-info/RECORD" in names
    assert not any("__pycache__" in n for n in names)
    target = tmp_path / "site"
    pip = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            "--target",
            str(target),
            str(whl),
        ],
        capture_output=True,
        text=True,
    )
    assert pip.returncode == 0, pip.stderr
    assert (target / "fpvm/cli.py").is_file()
    # The builder VM runs "python3 -m fpvm" straight from the wheel file (zipimport).
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "import fpvm, fpvm.image.recipe as r; print(fpvm.__file__, r.DEFAULT_RELEASE)",
        ],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(whl), "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [f"{whl}/fpvm/__init__.py", "15.1-RELEASE"]
    # ... including the guest's rc.d scripts, which are package data (importlib.resources in a zip).
    entries = subprocess.run(
        [sys.executable, "-c", "from fpvm.image import overlay; print(len(overlay.entries('aarch64')))"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(whl), "PATH": "/usr/bin:/bin"},
    )
    assert entries.returncode == 0, entries.stderr
    assert int(entries.stdout) == len(overlay.entries("aarch64"))


def test_wheel_is_reproducible(tmp_path: Path) -> None:
    assert wheel.build_wheel(tmp_path / "a").read_bytes() == wheel.build_wheel(tmp_path / "b").read_bytes()


def test_install_wheel_into_staged_root(tmp_path: Path) -> None:
    whl = wheel.build_wheel(tmp_path)
    site = tmp_path / "root/usr/local/lib/python3.11/site-packages"
    site.mkdir(parents=True)
    assert wheel.install_wheel(whl, tmp_path / "root") == site
    run = subprocess.run(
        [sys.executable, "-c", "import fpvm.image.overlay"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(site)},
    )
    assert run.returncode == 0, run.stderr


def test_install_wheel_needs_python_in_the_root(tmp_path: Path) -> None:
    import pytest

    from fpvm.image.plan import BuildError

    with pytest.raises(BuildError, match="is python3 installed"):
        wheel.install_wheel(wheel.build_wheel(tmp_path), tmp_path / "empty")
