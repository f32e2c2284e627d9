"""How the OpenAPI schema (drf-spectacular) describes Levqor's API keys."""
from drf_spectacular.extensions import OpenApiAuthenticationExtension


class APIKeyScheme(OpenApiAuthenticationExtension):
    target_class = "tenants.authentication.APIKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "bearerFormat": "lvq_<prefix>_<secret>",
                "description": "A tenant key (bound to one tenant and role) or a platform staff key (lvqs_…). "
                               "Tenant routes also need X-Tenant-ID or the tenant's host name."}
