"""The org admin portal (/org): server-rendered pages over the same services and policy
checks as the API. A denied action shows the engine's rationale."""
from __future__ import annotations

import functools

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from compliance.models import Alert, AuditEvent
from levqor.errors import APIError
from policy.engine import decide
from policy.enforce import authorize
from tenants import members as member_services
from tenants import services
from tenants.context import tenant_context
from tenants.models import ROLES, Invitation, Tenant, TenantUser
from tenants.principals import Principal

SESSION_KEY = "levqor_tenant_id"
SSO_SESSION_KEY = "levqor_sso_tenants"  # tenants whose IdP this session signed in through



def portal_page(action: str):
    """Resolve the member's current organization, enter its context, check `action`."""

    def decorate(view):
        @login_required
        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            memberships = member_services.memberships_of(request.user)
            chosen = request.session.get(SESSION_KEY)
            member = next((m for m in memberships if m.tenant_id == chosen), None)
            if member is None:
                if len(memberships) == 1:
                    member = memberships[0]
                    request.session[SESSION_KEY] = member.tenant_id
                else:
                    return redirect("org-choose")
            tenant = member.tenant
            if tenant.status != Tenant.Status.ACTIVE:
                return render(request, "portal/denied.html", {"tenant": tenant, "rationale": f"{tenant.name} is {tenant.status}."},
                              status=403)
            if _sso_required(request, tenant, member):
                messages.error(request, f"{tenant.name} requires signing in through its identity provider.")
                return redirect("org-sso-login", slug=tenant.slug)
            principal = Principal(kind="user", actor=f"user:{request.user.email or request.user.get_username()}",
                                  tenant_id=tenant.id, role=member.role, user_id=request.user.pk,
                                  workflow_scope=member.workflow_scope)
            with tenant_context(tenant) as ctx:
                request.tenant, request.member, request.principal = ctx, member, principal
                try:
                    authorize(tenant_id=ctx.id, plan=ctx.plan, role=member.role, action=action, actor=principal.actor,
                              resource=request.path, request=request, features=ctx.granted)
                except APIError as exc:
                    return render(request, "portal/denied.html", {"tenant": tenant, "rationale": exc.message}, status=403)
                return view(request, *args, **kwargs)

        return wrapper

    return decorate


def _sso_required(request, tenant, member) -> bool:
    """Enforced SSO: members (owners excepted, as the break-glass path) must have signed in
    through the tenant's IdP in this session."""
    from tenants.models import TenantSSO

    if member.role == "owner":
        return False
    enforced = TenantSSO.dangerously_all_tenants.filter(tenant=tenant, enabled=True, enforced=True).exists()
    return enforced and tenant.id not in request.session.get(SSO_SESSION_KEY, [])


def posted_id(request, name: str) -> int:
    """A numeric id from a form; 0 (matching nothing) for anything else (`isdigit` alone
    also passes digits like "²" that int() refuses)."""
    raw = request.POST.get(name, "")
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 18 else 0


def _can(request, action: str) -> bool:
    return decide(plan=request.tenant.plan, role=request.member.role, action=action).allowed


def _act(request, action: str, fn, success: str):
    """Run a portal action through the policy engine; deny or failure -> a message with why."""
    try:
        authorize(tenant_id=request.tenant.id, plan=request.tenant.plan, role=request.member.role, action=action,
                  actor=request.principal.actor, resource=request.path, request=request)
        result = fn()
    except APIError as exc:
        messages.error(request, exc.message)
        return None
    if success:
        messages.success(request, success)
    return result


def _usage_bars(ctx) -> list[dict]:
    from policy import quotas

    usage = quotas.usage(ctx.id, ctx.limits)
    bars = []
    for metric, figures in usage["metrics"].items():
        percent = min(100.0, figures["percent"] or 0.0)
        bars.append({"metric": metric.replace("_", " "), "used": figures["used"], "limit": figures["limit"],
                     "percent": round(percent, 1), "level": "high" if percent >= 80 else "ok"})
    return bars


