"""The portal's billing action: from /org/settings/plan to the Stripe Customer Portal."""
from django.contrib import messages
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from billing import services
from levqor.errors import APIError
from tenants.portal import portal_page


@require_POST
@portal_page("plan:change")
def manage(request):
    try:
        url = services.portal_session(tenant_id=request.tenant.id, actor=request.principal.actor,
                                      return_url=request.build_absolute_uri(reverse("org-plan")))
    except APIError as exc:
        messages.error(request, exc.message)
        return redirect("org-plan")
    return redirect(url)
