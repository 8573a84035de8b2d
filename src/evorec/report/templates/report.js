// Renders the report's figures (Plotly, embedded above) and the per-user pages on demand.
(function () {
  "use strict";
  var figures = JSON.parse(document.getElementById("evorec-figures").textContent);
  var config = { responsive: true, displaylogo: false };

  function render(div) {
    if (div.dataset.rendered) { Plotly.Plots.resize(div); return; }
    var spec = figures[div.id];
    if (!spec) { return; }
    Plotly.newPlot(div, spec.data, spec.layout, config);
    div.dataset.rendered = "1";
  }

  function renderAll(root) {
    root.querySelectorAll(".plot").forEach(render);
  }

  document.querySelectorAll("main > section:not(#users)").forEach(renderAll);

  var select = document.getElementById("user-select");
  var input = document.getElementById("user-input");
  var message = document.getElementById("user-message");
  if (!select) { return; }

  function show(id) {
    var found = null;
    document.querySelectorAll(".user-page").forEach(function (page) {
      var match = page.dataset.user === id;
      page.hidden = !match;
      if (match) { found = page; }
    });
    if (found) {
      message.textContent = "";
      select.value = id;
      renderAll(found);
      if (location.hash !== "#user=" + encodeURIComponent(id)) { history.replaceState(null, "", "#user=" + encodeURIComponent(id)); }
    } else {
      message.textContent = "User " + id + " is not in this report (add it with: evorec report ... --user " + id + ").";
    }
  }

  select.addEventListener("change", function () { show(select.value); });
  document.getElementById("user-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var id = input.value.trim();
    if (id) { show(id); }
  });
  var m = /^#user=(.+)$/.exec(location.hash);
  show(m ? decodeURIComponent(m[1]) : select.value);
})();