@login_required
def choose(request):
    memberships = member_services.memberships_of(request.user)
    if request.method == "POST":
        wanted = request.POST.get("tenant_id", "")
        if any(str(m.tenant_id) == wanted for m in memberships):
            request.session[SESSION_KEY] = int(wanted)
            return redirect("org-home")
        messages.error(request, "You are not a member of that organization.")
    return render(request, "portal/choose.html", {"memberships": memberships})


@portal_page("tenant:read")
def home(request):
    from runtime.deploy import recent_deploys

    ctx = request.tenant
    tenant = Tenant.objects.prefetch_related("domains").get(pk=ctx.id)
    new_key = request.session.pop("levqor_new_key", None)  # shown once
    return render(request, "portal/home.html", {
        "tenant": tenant, "ctx": ctx, "member": request.member, "usage": _usage_bars(ctx),
        "members": TenantUser.objects.select_related("user").order_by("created_at")[:10],
        "events": AuditEvent.objects.order_by("-seq")[:8] if _can(request, "audit:read") else None,
        "alerts": Alert.objects.filter(tenant_id=ctx.id, audience=Alert.Audience.TENANT, resolved_at__isnull=True)[:5],
        "new_key": new_key, "deploys": recent_deploys(ctx.id),
        "can": {name: _can(request, action) for name, action in (
            ("rotate", "keys:rotate"), ("invite", "members:invite"), ("integrity", "integrity:run"),
            ("evidence", "evidence:generate"), ("redeploy", "deploy:redeploy"))},
    })


@require_POST
@portal_page("tenant:read")
def rotate_keys(request):
    tenant = Tenant.objects.get(pk=request.tenant.id)
    result = _act(request, "keys:rotate", lambda: services.keys_rotate(tenant=tenant, actor=request.principal.actor),
                  "Every earlier key is revoked. Copy the new owner key now: it is shown once.")
    if result:
        request.session["levqor_new_key"] = result[1]
    return redirect("org-home")


@require_POST
@portal_page("tenant:read")
def run_integrity(request):
    from compliance.integrity import integrity_run

    tenant = Tenant.objects.get(pk=request.tenant.id)
    run = _act(request, "integrity:run", lambda: integrity_run(tenant=tenant, actor=request.principal.actor), "")
    if run:
        failed = [r["check"] for r in run.results if r["status"] == "fail"]
        (messages.success if run.status != "fail" else messages.error)(
            request, f"Integrity Pack: {run.status}" + (f" (failed: {', '.join(failed)})" if failed else ""))
    return redirect("org-home")


@require_POST
@portal_page("tenant:read")
def generate_evidence(request):
    from datetime import timedelta

    from django.utils import timezone

    from compliance import evidence

    tenant = Tenant.objects.get(pk=request.tenant.id)
    until = timezone.now()
    _act(request, "evidence:generate",
         lambda: evidence.evidence_request(tenant=tenant, since=until - timedelta(days=30), until=until,
                                           actor=request.principal.actor),
         "Evidence PDF for the last 30 days requested; it appears under Audit when ready.")
    return redirect("org-home")


@portal_page("audit:read")
def audit_log(request):
    from compliance.models import EvidenceReport

    events = AuditEvent.objects.order_by("-seq")
    chosen = request.GET.get("event", "")
    if chosen:
        events = events.filter(event=chosen)
    page = Paginator(events, 25).get_page(request.GET.get("page"))
    from compliance.events import EVENTS
    from compliance import evidence

    reports = [(r, evidence.download_token(r) if r.status == "ready" else None)
               for r in EvidenceReport.objects.all()[:5]]
    return render(request, "portal/audit.html", {"page": page, "event_names": sorted(EVENTS), "chosen": chosen,
                                                 "reports": reports})


