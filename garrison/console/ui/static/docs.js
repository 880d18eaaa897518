/* Start Swagger UI on /api/v1/docs (a file, not an inline script: the page's CSP allows no inline
 * script). The OpenAPI document needs a token: the web UI's sign-in token is used, and without one
 * the browser is sent to sign in first. */
"use strict";
(function () {
  const token = sessionStorage.getItem("garrison.token");
  const here = location.pathname;
  if (!token) {
    location.replace(`/login?next=${encodeURIComponent(here)}`);
    return;
  }
  window.ui = SwaggerUIBundle({
    url: "/api/v1/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    requestInterceptor: (req) => {
      if (!req.headers.Authorization && !req.headers.authorization) req.headers.Authorization = `Bearer ${token}`;
      return req;
    },
    responseInterceptor: (resp) => {
      if (resp.status === 401 && resp.url.endsWith("/openapi.json")) {
        sessionStorage.removeItem("garrison.token");
        location.replace(`/login?next=${encodeURIComponent(here)}`);
      }
      return resp;
    },
  });
})();
