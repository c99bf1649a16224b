import subprocess
import sys
import zipfile

import pytest


@pytest.mark.slow
def test_wheel_builds_and_imports_from_itself(tmp_path):
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(root)],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("latticegym-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for expected in ("latticegym/__init__.py", "latticegym/crystal.py", "latticegym/benchmarks/magpie_scaler.json", "latticegym/policies/diffusion.py"):
        assert expected in names
    assert not any(n.startswith(("latticegym/tests", "latticegym/runs", "latticegym/.venv")) for n in names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import latticegym, latticegym.cli, latticegym.benchmarks.metrics as m, latticegym.policies.checkpoint as c;"
        "print(latticegym.__file__); print(len(m._SCALER['means'])); print(','.join(c.available_priors()))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(str(site))
    assert lines[1] == "132"
    assert set(lines[2].split(",")) >= {"perov_5", "carbon_24"}
