import pytest

from runtime.spec import load_artifacts


@pytest.fixture(scope="session")
def arts(export_dir):
    return load_artifacts(export_dir)
