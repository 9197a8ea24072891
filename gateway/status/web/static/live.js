// Live overview: replace #overview with each server-sent fragment.
(function () {
  var el = document.getElementById("overview");
  if (!el || !window.EventSource) { return; }
  var source = new EventSource(el.getAttribute("data-live"));
  source.addEventListener("overview", function (e) { el.innerHTML = e.data; });
  source.addEventListener("logout", function () { window.location.href = "/login"; });
})();
