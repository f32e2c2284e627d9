"""Client date-times: what the API accepts and stores (found by the API fuzzer: an offset
of +16:00 is valid ISO 8601 and valid Python, but PostgreSQL refused it with a 500)."""
from datetime import timezone

from levqor.timeparse import parse_when
from tests.conftest import client_for


def test_offsets_are_normalised_to_utc_and_junk_is_none():
    assert parse_when("2000-01-01T00:00:00+16:00").isoformat() == "1999-12-31T08:00:00+00:00"
    assert parse_when("2026-01-01T10:00:00").tzinfo == timezone.utc
    for junk in ("", "yesterday", "2026-13-01T00:00:00", "2026-01-01T00:61:00", 42, None, "9" * 80):
        assert parse_when(junk) is None


def test_evidence_request_with_an_extreme_offset_is_accepted_not_a_500(make_tenant):
    tenant, key = make_tenant()
    response = client_for(key, tenant).post("/api/org/evidence", {"since": "1999-01-01T00:00:00+00:00",
                                                                  "until": "2000-01-01T00:00:00+16:00"}, format="json")
    assert response.status_code == 202
