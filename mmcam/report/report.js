// mmcam report: buttons and sliders switch the pictures each view shows. No libraries, no requests.
"use strict";

// Show a class's, word's or answer's map (and the evidence against it, where explained).
function choose(button) {
  const view = button.closest(".view");
  for (const other of view.querySelectorAll(".choice")) {
    other.setAttribute("aria-pressed", String(other === button));
  }
  const label = button.dataset.label;
  const shown = view.querySelector("img.shown");
  shown.src = button.dataset.map;
  shown.alt = `Map of '${label}' over the image`;
  view.querySelector(".shown-label").textContent = label;
  const counter = view.querySelector(".counter");
  if (counter) {
    counter.hidden = !button.dataset.counter;
    if (button.dataset.counter) {
      const against = button.dataset.counterLabel;
      counter.querySelector("img").src = button.dataset.counter;
      counter.querySelector("img").alt = `Map of '${against}', the evidence against '${label}', over the image`;
      counter.querySelector("figcaption").textContent = against;
    }
  }
  view.querySelector(".explanation").textContent = button.dataset.text || "";
  if (button.dataset.weights) weighQuestion(view, JSON.parse(button.dataset.weights));
}

// Shade each question word by its weight for the chosen answer (orange: for it, blue: against it).
function weighQuestion(view, weights) {
  view.querySelectorAll(".qword").forEach((word, i) => {
    const weight = weights[i] ?? 0;
    word.style.setProperty("--weight", Math.abs(weight).toFixed(3));
    word.classList.toggle("against", weight < 0);
    word.title = `weight ${weight.toFixed(2)}`;
  });
}

// Show step `step` of an RL episode: frame, map, facts and the chart's cursor.
function showStep(view, step) {
  view.steps ??= JSON.parse(view.querySelector("script.steps").textContent);
  const shown = view.steps[step];
  view.querySelector("img.frame").src = shown.frame;
  view.querySelector("img.frame").alt = `Frame of step ${step}`;
  view.querySelector("img.shown").src = shown.map;
  view.querySelector("img.shown").alt = `Map of the chosen action '${shown.action}' at step ${step} over the frame`;
  for (const fact of view.querySelectorAll("[data-fact]")) {
    fact.textContent = shown[fact.dataset.fact] || "–";
  }
  const against = view.querySelector(".step-against");
  against.hidden = !shown.against;
  if (shown.against) against.querySelector("img").src = shown.against;
  for (const other of view.querySelectorAll("img.other")) {
    other.src = shown.others[Number(other.dataset.k)];
    other.alt = other.alt.replace(/at step \d+/, `at step ${step}`);
  }
  view.querySelector(".step-number").textContent = `${step} / ${view.steps.length - 1}`;
  const chart = view.querySelector(".chart");
  if (chart) {
    const x = Number(chart.dataset.left) + step * Number(chart.dataset.step);
    chart.querySelector(".cursor").setAttribute("x1", x);
    chart.querySelector(".cursor").setAttribute("x2", x);
  }
}

for (const button of document.querySelectorAll(".choice")) {
  for (const event of ["click", "focus", "mouseenter"]) {
    button.addEventListener(event, () => choose(button));
  }
}
for (const slider of document.querySelectorAll(".scrubber")) {
  slider.addEventListener("input", () => showStep(slider.closest(".view"), Number(slider.value)));
}
