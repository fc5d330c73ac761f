"""TF Serving's ``model_servers/http_rest_api_handler_test.cc``, translated case by case.

The server runs on a real socket and serves TF Serving's own test SavedModel
(``tests/data/tf_serving``: ``saved_model_half_plus_two_2_versions``, versions 123 and
124 on disk) with the upstream test's config: the ``specific`` policy serving 123 and the
label ``Version_Label`` -> 123. Every case asserts the HTTP status (TF Serving maps
INVALID_ARGUMENT to 400, NOT_FOUND to 404), the Content-Type header and the JSON body
(``{"error": ...}`` with TF Serving's message) that upstream asserts.
"""

import http.client
import json
import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data", "tf_serving")
MODEL = "saved_model_half_plus_two_2_versions"      # kTestModelName
VERSION = 123                                       # kTestModelVersion1
LABEL = "Version_Label"                             # kTestModelVersionLabel
MISSING_LABEL = "Version_Nonexistent"               # kNonexistentModelVersionLabel
UINT64_MAX = 18446744073709551615


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    from tfdeploy.serving import create_server

    config = tmp_path_factory.mktemp("upstream_rest") / "models.config"
    config.write_text(f"""model_config_list {{
  config {{
    name: "{MODEL}"
    base_path: "{os.path.join(DATA, MODEL)}"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: {VERSION} }} }}
    version_labels {{ key: "{LABEL}" value: {VERSION} }}
  }}
}}
""")
    server = create_server(model_config_file=str(config), port=None, rest_api_port=0,
                           file_system_poll_wait_seconds=0, max_num_load_retries=0)
    server.start()
    yield server.rest_port
    server.stop()


