// The draw-a-digit page: sends the drawing (or a chosen image) to POST /predict, the same API
// every other client uses, and shows the digit, the ten probabilities and the model's input.
"use strict";

// White ink on black, like MNIST itself, so the model's input looks like the drawing.
const INK = "#fff";
const PAPER = "#000";
// MNIST strokes are about a tenth of the digit's size; much thinner or thicker reads worse.
const STROKE_FRACTION = 0.1;
// Relative URLs, so the page also works behind a proxy that serves the app under a path prefix.
const PREDICT_URL = "predict?return_input=true";

const drawing = document.getElementById("drawing");
const pen = drawing.getContext("2d");
const fileInput = document.getElementById("file");
const dropZone = document.getElementById("drop-zone");
const reading = document.getElementById("reading");
const statusLine = document.getElementById("status");
const message = document.getElementById("message");
const result = document.getElementById("result");
const digit = document.getElementById("digit");
const modelInput = document.getElementById("model-input");
const bars = buildBars(document.getElementById("bars"));

// Answers can arrive out of order; only the newest request may change what the page shows.
let latestRequest = 0;
// The pointer drawing the current stroke (a second finger is ignored) and where it last was.
let strokePointer = null;
let lastPoint = null;

function buildBars(list) {
  return Array.from({ length: 10 }, (_, value) => {
    const item = document.createElement("li");
    item.innerHTML =
      '<span class="bar-label"></span><span class="bar-track"><span class="bar-fill"></span>' +
      '</span><span class="bar-value"></span>';
    item.querySelector(".bar-label").textContent = value;
    list.append(item);
    return item;
  });
}

function percent(probability, decimals = 1) {
  return `${(probability * 100).toFixed(decimals)}%`;
}

// Drawing ------------------------------------------------------------------------------------

function clearDrawing() {
  strokePointer = null;
  pen.fillStyle = PAPER;
  pen.fillRect(0, 0, drawing.width, drawing.height);
}

// The canvas is scaled by CSS (phones), so map client pixels to canvas pixels.
function canvasPoint(event) {
  const box = drawing.getBoundingClientRect();
  return {
    x: ((event.clientX - box.left) * drawing.width) / box.width,
    y: ((event.clientY - box.top) * drawing.height) / box.height,
  };
}

function strokeTo(point) {
  pen.strokeStyle = INK;
  pen.lineWidth = drawing.width * STROKE_FRACTION;
  pen.lineCap = "round";
  pen.lineJoin = "round";
  pen.beginPath();
  pen.moveTo(lastPoint.x, lastPoint.y);
  pen.lineTo(point.x, point.y);
  pen.stroke();
  lastPoint = point;
}

// A tap without movement would be a zero-length line, which canvas does not paint: draw a dot.
function dot(point) {
  pen.fillStyle = INK;
  pen.beginPath();
  pen.arc(point.x, point.y, (drawing.width * STROKE_FRACTION) / 2, 0, 2 * Math.PI);
  pen.fill();
  lastPoint = point;
}

drawing.addEventListener("pointerdown", (event) => {
  if (event.button !== 0 || strokePointer !== null) return;
  event.preventDefault();
  strokePointer = event.pointerId;
  // Keep receiving the stroke when the pointer leaves the canvas mid-line.
  drawing.setPointerCapture(event.pointerId);
  dot(canvasPoint(event));
});

drawing.addEventListener("pointermove", (event) => {
  if (event.pointerId === strokePointer) strokeTo(canvasPoint(event));
});

function endStroke(event) {
  if (event.pointerId !== strokePointer) return;
  strokePointer = null;
  const request = startRequest();
  drawing.toBlob((png) => send(request, png, "canvas.png", "your drawing"), "image/png");
}

drawing.addEventListener("pointerup", endStroke);
drawing.addEventListener("pointercancel", endStroke);

// Images from the picker or dropped on the zone ----------------------------------------------

function readFile(file) {
  if (file) send(startRequest(), file, file.name, file.name);
}

fileInput.addEventListener("change", () => {
  readFile(fileInput.files[0]);
  fileInput.value = ""; // so choosing the same file again reads it again
});

