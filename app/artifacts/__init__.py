"""What training hands to serving: the weights file and its card (loaded and checked against
their SHA-256), and the S4 net's architecture as torch-free data (the expected tensors, GET
/model's layer table), with the torch net's own summary to hold it to."""