def request(port, method, path, body=""):
    """ProcessRequest over HTTP: ``(status, Content-Type, parsed JSON body)``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body.encode() if isinstance(body, str) else body,
                     headers={"Content-Length": str(len(body))})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type"), json.loads(resp.read())
    finally:
        conn.close()


def error(port, method, path, body=""):
    """An upstream error case: ``(status, message)``; the body must be exactly {"error": str}."""
    status, ctype, reply = request(port, method, path, body)
    assert ctype == "application/json"
    assert set(reply) == {"error"} and isinstance(reply["error"], str), reply
    return status, reply["error"]


def ok(port, method, path, body=""):
    status, ctype, reply = request(port, method, path, body)
    assert (status, ctype) == (200, "application/json"), reply
    return reply


# -- TEST_F(HttpRestApiHandlerTest, kPathRegex) ------------------------------------------------
def test_path_regex(port):
    # "/v1/models" is the handler's; "/statuspage" and "/index" are not (no handler: 404).
    assert error(port, "GET", "/v1/models") == (400, "Missing model name in request.")
    for path in ("/statuspage", "/index"):
        assert error(port, "GET", path)[0] == 404


# -- TEST_F(HttpRestApiHandlerTest, UnsupportedApiCalls) ---------------------------------------
@pytest.mark.parametrize("method,path,message", [
    ("GET", "/v1/foo", "Malformed request"),
    ("POST", "/v1/foo", "Malformed request"),
    ("GET", "/v1/models", "Missing model name"),
    ("GET", "/v1/models/debug/model_name", "Malformed request"),
    ("POST", "/v1/models", "Malformed request"),
    ("GET", "/v1/models/foo:predict", "Malformed request"),
    ("GET", "/v1/models/foo/version/50:predict", "Malformed request"),
    ("POST", "/v1/models/foo/version/50:regress", "Malformed request"),
    ("POST", "/v1/models/foo/versions/HELLO:regress", "Malformed request"),
    ("POST", f"/v1/models/foo/versions/{UINT64_MAX}:regress", "Failed to convert version"),
    ("POST", "/v1/models/foo/metadata", "Malformed request"),
    ("POST", "/v1/models/foo/label/some_label:regress", "Malformed request"),
    ("POST", "/v1/models/foo/versions/50/labels/some_label:regress", "Malformed request"),
    ("POST", "/v1/models/foo/versions/some_label:regress", "Malformed request"),
])
def test_unsupported_api_calls(port, method, path, message):
    status, text = error(port, method, path)
    assert status == 400 and message in text, text   # IsInvalidArgument


def test_malformed_request_message_names_method_and_path(port):
    assert error(port, "POST", "/v1/foo") == (400, "Malformed request: POST /v1/foo")
    assert error(port, "POST", f"/v1/models/foo/versions/{UINT64_MAX}:regress") == (
        400, f"Failed to convert version: {UINT64_MAX} to numeric.")


# -- TEST_F(HttpRestApiHandlerTest, PredictModelNameVersionErrors) -----------------------------
@pytest.mark.parametrize("path,message", [
    ("/v1/models/foo:predict", "Servable not found for request: Latest(foo)"),
    ("/v1/models/foo/versions/50:predict", "Servable not found for request: Specific(foo, 50)"),
    (f"/v1/models/{MODEL}99:predict", f"Servable not found for request: Latest({MODEL}99)"),
])
def test_predict_model_name_version_errors(port, path, message):
    assert error(port, "POST", path, '{ "instances": [1] }') == (404, message)   # IsNotFound


def test_predict_unserved_version_on_disk_is_not_found(port):
    # 124 exists on disk but the specific policy serves 123 only.
    assert error(port, "POST", f"/v1/models/{MODEL}/versions/124:predict",
                 '{ "instances": [1.0] }') == (
        404, f"Servable not found for request: Specific({MODEL}, 124)")


# -- TEST_F(HttpRestApiHandlerTest, PredictRequestErrors) --------------------------------------
@pytest.mark.parametrize("path,body,message", [
    (f"/v1/models/{MODEL}:predict", "", "JSON Parse error: The document is empty"),
    (f"/v1/models/{MODEL}:predict", "instances = [1, 2]", "JSON Parse error: Invalid value"),
    (f"/v1/models/{MODEL}:predict", '{ "instances": ["x", "y"] }',
     "not of expected type: float"),
    (f"/v1/models/{MODEL}/labels/{MISSING_LABEL}:predict", '{ "instances": ["x", "y"] }',
     "Unrecognized servable version label"),
    (f"/v1/models/{MODEL}:predict", '{ "signature_name": 100 }',
     "'signature_name' key must be a string value."),
])
def test_predict_request_errors(port, path, body, message):
    status, text = error(port, "POST", path, body)
    assert status == 400 and message in text, text   # IsInvalidArgument


def test_predict_request_error_messages_in_full(port):
    path = f"/v1/models/{MODEL}:predict"
    assert error(port, "POST", path, "instances = [1, 2]") == (
        400, "JSON Parse error: Invalid value. at offset: 0")
    assert error(port, "POST", path, '{ "instances": ["x", "y"] }') == (
        400, 'JSON Value: "x" Type: String is not of expected type: float')
    assert error(port, "POST", path, '{ "signature_name": 100 }') == (
        400, 'JSON Value: {"signature_name": 100} not formatted correctly. '
             "'signature_name' key must be a string value.")


# -- TEST_F(HttpRestApiHandlerTest, Predict) ---------------------------------------------------
@pytest.mark.parametrize("path,body,expected", [
    # latest version; the signature says [-1, 1] but, as in TF Serving, the graph decides
    (f"/v1/models/{MODEL}:predict", '{"instances": [[1.0, 2.0], [3.0, 4.0]]}',
     {"predictions": [[2.5, 3.0], [3.5, 4.0]]}),
    (f"/v1/models/{MODEL}/versions/{VERSION}:predict", '{"instances": [1.0, 2.0]}',
     {"predictions": [2.5, 3.0]}),
    (f"/v1/models/{MODEL}/labels/{LABEL}:predict", '{"instances": [1.0, 2.0]}',
     {"predictions": [2.5, 3.0]}),
    (f"/v1/models/{MODEL}/versions/{VERSION}:predict",
     '{"signature_name": "serving_default", "instances": [3.0, 4.0]}',
     {"predictions": [3.5, 4.0]}),
    (f"/v1/models/{MODEL}/versions/{VERSION}:predict",
     '{"signature_name": "serving_default", "inputs": [3.0, 4.0]}', {"outputs": [3.5, 4.0]}),
])
def test_predict(port, path, body, expected):
    assert ok(port, "POST", path, body) == expected


# -- TEST_F(HttpRestApiHandlerTest, Regress) ---------------------------------------------------
@pytest.mark.parametrize("spec", ["", f"/versions/{VERSION}", f"/labels/{LABEL}"])
def test_regress(port, spec):
    assert ok(port, "POST", f"/v1/models/{MODEL}{spec}:regress",
              '{"signature_name": "regress_x_to_y", "examples": [ { "x": 80.0 } ] }') == {
        "results": [42]}


# -- TEST_F(HttpRestApiHandlerTest, Classify) --------------------------------------------------
@pytest.mark.parametrize("spec,x,score", [("", 20.0, 12), (f"/labels/{LABEL}", 10.0, 7)])
def test_classify(port, spec, x, score):
    assert ok(port, "POST", f"/v1/models/{MODEL}{spec}:classify",
              f'{{"signature_name": "classify_x_to_y", "examples": [ {{ "x": {x} }} ] }}') == {
        "results": [[["", score]]]}


# -- TEST_F(HttpRestApiHandlerTest, GetStatus) -------------------------------------------------
@pytest.mark.parametrize("spec", ["", f"/versions/{VERSION}", f"/labels/{LABEL}"])
def test_get_status(port, spec):
    assert ok(port, "GET", f"/v1/models/{MODEL}{spec}") == {"model_version_status": [
        {"version": "123", "state": "AVAILABLE",
         "status": {"error_code": "OK", "error_message": ""}}]}


# -- TEST_F(HttpRestApiHandlerTest, GetModelMetadata) ------------------------------------------
def test_get_model_metadata(port):
    with open(os.path.join(DATA, f"{MODEL}_metadata.json")) as f:
        expected = json.load(f)
    assert ok(port, "GET", f"/v1/models/{MODEL}/metadata") == expected


# -- beyond upstream: URL-encoded names are decoded after routing, as TF Serving does ----------
def test_encoded_name_and_label_are_decoded_after_matching(port):
    # %2F cannot split a route: the name decodes to "../../etc" and is just not a model
    assert error(port, "GET", "/v1/models/..%2F..%2Fetc") == (
        404, "Could not find any versions of model ../../etc")
    encoded = "".join(f"%{b:02X}" for b in LABEL.encode())
    assert ok(port, "POST", f"/v1/models/{MODEL}/labels/{encoded}:predict",
              '{"instances": [1.0]}') == {"predictions": [2.5]}


def test_content_after_the_json_value_is_ignored(port):
    # TF Serving parses with rapidjson's kParseStopWhenDoneFlag: the first value is the body
    assert ok(port, "POST", f"/v1/models/{MODEL}:predict",
              '{"instances": [1.0, 2.0]} trailing bytes') == {"predictions": [2.5, 3.0]}
