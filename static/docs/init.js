// Gatehouse playground: Swagger UI served from the binary (swagger-ui-dist 5.35.0, see
// SWAGGER-UI-LICENSE). No request leaves this origin: the spec is /openapi.json, validation
// against swagger.io is off.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    tryItOutEnabled: false,
    persistAuthorization: false,
    withCredentials: true,
    displayRequestDuration: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
