"""The staff KPI page: every figure from known data, the CSV exports, who may see it."""
from __future__ import annotations

import csv
import dataclasses
import io
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from runtime import kpis, metrics
from runtime.models import Backup, MetricRollup
from tenants.models import Tenant


def _wednesday_noon():
    """A fixed point in a known weekday, in the past: the report's `now`."""
    now = timezone.now()
    monday = (now - timedelta(days=now.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
    wednesday = monday + timedelta(days=2, hours=12)
    return wednesday if wednesday <= now else wednesday - timedelta(weeks=1)


NOW = _wednesday_noon()
MONDAY = NOW - timedelta(days=2, hours=12)


def _backup(tenant, *, status="ok", age=timedelta(hours=1), restore=None):
    manifest = {"tables": []} if restore is None else {"tables": [], "restore": restore}
    backup = Backup.dangerously_all_tenants.create(tenant_id=tenant.id, region=tenant.region, isolation=tenant.isolation,
                                                   status=status, manifest_json=manifest)
    Backup.dangerously_all_tenants.filter(pk=backup.pk).update(created_at=NOW - age)


@pytest.fixture
def fleet(make_tenant):
    """Four tenants created across three weeks, with known traffic, backups and restores."""
    made = {}
    for name, created, provision_ms in (("a", NOW - timedelta(hours=26), 100), ("b", NOW - timedelta(hours=3), 300),
                                        ("c", NOW - timedelta(days=7), 200), ("d", NOW - timedelta(days=15), 400)):
        tenant, _ = make_tenant(slug=f"kpi-{name}")
        Tenant.objects.filter(pk=tenant.pk).update(created_at=created, provision_ms=provision_ms)
        made[name] = Tenant.objects.get(pk=tenant.pk)
    a = made["a"]
    for seconds, start, requests, errors, error_minutes in ((60, NOW - timedelta(hours=25), 100, 2, 1),
                                                            (3600, NOW - timedelta(hours=11), 500, 7, 3)):
        MetricRollup.dangerously_all_tenants.create(
            tenant_id=a.id, seconds=seconds, start=start, requests=requests, errors=errors, error_minutes=error_minutes,
            latency_buckets=[requests] + [0] * (metrics.BUCKETS - 1))
    _backup(a, age=timedelta(hours=2), restore={"verified": True, "at": (NOW - timedelta(hours=4)).isoformat()})
    _backup(made["b"], age=timedelta(hours=30), restore={"verified": False, "at": (NOW - timedelta(days=1)).isoformat()})
    _backup(made["c"], status="failed", restore={"verified": True})  # counted at the backup's own time
    _backup(made["d"], restore="not a report")  # skipped, not guessed at
    _backup(made["d"], age=timedelta(hours=5), restore={"verified": "yes"})
    return made


def test_weekly_figures_from_known_data(fleet):
    report = kpis.report(4, now=NOW)
    assert report["since"] == MONDAY - timedelta(weeks=3)
    weeks = {row["week"]: row for row in report["weeks"]}
    this, last, before = weeks[MONDAY], weeks[MONDAY - timedelta(weeks=1)], weeks[MONDAY - timedelta(weeks=2)]
    assert (this["new_tenants"], this["provision_p50_ms"], this["provision_p95_ms"]) == (2, 100, 300)
    assert (last["new_tenants"], last["provision_p50_ms"]) == (1, 200)
    assert (before["new_tenants"], before["provision_p95_ms"]) == (1, 400)
    assert (this["requests"], this["errors"], this["error_rate"]) == (600, 9, 0.015)
    assert last["requests"] == 0 and last["error_rate"] is None
    assert (report["provision_p50_ms"], report["provision_p95_ms"]) == (200, 400)
    assert (this["restores"], this["restores_ok"]) == (3, 2)
    assert (report["restores"], report["restore_success"]) == (3, 0.6667)


def test_uptime_and_error_rate_per_tenant(fleet):
    rows = {row["slug"]: row for row in kpis.report(4, now=NOW)["tenants"]}
    a = rows["kpi-a"]
    assert (a["requests"], a["errors"], a["error_rate"], a["error_minutes"]) == (600, 9, 0.015, 4)
    assert a["uptime"] == round(1 - 4 / (26 * 60), 5)  # 4 bad minutes in the 26 hours it has existed
    assert rows["kpi-b"]["uptime"] == 1.0 and rows["kpi-b"]["error_rate"] is None
    assert list(rows)[0] == "kpi-a"  # busiest first


def test_dr_coverage_needs_a_fresh_backup_and_a_healthy_replica_where_there_is_one(fleet, settings, monkeypatch):
    dr = kpis.report(4, now=NOW)["dr"]
    assert (dr["tenants"], dr["backed_up"], dr["covered"], dr["share"]) == (4, 2, 2, 0.5)
    assert dr["covered_ids"] == {fleet["a"].id, fleet["d"].id} and dr["regions"] == {"local": None}

    region = settings.LEVQOR_REGIONS["local"]
    settings.LEVQOR_REGIONS = {"local": dataclasses.replace(region, replica_url="postgres://postgres@127.0.0.1:1/x")}
    dr = kpis.report(4, now=NOW)["dr"]
    assert dr["covered"] == 0 and dr["regions"]["local"].detail.startswith("does not answer")

    db = settings.DATABASES["default"]
    primary = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    settings.LEVQOR_REGIONS = {"local": dataclasses.replace(region, replica_url=primary)}
    dr = kpis.report(4, now=NOW)["dr"]
    assert dr["covered"] == 0 and "not a standby" in dr["regions"]["local"].detail

    monkeypatch.setattr(kpis, "replica_health", lambda name: kpis.ReplicaHealth(True, "answers as a standby"))
    assert kpis.report(4, now=NOW)["dr"]["covered"] == 2


def _staff():
    user = get_user_model().objects.create_superuser(username="kpi-staff", email="staff@levqor.test",
                                                     password="pw-12345678")
    client = Client()
    client.force_login(user)
    return client


def test_the_page_and_its_csv_exports(fleet):
    staff = _staff()
    page = staff.get("/staff/kpis?weeks=52")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Fleet KPIs" in html and html.count("<svg") == 6 and "kpi-a" in html and 'id="dr-share"' in html

    weeks = list(csv.reader(io.StringIO(staff.get("/staff/kpis?weeks=52&format=csv").content.decode())))
    assert weeks[0] == kpis.WEEK_COLUMNS and len(weeks) == 53
    assert sum(int(row[1]) for row in weeks[1:]) == 4  # every new tenant, in some week

    response = staff.get("/staff/kpis?weeks=52&format=csv&table=tenants")
    assert response["Content-Type"] == "text/csv" and "attachment" in response["Content-Disposition"]
    tenants = {row["slug"]: row for row in csv.DictReader(io.StringIO(response.content.decode()))}
    assert set(tenants) == {"kpi-a", "kpi-b", "kpi-c", "kpi-d"}
    assert (tenants["kpi-a"]["requests"], tenants["kpi-a"]["errors"], tenants["kpi-a"]["error_rate"]) == ("600", "9", "0.015")


@pytest.mark.parametrize("query", ["weeks=0", "weeks=53", "weeks=x", "format=pdf", "format=csv&table=secrets"])
def test_bad_parameters_are_400(db, query):
    response = _staff().get(f"/staff/kpis?{query}")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_input"


def test_only_staff_may_see_it(db):
    assert Client().get("/staff/kpis").url.startswith("/admin/login/")
    user = get_user_model().objects.create_user(username="member", email="m@x.test", password="a-long-pass-123")
    member = Client()
    member.force_login(user)
    assert member.get("/staff/kpis").url.startswith("/admin/login/")


# --- money: ARPU and gross margin from Stripe invoices mirrored by dj-stripe --------------------

from tests.billing.conftest import billing_on, deliver_new_events, stripe_server  # noqa: E402,F401 - fixtures


def test_arpu_and_gross_margin_from_invoices_synced_from_stripe(billing_on, make_tenant, settings):
    from djstripe.models import Invoice

    from tenants.models import TenantBilling

    settings.LEVQOR_COST_SCHEMA_TENANT_MONTH = kpis.MONTH_DAYS  # 1.00 a day
    settings.LEVQOR_COST_STORAGE_GB_MONTH = kpis.MONTH_DAYS  # 1.00 a GB-day
    settings.LEVQOR_COST_MILLION_REQUESTS = 2.0
    now = timezone.now()
    seen = {e["id"] for e in billing_on.objects("event")}
    made = {}
    for name in ("rich", "poor", "free"):
        tenant, _ = make_tenant(slug=f"money-{name}")
        Tenant.objects.filter(pk=tenant.pk).update(created_at=now - timedelta(days=10))
        made[name] = tenant
    subscription = {n: TenantBilling.dangerously_all_tenants.get(tenant=t).stripe_subscription_id for n, t in made.items()}
    billing_on.create_invoice(subscription["rich"], paid=True, amount_due=19900)
    billing_on.create_invoice(subscription["poor"], paid=True, amount_due=4900)
    billing_on.create_invoice(subscription["poor"], paid=False, amount_due=4900)  # unpaid: not revenue
    deliver_new_events(billing_on, seen)
    assert Invoice.objects.count() == 3  # the webhooks' dj-stripe mirror is what the KPIs read

    MetricRollup.dangerously_all_tenants.create(tenant_id=made["rich"].id, seconds=3600, start=now - timedelta(hours=2),
                                                requests=3_000_000, latency_buckets=[0] * metrics.BUCKETS)
    backup = Backup.dangerously_all_tenants.create(tenant_id=made["poor"].id, region="local", isolation="schema",
                                                   status="ok", size_bytes=2_000_000_000)
    assert backup.pk

    # As of after the invoices: LocalStripe stamps them in whole seconds, which may be
    # later than `now` above, and an invoice paid after the report's moment is not in it.
    report = kpis.report(4, now=timezone.now() + timedelta(seconds=1))
    money = report["money"]
    rows = {row["slug"]: row for row in report["tenants"]}
    days = (now + timedelta(minutes=1) - (now - timedelta(days=10))).total_seconds() / 86400
    assert rows["money-rich"]["revenue"] == 199.0 and rows["money-poor"]["revenue"] == 49.0
    assert rows["money-free"]["revenue"] == 0 and rows["money-free"]["gross_margin"] is None
    assert rows["money-rich"]["cost"] == pytest.approx(days + 6.0, abs=0.01)  # database + 3 M requests
    assert rows["money-poor"]["cost"] == pytest.approx(days + 2 * days, abs=0.01)  # database + 2 GB stored
    assert rows["money-free"]["cost"] == pytest.approx(days, abs=0.01)
    assert (money["revenue"], money["tenants_counted"], money["arpu"]) == (248.0, 3, round(248 / 3, 2))
    total_cost = rows["money-rich"]["cost"] + rows["money-poor"]["cost"] + rows["money-free"]["cost"]
    assert money["gross_margin"] == pytest.approx((248 - total_cost) / 248, abs=0.0002)
    assert money["currency"] == "USD"
    this_week = report["weeks"][-1]
    assert this_week["revenue"] == 248.0 and this_week["arpu"] == money["arpu"]
    assert all(week["revenue"] == 0 for week in report["weeks"][:-1])

    staff = _staff()
    page = staff.get("/staff/kpis?weeks=4").content.decode()
    assert 'id="arpu"' in page and "82.67 USD" in page
    tenants_csv = {row["slug"]: row for row in csv.DictReader(io.StringIO(
        staff.get("/staff/kpis?weeks=4&format=csv&table=tenants").content.decode()))}
    assert tenants_csv["money-rich"]["revenue"] == "199.0"

    from runtime import pulse

    week = pulse.build(now + timedelta(days=1))
    assert (week["money"]["revenue"], week["money"]["arpu"]) == (248.0, round(248 / 3, 2))
    subject, text, html = pulse.render(week)
    assert "revenue 248.00 USD" in text and 'id="arpu"' in html
