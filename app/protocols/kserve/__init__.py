"""KServe's gRPC Open Inference Protocol: the .proto and the stubs generated from it.

Generated code only (``make grpc-stubs``); app/protocols/open_inference_grpc.py is the codec and
app/api/grpc_server.py the server.
"""
