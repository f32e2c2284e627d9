"""/api/org/streams: the tenant's SIEM streams (enterprise feature `audit_stream`)."""
from django.utils.dateparse import parse_datetime
from rest_framework import status
from rest_framework.response import Response

from compliance import streams
from compliance.models import AuditStream
from levqor.errors import APIError
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


class OrgStreams(TenantAPIView):
    policy_actions = {"GET": "streams:read", "POST": "streams:configure"}

    def get(self, request):
        return Response({"results": [_stream_json(s) for s in AuditStream.objects.order_by("pk")]})

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

    def get(self, request, stream_id):
        return Response(_stream_json(self._stream(stream_id)))

    def delete(self, request, stream_id):
        streams.stream_delete(stream=self._stream(stream_id), actor=request.principal.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


class OrgStreamReplay(OrgStreamDetail):
    policy_actions = {"POST": "streams:configure"}

    def post(self, request, stream_id):
        raw = _body(request).get("since")
        since = parse_datetime(raw) if isinstance(raw, str) else None
        if since is None:
            raise APIError("invalid_input", "since must be an ISO 8601 date-time", details={"field": "since"})
        stream = streams.stream_replay(stream=self._stream(stream_id), since=since, actor=request.principal.actor)
        return Response(_stream_json(stream))
