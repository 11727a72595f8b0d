"""A tutorial-style digit server: the baseline bench/serve.py compares the service against.

What a first FastAPI + PyTorch server usually looks like: the upload is read in an async
endpoint, resized to 28x28 and pushed through the model right there (blocking the event loop),
with torch's default thread count. Same net, same weights, same response field `digit`.

    S4_WEIGHTS=weights/s4net.safetensors uvicorn bench.baseline_server:app --port 8001
"""

import io
import os
from pathlib import Path

import torch
from fastapi import FastAPI, UploadFile
from PIL import Image

from app.artifacts.weights import load_weights
from app.model import net_from_tensors, normalize

model = net_from_tensors(
    load_weights(Path(os.environ.get("S4_WEIGHTS", "weights/s4net.safetensors"))).tensors
)
app = FastAPI()


@app.post("/predict")
async def predict(file: UploadFile):
    image = Image.open(io.BytesIO(await file.read())).convert("L").resize((28, 28))
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(1, 1, 28, 28)
    with torch.no_grad():
        probabilities = model(normalize(pixels)).exp()[0]
    return {"digit": int(probabilities.argmax()), "probability": float(probabilities.max())}
