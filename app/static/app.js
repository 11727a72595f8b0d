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
const READ_URL = "read";
const FEEDBACK_URL = "feedback";

const drawing = document.getElementById("drawing");
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

// A canvas to draw on with a mouse, pen or finger; ``onStroke`` runs each time the pen lifts.
function makePad(canvas, onStroke) {
  const context = canvas.getContext("2d");
  // The pointer drawing the current stroke (a second finger is ignored) and where it last was.
  let strokePointer = null;
  let lastPoint = null;
  // MNIST strokes are about a tenth of the digit's size: the canvas is one digit tall.
  const strokeWidth = () => canvas.height * STROKE_FRACTION;

  // The canvas is scaled by CSS (phones), so map client pixels to canvas pixels.
  function canvasPoint(event) {
    const box = canvas.getBoundingClientRect();
    return {
      x: ((event.clientX - box.left) * canvas.width) / box.width,
      y: ((event.clientY - box.top) * canvas.height) / box.height,
    };
  }

  function strokeTo(point) {
    context.strokeStyle = INK;
    context.lineWidth = strokeWidth();
    context.lineCap = "round";
    context.lineJoin = "round";
    context.beginPath();
    context.moveTo(lastPoint.x, lastPoint.y);
    context.lineTo(point.x, point.y);
    context.stroke();
    lastPoint = point;
  }

  // A tap without movement would be a zero-length line, which canvas does not paint: draw a dot.
  function dot(point) {
    context.fillStyle = INK;
    context.beginPath();
    context.arc(point.x, point.y, strokeWidth() / 2, 0, 2 * Math.PI);
    context.fill();
    lastPoint = point;
  }

  canvas.addEventListener("pointerdown", (event) => {
    if (event.button !== 0 || strokePointer !== null) return;
    event.preventDefault();
    strokePointer = event.pointerId;
    // Keep receiving the stroke when the pointer leaves the canvas mid-line.
    canvas.setPointerCapture(event.pointerId);
    dot(canvasPoint(event));
  });

  canvas.addEventListener("pointermove", (event) => {
    if (event.pointerId === strokePointer) strokeTo(canvasPoint(event));
  });

  function endStroke(event) {
    if (event.pointerId !== strokePointer) return;
    strokePointer = null;
    onStroke();
  }

  canvas.addEventListener("pointerup", endStroke);
  canvas.addEventListener("pointercancel", endStroke);

  return {
    canvasPoint,
    clear() {
      strokePointer = null;
      context.fillStyle = PAPER;
      context.fillRect(0, 0, canvas.width, canvas.height);
    },
  };
}

const pad = makePad(drawing, () => {
  const request = startRequest();
  drawing.toBlob((png) => send(request, png, "canvas.png", "your drawing"), "image/png");
});

function clearDrawing() {
  pad.clear();
}

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

// POST one image to ``url``; the first entry of the answer's ``list`` ("predictions" from
// /predict, "numbers" from /read), or the error to show instead.
async function postImage(url, image, filename, list) {
  const form = new FormData();
  form.append("file", image, filename);
  try {
    const response = await fetch(url, { method: "POST", body: form });
    const body = await response.json().catch(() => null);
    if (!response.ok) return { error: errorText(response, body) };
    if (body && body[list] && body[list].length) return { answer: body[list][0] };
    return { error: `The server's answer had no ${list} in it.` };
  } catch (failure) {
    return { error: `Could not reach the server: ${failure.message}` };
  }
}

async function send(request, image, filename, source) {
  const { answer: prediction, error } = await postImage(PREDICT_URL, image, filename, "predictions");
  if (request !== latestRequest) return;
  reading.setAttribute("aria-busy", "false");
  if (error) showError(error);
  else {
    lastDigit = { image, filename, predicted: prediction.digit };
    showPrediction(prediction, source);
  }
}

// Corrections: POST /feedback with the picture that was read and what it really shows -----------

// The picture the newest answer is about, kept so a correction can send it again.
let lastDigit = null;
let lastNumber = null;

// POST a correction; the text to show: a thank-you, or the error to fix.
async function sendCorrection(upload, field, value) {
  const form = new FormData();
  form.append("file", upload.image, upload.filename);
  form.append(field, value);
  if (String(upload.predicted) !== "") form.append("predicted", String(upload.predicted));
  form.append("source", "page");
  try {
    const response = await fetch(FEEDBACK_URL, { method: "POST", body: form });
    const body = await response.json().catch(() => null);
    if (response.status === 201) return { ok: true, text: `Thank you: stored as ${value}.` };
    return { ok: false, text: errorText(response, body) };
  } catch (failure) {
    return { ok: false, text: `Could not reach the server: ${failure.message}` };
  }
}

