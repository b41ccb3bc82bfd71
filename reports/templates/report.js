// Filters and copy buttons; no framework, no network.
(function () {
  "use strict";
  const $ = (s, root) => (root || document).querySelector(s);
  const $$ = (s, root) => Array.from((root || document).querySelectorAll(s));
  const norm = $("#filter-norm"), impl = $("#filter-impl"), status = $("#filter-status");
  const verdicts = $$("input[name=verdict]");

  function apply() {
    const wanted = new Set(verdicts.filter((box) => box.checked).map((box) => box.value));
    for (const el of $$("[data-filter]")) {
      const d = el.dataset;
      const away = (norm.value && d.norm && d.norm !== norm.value) ||
        (impl.value && d.impl && !d.impl.split("|").includes(impl.value));
      const off = Boolean(d.verdict) && !wanted.has(d.verdict);
      el.classList.toggle("is-hidden", Boolean(away) || (off && d.filter !== "dim"));
      el.classList.toggle("is-dim", off && d.filter === "dim");
    }
    for (const group of $$("[data-group]")) {
      group.classList.toggle("is-hidden", !$(".item:not(.is-hidden)", group));
    }
    const items = $$(".item");
    const shown = items.filter((el) => !el.classList.contains("is-hidden")).length;
    status.textContent = shown + " of " + items.length + " findings, errors and divergences shown";
  }

  function only(values) {
    for (const box of verdicts) box.checked = values.includes(box.value);
    apply();
  }

  norm.addEventListener("change", apply);
  impl.addEventListener("change", apply);
  verdicts.forEach((box) => box.addEventListener("change", apply));
  $("#filter-problems").addEventListener("click", () => only(["finding", "error", "protocol error", "crashed", "timed out"]));
  $("#filter-reset").addEventListener("click", () => {
    norm.value = ""; impl.value = "";
    only(verdicts.map((box) => box.value));
  });
  for (const cell of $$("button.cell")) {
    cell.addEventListener("click", () => {
      norm.value = cell.dataset.norm; impl.value = cell.dataset.impl;
      apply();
      const target = $("#issues");
      target.scrollIntoView();
      target.focus({ preventScroll: true });
    });
  }

  function copied(button, ok) {
    const note = button.parentElement.querySelector(".copy-status");
    note.textContent = ok ? "Copied to the clipboard" : "Copy failed: select the text and copy it";
    setTimeout(() => { note.textContent = ""; }, 4000);
  }
  function fallback(text) {
    const area = document.createElement("textarea");
    area.value = text; area.setAttribute("readonly", ""); area.style.position = "fixed"; area.style.opacity = "0";
    document.body.appendChild(area); area.select();
    let ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    area.remove();
    return ok;
  }
  for (const button of $$("button.copy")) {
    button.addEventListener("click", () => {
      const text = document.getElementById(button.dataset.copy).textContent;
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(() => copied(button, true), () => copied(button, fallback(text)));
      } else {
        copied(button, fallback(text));
      }
    });
  }
  apply();
})();