dropZone.addEventListener("dragover", (event) => {
  event.preventDefault();
  dropZone.classList.add("dragging");
});
dropZone.addEventListener("dragleave", () => dropZone.classList.remove("dragging"));
dropZone.addEventListener("drop", (event) => {
  event.preventDefault();
  dropZone.classList.remove("dragging");
  readFile(event.dataTransfer.files[0]);
});
// A file dropped beside the zone would otherwise make the browser leave the page to show it.
for (const type of ["dragover", "drop"]) {
  window.addEventListener(type, (event) => event.preventDefault());
}

// Talking to the API -------------------------------------------------------------------------

function startRequest() {
  latestRequest += 1;
  reading.setAttribute("aria-busy", "true");
  statusLine.textContent = "Reading…";
  return latestRequest;
}

function errorText(response, body) {
  const detail = body && body.detail;
  // The API's errors are {"detail": "<what to fix>"}; a proxy in between may answer otherwise.
  if (typeof detail === "string") return detail;
  return `The server answered ${response.status} ${response.statusText}.`;
}

async function send(request, image, filename, source) {
  const form = new FormData();
  form.append("file", image, filename);
  let prediction = null;
  let error = null;
  try {
    const response = await fetch(PREDICT_URL, { method: "POST", body: form });
    const body = await response.json().catch(() => null);
    if (!response.ok) error = errorText(response, body);
    else if (body && body.predictions && body.predictions.length) prediction = body.predictions[0];
    else error = "The server's answer had no prediction in it.";
  } catch (failure) {
    error = `Could not reach the server: ${failure.message}`;
  }
  if (request !== latestRequest) return;
  reading.setAttribute("aria-busy", "false");
  if (error) showError(error);
  else showPrediction(prediction, source);
}

// Showing the answer -------------------------------------------------------------------------

function showError(text) {
  result.hidden = true;
  message.textContent = text;
  message.hidden = false;
  statusLine.textContent = "The image could not be read.";
}

function showPrediction(prediction, source) {
  message.hidden = true;
  digit.textContent = prediction.digit;
  statusLine.textContent =
    `Read ${source} as ${prediction.digit}, probability ${percent(prediction.probability)}.`;
  prediction.probabilities.forEach((probability, value) => {
    const bar = bars[value];
    bar.classList.toggle("top", value === prediction.digit);
    bar.querySelector(".bar-fill").style.width = percent(probability, 2);
    bar.querySelector(".bar-value").textContent = percent(probability);
    bar.setAttribute("aria-label", `${value}: ${percent(probability)}`);
  });
  showModelInput(prediction.model_input);
  result.hidden = false;
}

function showModelInput(rows) {
  const image = new ImageData(28, 28);
  rows.flat().forEach((gray, pixel) => {
    image.data.set([gray, gray, gray, 255], pixel * 4);
  });
  modelInput.getContext("2d").putImageData(image, 0, 0);
}

function reset() {
  latestRequest += 1; // drop any answer still on its way
  clearDrawing();
  reading.setAttribute("aria-busy", "false");
  result.hidden = true;
  message.hidden = true;
  statusLine.textContent = "No digit yet.";
}

document.getElementById("clear").addEventListener("click", clearDrawing);
document.getElementById("reset").addEventListener("click", reset);

// The model panel ----------------------------------------------------------------------------

function showFacts(facts) {
  const list = document.getElementById("model-facts");
  list.replaceChildren();
  for (const [term, value] of facts) {
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = term;
    dd.append(value);
    list.append(dt, dd);
  }
}

function link(href, text) {
  const anchor = document.createElement("a");
  anchor.href = href;
  anchor.textContent = text;
  return anchor;
}

async function loadModelFacts() {
  try {
    const response = await fetch("model");
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const model = await response.json();
    const weights = model.weights;
    const accuracy = weights.test_accuracy;
    showFacts([
      ["Network", `${model.name}, ${model.layers.length} layers`],
      ["Parameters", model.total_params.toLocaleString("en")],
      ["Test accuracy", accuracy == null ? "not recorded" : `${accuracy.toFixed(2)}%`],
      ["Weights", weights.loaded ? `sha256 ${weights.sha256.slice(0, 12)}…` : `not loaded: ${weights.error}`],
      ["Details", link("model?format=text", "layer table")],
    ]);
  } catch (failure) {
    showFacts([["Status", `could not load /model (${failure.message})`]]);
  }
}

clearDrawing();
loadModelFacts();