function showThanks(element, { ok, text }) {
  element.textContent = text;
  element.classList.toggle("failed", !ok);
  element.hidden = false;
}

function resetCorrection(toggle, panel, thanks) {
  toggle.setAttribute("aria-expanded", "false");
  panel.hidden = true;
  thanks.hidden = true;
}

function toggleCorrection(toggle, panel) {
  const open = toggle.getAttribute("aria-expanded") !== "true";
  toggle.setAttribute("aria-expanded", String(open));
  panel.hidden = !open;
}

const wrong = document.getElementById("wrong");
const digitPicker = document.getElementById("digit-picker");
const thanks = document.getElementById("thanks");
for (let value = 0; value <= 9; value += 1) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = value;
  button.setAttribute("aria-label", `It is a ${value}`);
  button.addEventListener("click", async () => {
    const upload = lastDigit;
    if (!upload) return;
    digitPicker.hidden = true;
    wrong.setAttribute("aria-expanded", "false");
    const outcome = await sendCorrection(upload, "digit", String(value));
    if (upload === lastDigit) showThanks(thanks, outcome);
  });
  digitPicker.append(button);
}
wrong.addEventListener("click", () => toggleCorrection(wrong, digitPicker));

// Showing the answer -------------------------------------------------------------------------

function showError(text) {
  lastDigit = null;
  result.hidden = true;
  message.textContent = text;
  message.hidden = false;
  statusLine.textContent = "The image could not be read.";
}

function showPrediction(prediction, source) {
  resetCorrection(wrong, digitPicker, thanks);
  message.hidden = true;
  digit.textContent = prediction.digit;
  statusLine.textContent =
    `Read ${source} as ${prediction.digit}, probability ${percent(prediction.probability)}.`;
  fillBars(bars, prediction.probabilities, prediction.digit);
  showModelInput(prediction.model_input);
  result.hidden = false;
}

function fillBars(items, probabilities, top) {
  probabilities.forEach((probability, value) => {
    const bar = items[value];
    bar.classList.toggle("top", value === top);
    bar.querySelector(".bar-fill").style.width = percent(probability, 2);
    bar.querySelector(".bar-value").textContent = percent(probability);
    bar.setAttribute("aria-label", `${value}: ${percent(probability)}`);
  });
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
  lastDigit = null;
  result.hidden = true;
  message.hidden = true;
  statusLine.textContent = "No digit yet.";
}

document.getElementById("clear").addEventListener("click", clearDrawing);
document.getElementById("reset").addEventListener("click", reset);

// Number mode: several digits on a wide canvas, read by POST /read ------------------------------

const numberSection = document.getElementById("number-mode");
const numberDrawing = document.getElementById("number-drawing");
const numberBoxes = document.getElementById("number-boxes");
const numberStatus = document.getElementById("number-status");
const numberMessage = document.getElementById("number-message");
const numberResult = document.getElementById("number-result");
const numberList = document.getElementById("number-digits");
const digitDetail = document.getElementById("digit-detail");
const numberBars = buildBars(document.getElementById("number-bars"));
const BOX_COLOUR = "#3b9eff";
const CHOSEN_BOX_COLOUR = "#f59e0b";

let latestNumberRequest = 0;
let numberDigits = []; // the newest answer's digits, left to right

const numberPad = makePad(numberDrawing, () => {
  latestNumberRequest += 1;
  const request = latestNumberRequest;
  numberSection.setAttribute("aria-busy", "true");
  numberStatus.textContent = "Reading…";
  numberDrawing.toBlob((png) => readNumber(request, png), "image/png");
});

async function readNumber(request, png) {
  const { answer: number, error } = await postImage(READ_URL, png, "number.png", "numbers");
  if (request !== latestNumberRequest) return;
  numberSection.setAttribute("aria-busy", "false");
  if (error) showNumberError(error);
  else {
    lastNumber = { image: png, filename: "number.png", predicted: number.text };
    showNumber(number);
  }
}

