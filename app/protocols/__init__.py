"""Wire protocols other clients speak, without their transport: the Open Inference Protocol
(KServe v2, Triton): its model and types, shared by every transport, and its REST codec."""
