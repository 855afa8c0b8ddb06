from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.aws import Emulator, running_emulator


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[Emulator]:
    """One moto server for the whole session; tests get it reset through `emulator`."""
    with running_emulator() as emulator:
        yield emulator


@pytest.fixture
def emulator(emulator_server: Emulator) -> Emulator:
    emulator_server.reset()
    return emulator_server


@pytest.fixture(autouse=True)
def _restore_root_logging() -> Iterator[None]:
    """A test that runs a CLI configures the root logger onto its captured stderr; put the
    handlers and level back so later tests never log into a closed stream."""
    import logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
