import numpy as np
import pytest

# Shared fixtures live in these plugins (never import a test module or a conftest); plain helpers
# such as wait_until, free_port, tiny_mlp and make_package are imported from tests.plugins.*.
pytest_plugins = [
    "tests.plugins.digits",
    "tests.plugins.processes",
    "tests.plugins.serving",
]


def pytest_addoption(parser):
    parser.addoption(
        "--reliability-scale",
        type=int,
        default=1,
        help="multiply the request, fuzz and kill counts of tests/reliability (make reliability)",
    )


@pytest.fixture
def reliability_scale(request) -> int:
    return request.config.getoption("--reliability-scale")


@pytest.fixture(autouse=True)
def _runs_in_tmp(tmp_path, monkeypatch):
    # Trainers write runs/ under the working directory: keep every test's files in its tmp dir.
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def digits():
    import ember

    return ember.load_digits(images=False)


@pytest.fixture
def blobs():
    """A small, easy 3-class problem: 120 samples of 4 features."""
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=4.0, size=(3, 4))
    y = rng.integers(0, 3, size=120)
    x = (centers[y] + rng.normal(size=(120, 4))).astype(np.float32)
    return x, y.astype(np.int64)
