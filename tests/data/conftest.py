"""Every data test runs offline: no network, no $ONEBIT_DATA, no system folders, a private cache."""

from __future__ import annotations

import pytest

from onebit.data import download, registry


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("ONEBIT_NO_DOWNLOAD", "1")
    monkeypatch.delenv("ONEBIT_DATA", raising=False)
    monkeypatch.setenv("ONEBIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(registry, "system_bases", lambda: [])

    def no_network(url, out, timeout=10.0):
        raise download.DownloadFailed(f"{url}: network disabled in tests")

    monkeypatch.setattr(download, "fetch_url", no_network)
