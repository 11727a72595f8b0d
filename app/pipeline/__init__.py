"""The one pipeline for reading digits, one module per step: uploads (request body -> images),
decode (bytes -> gray levels), mnist_form and prepare (-> a 28x28 digit as MNIST was made),
batcher (concurrent requests share one forward pass), answer (-> JSON); errors are its refusals."""
