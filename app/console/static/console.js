// Drumbeat console: small enhancements over pages that work without script.
// - [data-autosubmit] selects submit their form on change;
// - [data-confirm] buttons ask first;
// - [data-check-all] ticks every row checkbox of its form;
// - a step form shows only the fields of its kind, and previews its template for a chosen contact
//   (POST to its data-preview URL, which answers an HTML fragment rendered by the server).
(function () {
  "use strict";

  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target.matches("[data-autosubmit]")) target.form.submit();
    if (target.matches("[data-check-all]")) {
      target.form.querySelectorAll('input[type="checkbox"][name]').forEach(function (box) {
        box.checked = target.checked;
      });
    }
    if (target.matches("[data-kind]")) showKind(target.form);
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-confirm]");
    if (button && !window.confirm(button.getAttribute("data-confirm"))) event.preventDefault();
  });

  function kindOf(form) {
    var field = form.querySelector('[name="kind"]');
    return field ? field.value : "";
  }

  function showKind(form) {
    var kind = kindOf(form);
    form.querySelectorAll("[data-kinds]").forEach(function (part) {
      part.hidden = part.getAttribute("data-kinds").split(" ").indexOf(kind) < 0;
    });
    preview(form);
  }

  var timers = new WeakMap();

  function preview(form) {
    var output = form.querySelector("[data-preview-output]");
    if (!output || ["sms", "email"].indexOf(kindOf(form)) < 0) return;
    clearTimeout(timers.get(form));
    timers.set(form, setTimeout(function () {
      fetch(form.getAttribute("data-preview"), {
        method: "POST",
        body: new URLSearchParams(new FormData(form)),
        credentials: "same-origin",
      }).then(function (response) {
        return response.ok ? response.text() : Promise.reject(response.status);
      }).then(function (fragment) {
        output.innerHTML = fragment;
      }).catch(function () {
        output.textContent = "Preview unavailable.";
      });
    }, 250));
  }

  document.addEventListener("input", function (event) {
    var form = event.target.form;
    if (form && form.hasAttribute("data-preview")) preview(form);
  });

  document.querySelectorAll("form[data-preview]").forEach(showKind);
})();
