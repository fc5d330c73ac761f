"""Version directory names: exactly TF Serving's rule (int64 via safe_strto64), over a server."""

import os

import numpy as np

from test_serving_support import build_half_plus_two, rest_call
from tfdeploy.runtime.versions import latest_version_dir, list_versions, parse_version, \
    version_dirs

pytest_plugins = ("test_serving_support",)


def test_parse_version_is_safe_strto64():
    accepted = {"0": 0, "7": 7, "007": 7, " 12\t": 12, "-3": -3, "\n5\n": 5,
                str((1 << 63) - 1): (1 << 63) - 1, str(-(1 << 63)): -(1 << 63)}
    for name, version in accepted.items():
        assert parse_version(name) == version, name
    for name in ("²", "١", "1²", "١٢", "\u0663", "1.0", "+1", "1e3", "", " ", "-", "--1",
                 "0x10", "temp-1", "1 2", str(1 << 63), str(-(1 << 63) - 1), "1" * 5000,
                 "\u00a01", "1\u2003", "٣"):
        assert parse_version(name) is None, repr(name)


def test_listing_ignores_non_ascii_digits_and_keeps_the_on_disk_name(tmp_path):
    for name in ("²", "١", "١٢", "3", "0010", "temp-11", "1.5", str(1 << 64)):
        os.makedirs(tmp_path / name)
    (tmp_path / "12").write_text("a file is not a version directory")
    assert list_versions(str(tmp_path)) == [3, 10]
    assert version_dirs(str(tmp_path))[10] == str(tmp_path / "0010")
    assert latest_version_dir(str(tmp_path)) == (10, str(tmp_path / "0010"))
    # one version spelled twice: the name that sorts last wins (TF Serving's map insert order)
    os.makedirs(tmp_path / "03")
    assert version_dirs(str(tmp_path))[3] == str(tmp_path / "3")
    assert list_versions(str(tmp_path / "missing")) == []


def test_zero_padded_version_serves_and_non_ascii_digits_never_crash_a_poll(tmp_path):
    from tfdeploy.runtime import load
    from tfdeploy.serving import create_server

    base = tmp_path / "half"
    build_half_plus_two(str(base / "0007"), scale=0.5)
    for name in ("²", "١٢", "٣"):
        build_half_plus_two(str(base / name), scale=9.0)   # must never be served
    assert np.allclose(load(str(base)).predict(np.array([2.0], np.float32)), [3.0])
    server = create_server(model_name="half", model_base_path=str(base), port=0,
                           rest_api_port=0, file_system_poll_wait_seconds=0).start()
    try:
        status, body = rest_call(server.rest_port, "GET", "/v1/models/half")
        assert status == 200
        assert [(s["version"], s["state"]) for s in body["model_version_status"]] == \
            [("7", "AVAILABLE")]
        assert rest_call(server.rest_port, "POST", "/v1/models/half/versions/7:predict",
                         {"instances": [2.0]}) == (200, {"predictions": [3.0]})
        server.repository.poll_once()  # polling again with the odd names present is fine
        assert rest_call(server.rest_port, "POST", "/v1/models/half:predict",
                         {"instances": [2.0]}) == (200, {"predictions": [3.0]})
    finally:
        server.stop()
