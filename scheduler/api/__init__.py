"""The HTTP API: app, operator routes, security middleware, tokens and roles."""
