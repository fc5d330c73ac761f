"""Where a served request's time goes for one runtime, in process (p50 µs, rounds alternate).

    PYTHONPATH=CHECKOUT python benchmarks/bench_serving_path.py --model_base_path /tmp/qs/digits \\
        --model_name digits --runtime litert [--rounds 3 --calls 300]

Loads the model with ``create_server(runtime=...)`` (no sockets) and times, in turns, each layer
of the request path around the model call: the interpreter alone (LiteRT: ``set_tensor``,
``invoke``, ``get_tensor``), the runner, ``Runtime.call`` (the in-process figure the served
overhead is measured against), ``Servable.call`` and ``Servable.run`` (validation, metrics),
the REST handler without HTTP (JSON body -> numpy -> model -> JSON answer) and the gRPC
Predict handler without grpcio (``TensorProto`` in and out), and the REST body decoding alone.
Run it with ``PYTHONPATH`` set to each checkout to compare two versions of the code.
"""

import argparse
import json
import os
import sys
import time

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model_base_path", required=True)
    p.add_argument("--model_name", default="model")
    p.add_argument("--runtime", default="litert")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--calls", type=int, default=300)
    args = p.parse_args(argv)
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from tfdeploy.serving import create_server, grpc_service, rest_json
    from tfdeploy.serving.rest import RestApi

    name = args.model_name
    server = create_server(model_name=name, model_base_path=args.model_base_path, port=None,
                           rest_api_port=None, file_system_poll_wait_seconds=0,
                           runtime=args.runtime).start()
    try:
        servable = server.repository.get(name)
        (input_name, spec), = servable.signature_defs["serving_default"].inputs.items()
        shape = [1] + [max(1, d.size) for d in spec.tensor_shape.dim[1:]]
        image = np.random.default_rng(0).integers(0, 256, size=shape).astype(np.float32)
        body = json.dumps({"instances": image.tolist()}).encode()
        feeds = {input_name: image}
        api = RestApi(server.repository, server.metrics)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = name
        request.inputs[input_name].CopyFrom(tf.make_tensor_proto(image))
        grpc_api = grpc_service.PredictionServicer(server.repository, server.metrics)
        path = f"/v1/models/{name}:predict"
        rt = servable.runtime
        pieces = {}
        if rt is not None and rt.name == "litert":
            interp = rt._runners[0]._interpreter
            index = interp.get_input_details()[0]["index"]
            outs = [d["index"] for d in interp.get_output_details()]

            def raw():
                interp.set_tensor(index, image)
                interp.invoke()
                return [interp.get_tensor(i) for i in outs]
            pieces["interpreter_alone"] = raw
            pieces["runner_run"] = lambda: rt._runners[0].run(image)
        if rt is not None:
            pieces["runtime_call"] = lambda: rt.call("serving_default", feeds)
        pieces.update({
            "servable_call": lambda: servable.call("serving_default", feeds),
            "servable_run": lambda: servable.run("", feeds),
            "rest_handler_no_http": lambda: api.handle("POST", path, lambda: body),
            "grpc_handler_no_grpcio": lambda: grpc_api._predict(request, None)
            .SerializeToString(),
            "rest_body_to_numpy": lambda: rest_json.parse_predict(
                api._parse_body(body), servable.input_dtypes("")),
        })
        rounds = {k: [] for k in pieces}
        for _ in range(args.rounds):
            for k, f in pieces.items():
                for _ in range(20):
                    f()
                times = []
                for _ in range(args.calls):
                    start = time.perf_counter()
                    f()
                    times.append(time.perf_counter() - start)
                rounds[k].append(round(float(np.median(times)) * 1e6, 1))
    finally:
        server.stop(grace=1)
    import tfdeploy

    out = {"code": os.path.dirname(os.path.dirname(os.path.abspath(tfdeploy.__file__))),
           "runtime": servable.runtime_report["serving"], "body_bytes": len(body),
           "p50_us": {k: float(np.median(v)) for k, v in rounds.items()},
           "rounds_us": rounds, "load_average": os.getloadavg()}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
