/* Liên thông: loaded right after vega-embed in the Data Docs pages the audit app serves.
   GX's charts call vegaEmbed(el, spec, {actions: false}); vega then compiles its expressions with Function(),
   which the app's Content-Security-Policy (no 'unsafe-eval') refuses. With `ast: true` vega-embed uses its
   bundled expression interpreter instead; this makes that the default for every call. */
(function () {
  "use strict";
  var embed = window.vegaEmbed;
  if (typeof embed !== "function") {
    return;
  }
  var withAst = function (el, spec, options) {
    return embed(el, spec, Object.assign({ ast: true }, options || {}));
  };
  Object.assign(withAst, embed);
  window.vegaEmbed = withAst;
})();
