// Starts Swagger UI on the API's OpenAPI document (app/api/docs.py). A file of its own rather than an
// inline script, so that the page's Content-Security-Policy can allow scripts from this server only.
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.specUrl,
    domNode: root,
    deepLinking: true,
    // Left to its default, Swagger UI sends the document to validator.swagger.io and shows the verdict as
    // an image from there: a request off this server, and the whole document handed to a third party.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
})();
