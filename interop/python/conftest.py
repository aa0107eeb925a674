"""Fixtures: one real ma-idp server (sqlite or postgres) for the whole session."""

from __future__ import annotations

import pytest

import idp_harness


@pytest.fixture(scope="session")
def idp():
    tmp = idp_harness.make_tmp()
    server = None
    try:
        server = idp_harness.start_idp(tmp)
        yield server
    finally:
        if server is not None:
            idp_harness.stop_idp(server)
        idp_harness.cleanup(tmp)


_SERVERS: list = []


@pytest.fixture(autouse=True)
def _remember_server(request):
    if "idp" in request.fixturenames:
        _SERVERS[:] = [request.getfixturevalue("idp")]
    yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed and _SERVERS:
        tail = "\n".join(_SERVERS[0].log().splitlines()[-60:])
        report.sections.append(("ma-idp server log (last 60 lines)", tail))
    return report
