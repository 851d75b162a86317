"""gRPC pods and clients for Headway's integration tests, with grpcio (PyPI).

    grpc_peer.py serve NAME HOST PORT [FAULT_DIR]
        A pod: every answer names it. Methods of headway.Echo (raw bytes, no protobuf schema needed):
        Unary (an optional "sleep:MS" request delays the answer), ServerStream (the request is a count),
        ClientStream (answers "NAME:COUNT"), Bidi (answers each message "NAME:MESSAGE"); plus
        grpc.health.v1.Health, SERVING for "" and "headway.Echo". SIGTERM stops it with a 5 s grace
        (server.stop(grace)); it prints "ready" once it serves.
        With FAULT_DIR (scripts/chaos), files there turn faults on while they exist: unary answers and
        stream messages take 2 ms, 40 ms with "slow"; "sick" makes the health service answer NOT_SERVING.

    grpc_peer.py call TARGET KIND COUNT [DEADLINE_MS] [PAUSE_MS] [SLEEP_MS]
        A client: COUNT calls of KIND (unary, server, client, bidi) on ONE channel, one after another, each
        PAUSE_MS apart (unary calls ask the pod to take SLEEP_MS). Prints one JSON object: calls per pod,
        failures per status code, their details, and the seconds it took.
"""

import json
import os
import signal
import sys
import threading
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVICE = "headway.Echo"


class FaultDirectory:
    """The faults scripts/chaos turns on for one pod, as files in a directory (a stat per call)."""

    def __init__(self, path):
        self.path = path

    def latency(self):
        if self.path is None:
            return 0
        return 0.04 if os.path.exists(os.path.join(self.path, "slow")) else 0.002

    def is_sick(self):
        return self.path is not None and os.path.exists(os.path.join(self.path, "sick"))


class FaultAwareHealth(health.HealthServicer):
    def __init__(self, faults):
        super().__init__()
        self.faults = faults

    def Check(self, request, context):
        if self.faults.is_sick():
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING)
        return super().Check(request, context)


def serve(name, host, port, fault_dir=None):
    faults = FaultDirectory(fault_dir)

    def unary(request, context):
        if request.startswith(b"sleep:"):
            time.sleep(int(request[6:]) / 1000)
        if latency := faults.latency():
            time.sleep(latency)
        return name.encode()

    def server_stream(request, context):
        for index in range(int(request or b"3")):
            if latency := faults.latency():
                time.sleep(latency)
            yield f"{name}:{index}".encode()

    def client_stream(requests, context):
        return f"{name}:{sum(1 for _ in requests)}".encode()

    def bidi(requests, context):
        for message in requests:
            yield name.encode() + b":" + message

    handlers = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((handlers,))
    checker = FaultAwareHealth(faults)
    checker.set("", health_pb2.HealthCheckResponse.SERVING)
    checker.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    server.add_insecure_port(f"{host}:{port}")
    server.start()
    stopped = threading.Event()

    def stop(*_):
        # Graceful: new calls are refused, calls in flight get up to 5 s to finish.
        server.stop(5).wait()
        stopped.set()

    signal.signal(signal.SIGTERM, stop)
    print("ready", flush=True)
    while not stopped.wait(0.2):
        pass


def call(target, kind, count, deadline_ms, pause_ms, sleep_ms):
    pods, failures, details = {}, {}, []
    timeout = deadline_ms / 1000 if deadline_ms else 10
    started = time.monotonic()
    with grpc.insecure_channel(target) as channel:
        methods = {
            "unary": channel.unary_unary(f"/{SERVICE}/Unary"),
            "server": channel.unary_stream(f"/{SERVICE}/ServerStream"),
            "client": channel.stream_unary(f"/{SERVICE}/ClientStream"),
            "bidi": channel.stream_stream(f"/{SERVICE}/Bidi"),
            # A method the pods do not serve: grpcio answers UNIMPLEMENTED (12) in a trailers-only response.
            "missing": channel.unary_unary(f"/{SERVICE}/Missing"),
        }
        for _ in range(count):
            try:
                if kind == "unary":
                    answers = [methods["unary"](b"sleep:%d" % sleep_ms if sleep_ms else b"", timeout=timeout)]
                elif kind == "server":
                    answers = list(methods["server"](b"3", timeout=timeout))
                    assert len(answers) == 3, answers
                elif kind == "missing":
                    answers = [methods["missing"](b"", timeout=timeout)]
                elif kind == "client":
                    answers = [methods["client"](iter([b"a", b"b", b"c", b"d"]), timeout=timeout)]
                    assert answers[0].endswith(b":4"), answers
                else:
                    answers = list(methods["bidi"](iter([b"a", b"b"]), timeout=timeout))
                    assert [answer.split(b":")[1] for answer in answers] == [b"a", b"b"], answers
                pod = answers[0].split(b":")[0].decode()
                pods[pod] = pods.get(pod, 0) + 1
            except grpc.RpcError as error:
                code = error.code().name
                failures[code] = failures.get(code, 0) + 1
                details.append(error.details())
            if pause_ms > 0:
                time.sleep(pause_ms / 1000)
    elapsed = time.monotonic() - started
    print(json.dumps({"pods": pods, "failures": failures, "details": details, "seconds": elapsed}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] if len(sys.argv) > 5 else None)
    else:
        numbers = [int(argument) for argument in sys.argv[5:]] + [0, 0, 0]
        call(sys.argv[2], sys.argv[3], int(sys.argv[4]), *numbers[:3])
