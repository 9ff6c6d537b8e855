/* neuroon-gateway attribution script: include once on every storefront page.
 *
 *   <script src="https://GATEWAY/v1/attribution.js" async
 *           data-platform="shopify|other" data-shop-id="shop_…" data-cart-token="…"></script>
 *
 * It copies the Neuroon widget's `neuroon_clicks` cookie to where the order webhook will find it:
 * - Shopify: into the cart attribute `_neuroon_clicks` (POST /cart/update.js), which Shopify
 *   copies to the order's note_attributes;
 * - elsewhere: POST {cartToken, clicks} to the gateway's /v1/attribution, with the cart token the
 *   page gives (data-cart-token, or window.neuroonCartToken set later by the page).
 * It sends again only when the cookie changes, and never throws into the page.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script) return;
  var gateway = script.src.replace(/\/v1\/attribution\.js(\?.*)?$/, "");
  var platform = script.getAttribute("data-platform") || (window.Shopify && window.Shopify.shop ? "shopify" : "other");
  var shopId = script.getAttribute("data-shop-id");
  var lastSent = null;
  var busy = false;

  function cookieValue() {
    var match = document.cookie.match(/(?:^|;\s*)neuroon_clicks=([^;]*)/);
    if (!match) return null;
    try { return decodeURIComponent(match[1]); } catch (e) { return match[1]; }
  }

  function cartToken() {
    return script.getAttribute("data-cart-token") || window.neuroonCartToken || null;
  }

  function send(value) {
    if (platform === "shopify") {
      return fetch("/cart/update.js", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "Accept": "application/json" },
        body: JSON.stringify({ attributes: { _neuroon_clicks: value } })
      });
    }
    var token = cartToken();
    if (!token) return null;
    var url = gateway + "/v1/attribution" + (shopId ? "?shopId=" + encodeURIComponent(shopId) : "");
    return fetch(url, {
      method: "POST",
      mode: "cors",
      credentials: "omit",
      keepalive: true,
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ cartToken: token, clicks: value })
    });
  }

  function sync() {
    var value = cookieValue();
    if (!value || value === lastSent || busy) return;
    var pending;
    try { pending = send(value); } catch (e) { return; }
    if (!pending) return;
    busy = true;
    pending.then(function (response) {
      // A 4xx other than 429 will not change on a resend of the same value: wait for a new one.
      var final = response.status >= 400 && response.status < 500 && response.status !== 429;
      if (response.ok || final) lastSent = value;
    }, function () {}).then(function () { busy = false; });
  }

  sync();
  window.addEventListener("neuroon:cart-update", sync);
  document.addEventListener("visibilitychange", sync);
  window.setInterval(sync, 3000);
  window.neuroonAttributionSync = sync;
})();
