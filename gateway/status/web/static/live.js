// Live overview: replace #overview with each server-sent fragment. The verdict
// (#verdict, an aria-live region) is kept in place and its content changed only
// when it changed, so a screen reader announces a new verdict once, not every update.
// The header's "updated HH:MM:SS" (server-rendered) becomes "updated N s ago".
(function () {
  var stamp = document.querySelector("#updated time");
  var at = stamp ? Number(stamp.getAttribute("data-epoch")) * 1000 : 0;
  function tick() {
    if (!stamp) { return; }
    var ago = Math.max(0, Math.round((Date.now() - at) / 1000));
    stamp.textContent = ago + " s ago";
  }
  if (stamp) { tick(); window.setInterval(tick, 1000); }
  var el = document.getElementById("overview");
  if (!el || !window.EventSource) { return; }
  function update(html) {
    var next = document.createElement("template");
    next.innerHTML = html;
    var oldVerdict = document.getElementById("verdict");
    var newVerdict = next.content.getElementById("verdict");
    var kids = Array.prototype.slice.call(next.content.childNodes);
    var i = newVerdict ? kids.indexOf(newVerdict) : -1;
    if (!oldVerdict || oldVerdict.parentNode !== el || i < 0) { el.replaceChildren(next.content); return; }
    if (oldVerdict.innerHTML !== newVerdict.innerHTML) { oldVerdict.innerHTML = newVerdict.innerHTML; }
    oldVerdict.className = newVerdict.className;
    oldVerdict.setAttribute("data-verdict", newVerdict.getAttribute("data-verdict"));
    // The live region itself never leaves the page: only what is around it is replaced.
    Array.prototype.slice.call(el.childNodes).forEach(function (n) { if (n !== oldVerdict) { n.remove(); } });
    kids.slice(0, i).forEach(function (n) { el.insertBefore(n, oldVerdict); });
    kids.slice(i + 1).forEach(function (n) { el.appendChild(n); });
  }
  var source = new EventSource(el.getAttribute("data-live"));
  source.addEventListener("overview", function (e) { update(e.data); at = Date.now(); tick(); });
  source.addEventListener("alive", function () { at = Date.now(); tick(); });
  source.addEventListener("logout", function () { window.location.href = "/login"; });
})();
