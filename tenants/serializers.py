from rest_framework import serializers

from levqor.serializer_fields import StrictCharField

from tenants.models import ROLES, Tenant, TenantKey


class SignupSerializer(serializers.Serializer):
    name = StrictCharField(max_length=200)
    slug = StrictCharField(max_length=64)
    plan = StrictCharField(max_length=32)
    region = StrictCharField(max_length=64, required=False, allow_blank=True)
    admin_email = serializers.EmailField()


class TenantSerializer(serializers.ModelSerializer):
    domain = serializers.SerializerMethodField()

    class Meta:
        model = Tenant
        fields = ["id", "slug", "name", "region", "plan", "status", "isolation", "domain", "created_at", "provision_ms"]

    def get_domain(self, tenant):
        domain = next((d for d in tenant.domains.all() if d.is_primary), None)
        return domain.domain if domain else None


class KeySerializer(serializers.ModelSerializer):
    """A key as lists show it: prefix, never the hash."""

    class Meta:
        model = TenantKey
        fields = ["id", "prefix", "name", "role", "created_at", "created_by", "last_used_at", "revoked_at"]


class KeyCreateSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=ROLES)
    name = StrictCharField(max_length=100, required=False, allow_blank=True, default="")
