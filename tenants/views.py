"""Server-rendered pages of the tenancy core: the landing page and the owner bootstrap."""
from __future__ import annotations

from django.contrib.auth import get_user_model, login
from django.contrib.auth.password_validation import validate_password
from django.core import signing
from django.core.exceptions import ValidationError
from django.db import transaction
from django.shortcuts import render

from compliance import audit
from tenants.models import Tenant, TenantUser

BOOTSTRAP_SALT = "levqor.bootstrap"
BOOTSTRAP_MAX_AGE = 7 * 24 * 3600


def landing(request):
    return render(request, "landing.html")


def multitenancy_docs(request):
    """/docs/multitenancy: the isolation model and the RBAC matrix, rendered from the policy
    file itself so that the page cannot drift from what the engine enforces."""
    from policy.engine import ROLES, get_policy

    policy = get_policy()
    plans = list(policy.plans)
    rows = []
    for action, spec in policy.actions.items():
        if action.startswith("platform:"):
            continue
        rows.append({"action": action, "feature": spec.get("feature", ""),
                     "roles": [policy.decide(plan=plans[-1], role=role, action=action).allowed for role in ROLES],
                     "plans": [plan for plan in plans if not spec.get("feature")
                               or spec["feature"] in policy.plans[plan]["features"]]})
    return render(request, "docs/multitenancy.html", {"roles": ROLES, "rows": rows, "plans": [
        {"name": name, "limits": sorted(spec["limits"].items()), "features": spec["features"]}
        for name, spec in policy.plans.items()]})


def bootstrap(request, token: str):
    """The link a signup returns: the admin sets a password and becomes the tenant's owner."""
    try:
        data = signing.loads(token, salt=BOOTSTRAP_SALT, max_age=BOOTSTRAP_MAX_AGE)
        tenant = Tenant.objects.get(pk=data["tenant"], status=Tenant.Status.ACTIVE)
    except (signing.BadSignature, KeyError, TypeError, Tenant.DoesNotExist):
        return render(request, "tenants/bootstrap.html", {"invalid": True}, status=400)
    email = data["email"]
    User = get_user_model()
    if TenantUser.dangerously_all_tenants.filter(tenant=tenant, user__email__iexact=email).exists():
        return render(request, "tenants/bootstrap.html", {"used": True, "tenant": tenant}, status=410)
    error = None
    if request.method == "POST":
        password = request.POST.get("password", "")
        try:
            validate_password(password)
        except ValidationError as exc:
            error = " ".join(exc.messages)
        else:
            with transaction.atomic():
                user = User.objects.filter(email__iexact=email).first() or User(username=email, email=email)
                user.set_password(password)
                user.save()
                TenantUser(tenant=tenant, user=user, role="owner").save(force_insert=True)
                audit.record("member.invited", tenant_id=tenant.pk, actor=f"user:{email}",
                             metadata={"email": email, "role": "owner", "via": "signup bootstrap"}, request=request)
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return render(request, "tenants/bootstrap.html", {"done": True, "tenant": tenant})
    return render(request, "tenants/bootstrap.html", {"tenant": tenant, "email": email, "error": error},
                  status=400 if error else 200)