@portal_page("members:read")
def members(request):
    tenant = Tenant.objects.get(pk=request.tenant.id)
    if request.method == "POST":
        op = request.POST.get("op")
        if op == "invite":
            invitation = _act(request, "members:invite", lambda: member_services.member_invite(
                tenant=tenant, email=request.POST.get("email", ""), role=request.POST.get("role", ""),
                actor=request.principal.actor, base_url=request.build_absolute_uri("/")[:-1]), "")
            if invitation:
                messages.success(request, f"Invitation sent to {invitation.email}. Link (valid 7 days): "
                                          f"{request.build_absolute_uri(member_services.invitation_link(invitation))}")
        elif op in ("role", "remove"):
            member = TenantUser.objects.select_related("user").filter(pk=posted_id(request, "member_id")).first()
            if member is None:
                messages.error(request, "No such member.")
            elif op == "role":
                _act(request, "members:update", lambda: member_services.member_change_role(
                    member=member, role=request.POST.get("role", ""), actor=request.principal.actor),
                    f"{member.user.email} is now {request.POST.get('role')}.")
            else:
                _act(request, "members:remove", lambda: member_services.member_remove(
                    member=member, actor=request.principal.actor), f"{member.user.email} was removed.")
        return redirect("org-members")
    return render(request, "portal/members.html", {
        "members": TenantUser.objects.select_related("user").order_by("created_at"),
        "invitations": Invitation.objects.filter(accepted_at__isnull=True, revoked_at__isnull=True).order_by("-created_at"),
        "roles": ROLES, "can_invite": _can(request, "members:invite"), "can_update": _can(request, "members:update"),
        "can_remove": _can(request, "members:remove"),
    })


@portal_page("plan:read")
def plan(request):
    from billing.services import billing_summary

    return render(request, "portal/plan.html", {
        "ctx": request.tenant, "billing": billing_summary(request.tenant.id), "can_change": _can(request, "plan:change"),
        "limits": sorted(request.tenant.limits.items()), "features": sorted(request.tenant.features)})


@login_required
def accept_invitation(request, token: str):
    invitation = member_services.invitation_for_token(token)
    if invitation is None:
        return render(request, "portal/invite.html", {"error": "This invitation link is invalid or has expired."},
                      status=400)
    if request.method == "POST":
        try:
            member_services.invitation_accept(invitation=invitation, user=request.user)
        except APIError as exc:
            return render(request, "portal/invite.html", {"invitation": invitation, "error": exc.message},
                          status=exc.status_code)
        request.session[SESSION_KEY] = invitation.tenant_id
        messages.success(request, f"Welcome to {invitation.tenant.name}.")
        return redirect("org-home")
    return render(request, "portal/invite.html", {"invitation": invitation})


@portal_page("sso:read")
def sso_settings(request):
    import json

    from tenants import sso
    from tenants.models import TenantSSO

    tenant = Tenant.objects.get(pk=request.tenant.id)
    config = TenantSSO.objects.filter(tenant=tenant).first()
    if request.method == "POST":
        op = request.POST.get("op")
        if op == "save":
            try:
                group_roles = json.loads(request.POST.get("group_roles") or "{}")
            except ValueError:
                group_roles = None
            if not isinstance(group_roles, dict):
                messages.error(request, 'Group mapping must be a JSON object like {"admins": "admin"}.')
            else:
                _act(request, "sso:configure", lambda: sso.sso_configure(
                    tenant=tenant, protocol=request.POST.get("protocol", "oidc"),
                    issuer=request.POST.get("issuer", "").strip(),
                    client_id=request.POST.get("client_id", "").strip(),
                    client_secret=request.POST.get("client_secret") or None,
                    idp_metadata_xml=(request.FILES["metadata"].read().decode("utf-8", "replace")
                                      if "metadata" in request.FILES else request.POST.get("idp_metadata_xml", "")),
                    default_role=request.POST.get("default_role", "viewer"), group_roles=group_roles,
                    actor=request.principal.actor), "SSO settings saved. Test the connection, then enable.")
        elif op == "test" and config:
            result = _act(request, "sso:configure", lambda: sso.sso_test(config=config, actor=request.principal.actor), "")
            if result is not None:
                (messages.success if result["ok"] else messages.error)(
                    request, f"Connection OK: {result['issuer']} publishes {result['keys']} signing keys."
                    if result["ok"] else f"Connection failed: {result['error']}")
        elif op in ("enable", "disable") and config:
            _act(request, "sso:configure", lambda: sso.sso_enable(
                config=config, enabled=op == "enable", enforced=bool(request.POST.get("enforced")),
                actor=request.principal.actor), f"SSO {op}d.")
        return redirect("org-sso")
    login_url = request.build_absolute_uri(f"/org/sso/{tenant.slug}")
    saml_urls = {"acs": request.build_absolute_uri(f"/accounts/saml/{tenant.slug}/acs/"),
                 "metadata": request.build_absolute_uri(f"/accounts/saml/{tenant.slug}/metadata/")}
    return render(request, "portal/sso.html", {
        "config": config, "roles": ROLES, "can_configure": _can(request, "sso:configure"),
        "rationale": decide(plan=request.tenant.plan, role=request.member.role, action="sso:configure").rationale,
        "group_roles": json.dumps(config.group_roles) if config else "{}", "login_url": login_url,
        "callback_url": request.build_absolute_uri(f"/accounts/oidc/tenant-{tenant.slug}/login/callback/"),
        "saml_urls": saml_urls,
    })


