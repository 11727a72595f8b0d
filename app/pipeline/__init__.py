"""The one pipeline for reading digits, one module per step: uploads (request body -> images),
decode (bytes -> gray levels), mnist_form and prepare (-> a 28x28 digit as MNIST was made),
batcher (concurrent requests share one forward pass), answer (-> JSON); errors are its refusals."""

import cv2

# Images are prepared one at a time on each worker's forward thread; OpenCV's own thread pool
# would only compete with the other workers for the cores.
cv2.setNumThreads(0)
