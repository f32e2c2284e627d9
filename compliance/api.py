"""/api/org/streams: the tenant's SIEM streams (enterprise feature `audit_stream`)."""
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response

from compliance import streams
from compliance.models import AuditStream
from levqor.errors import APIError
from levqor.timeparse import parse_when
from tenants.api_base import TenantAPIView
from tenants.context import current_tenant


def _stream_json(stream: AuditStream) -> dict:
    # The secret is write-only: never returned.
    return {"id": stream.pk, "name": stream.name, "kind": stream.kind, "url": stream.url, "state": stream.state,
            "cursor_seq": stream.cursor_seq, "failures": stream.failures, "last_error": stream.last_error,
            "last_delivered_at": stream.last_delivered_at, "created_at": stream.created_at}


def _body(request) -> dict:
    if not isinstance(request.data, dict):
        raise APIError("invalid_input", "The body must be a JSON object.")
    return request.data


STREAM_CREATE = inline_serializer("StreamCreate", {
    "name": serializers.CharField(), "kind": serializers.ChoiceField(choices=AuditStream.Kind.values),
    "url": serializers.URLField(), "secret": serializers.CharField()})


class OrgStreams(TenantAPIView):
    policy_actions = {"GET": "streams:read", "POST": "streams:configure"}

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request):
        return Response({"results": [_stream_json(s) for s in AuditStream.objects.order_by("pk")]})

    @extend_schema(request=STREAM_CREATE, responses={201: OpenApiTypes.OBJECT})
    def post(self, request):
        body = _body(request)
        stream = streams.stream_create(tenant_id=current_tenant().id, name=body.get("name"), kind=body.get("kind"),
                                       url=body.get("url"), secret=body.get("secret"), actor=request.principal.actor)
        return Response(_stream_json(stream), status=status.HTTP_201_CREATED)


class OrgStreamDetail(TenantAPIView):
    policy_actions = {"GET": "streams:read", "DELETE": "streams:configure"}

    def _stream(self, stream_id) -> AuditStream:
        stream = AuditStream.objects.filter(pk=stream_id).first()
        if stream is None:
            raise APIError("not_found", "No such stream.", status_code=404)
        return stream

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request, stream_id):
        return Response(_stream_json(self._stream(stream_id)))

    @extend_schema(responses={204: None})
    def delete(self, request, stream_id):
        streams.stream_delete(stream=self._stream(stream_id), actor=request.principal.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


class OrgStreamReplay(OrgStreamDetail):
    policy_actions = {"POST": "streams:configure"}

    @extend_schema(request=inline_serializer("StreamReplay", {"since": serializers.DateTimeField()}),
                   responses=OpenApiTypes.OBJECT)
    def post(self, request, stream_id):
        raw = _body(request).get("since")
        since = parse_when(raw)
        if since is None:
            raise APIError("invalid_input", "since must be an ISO 8601 date-time", details={"field": "since"})
        stream = streams.stream_replay(stream=self._stream(stream_id), since=since, actor=request.principal.actor)
        return Response(_stream_json(stream))


class OrgIntegrity(TenantAPIView):
    """POST runs the Integrity Pack now; GET lists recent runs."""

    policy_actions = {"GET": "evidence:read", "POST": "integrity:run"}

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request):
        from compliance.models import IntegrityRun

        runs = IntegrityRun.objects.all()[:20]
        return Response({"results": [{"id": r.pk, "status": r.status, "results": r.results, "actor": r.actor,
                                      "created_at": r.created_at} for r in runs]})

    @extend_schema(request=None, responses={201: OpenApiTypes.OBJECT})
    def post(self, request):
        from compliance.integrity import integrity_run
        from tenants.models import Tenant

        run = integrity_run(tenant=Tenant.objects.get(pk=current_tenant().id), actor=request.principal.actor)
        return Response({"id": run.pk, "status": run.status, "results": run.results}, status=status.HTTP_201_CREATED)


def _report_json(request, report) -> dict:
    from compliance import evidence

    data = {"id": report.pk, "status": report.status, "period_start": report.period_start,
            "period_end": report.period_end, "sha256": report.sha256, "head_seq": report.head_seq,
            "head_hash": report.head_hash, "error": report.error, "created_at": report.created_at}
    if report.status == report.Status.READY:
        data["download_url"] = request.build_absolute_uri(f"/evidence/{evidence.download_token(report)}")
        data["download_expires_in"] = evidence.DOWNLOAD_SECONDS
    return data


class OrgEvidence(TenantAPIView):
    policy_actions = {"GET": "evidence:read", "POST": "evidence:generate"}

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request):
        from compliance.models import EvidenceReport

        return Response({"results": [_report_json(request, r) for r in EvidenceReport.objects.all()[:20]]})

    @extend_schema(request=inline_serializer("EvidenceRequest", {"since": serializers.DateTimeField(),
                                                                 "until": serializers.DateTimeField(required=False)}),
                   responses={202: OpenApiTypes.OBJECT})
    def post(self, request):
        from django.utils import timezone

        from compliance import evidence
        from tenants.models import Tenant

        body = _body(request)
        since = parse_when(body.get("since"))
        until = parse_when(body["until"]) if body.get("until") is not None else timezone.now()
        if since is None or until is None or since >= until:
            raise APIError("invalid_input", "since (and optional until) must be ISO 8601 date-times, since < until")
        report = evidence.evidence_request(tenant=Tenant.objects.get(pk=current_tenant().id), since=since, until=until,
                                           actor=request.principal.actor)
        return Response(_report_json(request, report), status=status.HTTP_202_ACCEPTED)


class OrgEvidenceDetail(TenantAPIView):
    policy_actions = {"GET": "evidence:read"}

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request, report_id):
        from compliance.models import EvidenceReport

        report = EvidenceReport.objects.filter(pk=report_id).first()
        if report is None:
            raise APIError("not_found", "No such report.", status_code=404)
        return Response(_report_json(request, report))


def evidence_download(request, token: str):
    """GET /evidence/<token>: the signed, expiring link is the credential."""
    from django.http import FileResponse

    from compliance import audit, evidence
    from levqor.errors import error_response
    from tenants.models import Tenant

    report = evidence.report_for_token(token)
    if report is None:
        return error_response(404, "link_invalid", "This download link is invalid or has expired.")
    tenant = Tenant.objects.get(pk=report.tenant_id)
    try:
        handle = evidence.region_storage(tenant.region).open(report.path, "rb")
    except FileNotFoundError:  # storage lost or moved the file: say so, and generate it again
        return error_response(410, "report_missing", "This report's file is no longer stored; generate a new one.")
    audit.record("data.exported", tenant_id=tenant.id, actor=f"link:evidence-{report.pk}", request=request,
                 metadata={"what": "evidence", "report_id": report.pk})
    return FileResponse(handle, content_type="application/pdf", as_attachment=True,
                        filename=f"evidence-{tenant.slug}-{report.pk}.pdf")