def sso_login(request, slug: str):
    """/org/sso/<slug>: the tenant's sign-in page (posts to allauth's OIDC login)."""
    from tenants.sso import config_for_provider

    config = config_for_provider(f"tenant-{slug}")
    if config is None or not config.enabled:
        return render(request, "portal/sso_login.html", {"unavailable": True}, status=404)
    action = (f"/accounts/saml/{slug}/login/" if config.protocol == "saml" else f"/accounts/oidc/tenant-{slug}/login/")
    return render(request, "portal/sso_login.html", {"tenant": config.tenant, "action": action})


@portal_page("limits:read")
def limits(request):
    from policy import quotas

    ctx = request.tenant
    return render(request, "portal/limits.html", {"ctx": ctx, "usage": _usage_bars(ctx),
                                                  "limits": sorted(ctx.limits.items()),
                                                  "period": quotas.usage(ctx.id, ctx.limits)})


@portal_page("streams:read")
def streams(request):
    from compliance import streams as stream_services
    from levqor.timeparse import parse_when
    from compliance.models import AuditStream

    if request.method == "POST":
        op = request.POST.get("op")
        if op == "create":
            _act(request, "streams:configure", lambda: stream_services.stream_create(
                tenant_id=request.tenant.id, name=request.POST.get("name", ""), kind=request.POST.get("kind", ""),
                url=request.POST.get("url", ""), secret=request.POST.get("secret", ""), actor=request.principal.actor),
                "Stream added: it sends every event from now on.")
        else:
            stream = AuditStream.objects.filter(pk=posted_id(request, "stream_id")).first()
            if stream is None:
                messages.error(request, "No such stream.")
            elif op == "replay":
                since = parse_when(request.POST.get("since", ""))
                if since is None:
                    messages.error(request, "Give the replay start as a date and time (YYYY-MM-DDTHH:MM).")
                else:
                    _act(request, "streams:configure", lambda: stream_services.stream_replay(
                        stream=stream, since=since, actor=request.principal.actor), f"{stream.name} will re-send from {since:%Y-%m-%d %H:%M}.")
            elif op == "delete":
                _act(request, "streams:configure", lambda: stream_services.stream_delete(
                    stream=stream, actor=request.principal.actor), f"{stream.name} removed.")
        return redirect("org-streams")
    return render(request, "portal/streams.html", {
        "streams": AuditStream.objects.order_by("pk"), "kinds": AuditStream.Kind.choices,
        "can_configure": _can(request, "streams:configure"),
        "rationale": decide(plan=request.tenant.plan, role=request.member.role, action="streams:configure").rationale})
