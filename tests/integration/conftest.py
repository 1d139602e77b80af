"""The emulator fixtures the test_emulator_* modules share: one emulator per module (starting
one costs a thread and a socket), reset before each test so no test sees another's runs."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from airflow_provider_empirical.emulator import Emulator
from tests.integration.test_emulator_support import new_client, serve


@pytest.fixture(scope="module")
def shared() -> Iterator[Emulator]:
    yield from serve()


@pytest.fixture
def emu(shared: Emulator) -> Emulator:
    shared.reset()
    return shared


@pytest.fixture(scope="module")
def shared_client(shared: Emulator) -> Iterator[httpx.Client]:
    with new_client(shared.url) as c:
        yield c


@pytest.fixture
def client(emu: Emulator, shared_client: httpx.Client) -> httpx.Client:
    """The module's client, after `emu` reset the emulator."""
    return shared_client