const numberWrong = document.getElementById("number-wrong");
const numberFix = document.getElementById("number-fix");
const numberRight = document.getElementById("number-right");
const numberThanks = document.getElementById("number-thanks");
numberWrong.addEventListener("click", () => {
  toggleCorrection(numberWrong, numberFix);
  if (!numberFix.hidden) numberRight.focus();
});
numberFix.addEventListener("submit", async (event) => {
  event.preventDefault();
  const upload = lastNumber;
  if (!upload || !numberFix.reportValidity()) return;
  numberFix.hidden = true;
  numberWrong.setAttribute("aria-expanded", "false");
  const outcome = await sendCorrection(upload, "text", numberRight.value.trim());
  if (upload === lastNumber) showThanks(numberThanks, outcome);
});

function showNumberError(text) {
  lastNumber = null;
  numberDigits = [];
  drawBoxes(-1);
  numberResult.hidden = true;
  numberMessage.textContent = text;
  numberMessage.hidden = false;
  numberStatus.textContent = "The drawing could not be read.";
}

function showNumber(number) {
  resetCorrection(numberWrong, numberFix, numberThanks);
  numberRight.value = number.text;
  numberDigits = number.digits;
  numberMessage.hidden = true;
  document.getElementById("number-text").textContent = number.text;
  numberStatus.textContent =
    `Read your drawing as ${number.text}, probability ${percent(number.probability)}.` +
    (number.needs_review ? " Not sure: please check it." : "");
  numberList.replaceChildren();
  numberDigits.forEach((digit, index) => {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = `${digit.digit} · ${percent(digit.probability)}`;
    button.setAttribute("aria-label", `digit ${index + 1}: ${digit.digit}, ${percent(digit.probability)}`);
    for (const type of ["mouseenter", "focus", "click"]) {
      button.addEventListener(type, () => showDigitDetail(index));
    }
    item.append(button);
    numberList.append(item);
  });
  digitDetail.hidden = true;
  drawBoxes(-1);
  numberResult.hidden = false;
}

// Each digit's box over the drawing, in the canvas's pixels (the picture /read was sent).
function drawBoxes(chosen) {
  const context = numberBoxes.getContext("2d");
  context.clearRect(0, 0, numberBoxes.width, numberBoxes.height);
  context.font = "bold 28px system-ui, sans-serif";
  numberDigits.forEach((digit, index) => {
    const [x, y, width, height] = digit.box;
    context.strokeStyle = context.fillStyle = index === chosen ? CHOSEN_BOX_COLOUR : BOX_COLOUR;
    context.lineWidth = index === chosen ? 6 : 3;
    context.strokeRect(x, y, width, height);
    context.fillText(String(digit.digit), x + 4, Math.max(28, y - 6));
  });
}

function showDigitDetail(index) {
  const digit = numberDigits[index];
  document.getElementById("digit-detail-heading").textContent =
    `Digit ${index + 1} of ${numberDigits.length}: ${digit.digit}, probability ${percent(digit.probability)}`;
  fillBars(numberBars, digit.probabilities, digit.digit);
  numberList.querySelectorAll("button").forEach((button, other) => {
    button.classList.toggle("chosen", other === index);
  });
  drawBoxes(index);
  digitDetail.hidden = false;
}

// Pointing at a box (a mouse or pen hovering, not drawing) shows that digit's probabilities.
numberDrawing.addEventListener("pointermove", (event) => {
  if (event.buttons !== 0 || !numberDigits.length) return;
  const point = numberPad.canvasPoint(event);
  const index = numberDigits.findIndex(({ box: [x, y, width, height] }) =>
    point.x >= x && point.x <= x + width && point.y >= y && point.y <= y + height);
  if (index >= 0) showDigitDetail(index);
});

function clearNumber() {
  latestNumberRequest += 1; // drop any answer still on its way
  numberPad.clear();
  lastNumber = null;
  numberDigits = [];
  drawBoxes(-1);
  numberSection.setAttribute("aria-busy", "false");
  numberResult.hidden = true;
  numberMessage.hidden = true;
  numberStatus.textContent = "No number yet.";
}

document.getElementById("number-clear").addEventListener("click", clearNumber);

function setMode(mode) {
  document.getElementById("digit-mode").hidden = mode !== "digit";
  numberSection.hidden = mode !== "number";
  document.getElementById("mode-digit").setAttribute("aria-pressed", String(mode === "digit"));
  document.getElementById("mode-number").setAttribute("aria-pressed", String(mode === "number"));
}

document.getElementById("mode-digit").addEventListener("click", () => setMode("digit"));
document.getElementById("mode-number").addEventListener("click", () => setMode("number"));

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
clearNumber();
loadModelFacts();
