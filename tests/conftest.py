from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_file(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture
def perov_path() -> Path:
    return shared_file("perov_5_val.csv.gz")


@pytest.fixture
def carbon_path() -> Path:
    return shared_file("carbon_24_val.csv.gz")
