"""Where and how a forward pass runs: ONNX Runtime on the CPU (its graph built from the weights
without torch), PyTorch on a GPU or on request, and the device choice, which imports torch only
when it could answer "cuda"."""
