"""Train the S4 net on MNIST: `python -m training --help`."""
