"""Partner payouts: separate charges and transfers through Stripe Connect.

Tenants pay the platform (the checkout's charge); once a month each partner gets one
transfer per currency to its connected account: its sales minus refunds, minus the
platform fee.

For partner P and period YYYY-MM, a payout counts every sale (an order paid) and every
refund (an order refunded) of P up to the end of that month that no payout has counted
yet, so nothing is lost if a month is skipped or run late, and nothing is counted twice:

    gross = Σ sales − Σ refunds              (integer cents)
    fee   = floor(gross × fee_bps / 10 000)  (rounds down: the fraction of a cent stays with the partner)
    net   = gross − fee                      (the transfer)

so per payout, and so summed over any set of payouts, net + fee = sales − refunds exactly.
A gross ≤ 0 (refunds above sales) transfers nothing and settles nothing: those figures
roll into the next period.

Idempotent: the Payout row and the orders it settles are written in one transaction
(under a lock on the partner) before Stripe is called; the transfer's idempotency key
and transfer_group are derived from the row. A re-run skips sent payouts and retries
pending or failed ones, first looking for a transfer of that group at Stripe (Stripe
forgets idempotency keys after 24 hours; the transfer group it does not). `reconcile()`
compares every payout with Stripe's list of transfers and raises a staff alert on drift.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone as dt_timezone

import stripe
from django.db import transaction
from django.db.models import Q, Sum
from django.utils import timezone

from billing import stripe_api
from levqor.errors import APIError
from marketplace.models import OrderRenewal, Partner, Payout, TenantOrder

logger = logging.getLogger(__name__)


def fee_for(gross_cents: int, fee_bps: int) -> int:
    """The platform fee on a period's gross: floor, in integer arithmetic (no floats)."""
    return gross_cents * fee_bps // 10000 if gross_cents > 0 else 0


def parse_period(value: str) -> tuple[datetime, datetime]:
    """'YYYY-MM' -> [start, end) in UTC; a period that has not started is refused."""
    try:
        year, month = (int(part) for part in value.split("-"))
        if len(value) != 7 or not 1 <= month <= 12:
            raise ValueError
    except ValueError:
        raise APIError("invalid_input", f"period must be YYYY-MM, not {value!r}", details={"field": "period"}) from None
    start = datetime(year, month, 1, tzinfo=dt_timezone.utc)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=dt_timezone.utc)
    if start > timezone.now():
        raise APIError("invalid_input", f"period {value} has not started", details={"field": "period"})
    return start, end


def previous_period() -> str:
    now = timezone.now()
    year, month = (now.year, now.month - 1) if now.month > 1 else (now.year - 1, 12)
    return f"{year:04d}-{month:02d}"


@dataclass
class RunReport:
    period: str
    sent: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    nothing_due: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"period": self.period, "sent": self.sent, "skipped": self.skipped, "failed": self.failed,
                "nothing_due": self.nothing_due}


def partners_to_pay() -> list[Partner]:
    return list(Partner.objects.order_by("pk"))


def run_period(period: str, *, partners: list[Partner] | None = None, progress=None) -> RunReport:
    """Pay every partner (or those given) for `period`. `progress` is called once per partner."""
    if not stripe_api.enabled():
        raise APIError("payments_not_configured", "Payments are not configured (no STRIPE_SECRET_KEY).",
                       status_code=503)
    _, end = parse_period(period)
    report = RunReport(period=period)
    for partner in partners if partners is not None else partners_to_pay():
        for payout in _settle(partner, period, end):
            _send(payout, report)
        if progress:
            progress()
    return report


def _settle(partner: Partner, period: str, end: datetime) -> list[Payout]:
    """Write this period's payout rows for one partner (one per currency) and mark the
    orders they settle, or return the rows an earlier run wrote."""
    with transaction.atomic():
        partner = Partner.objects.select_for_update().get(pk=partner.pk)  # one run per partner at a time
        orders = TenantOrder.dangerously_all_tenants.filter(partner=partner)
        sales = orders.filter(paid_at__lt=end, sale_payout__isnull=True)
        renewals = OrderRenewal.objects.filter(partner=partner, paid_at__lt=end, sale_payout__isnull=True)
        refunds = orders.filter(status=TenantOrder.Status.REFUNDED, closed_at__lt=end, refund_payout__isnull=True)
        currencies = (set(sales.values_list("currency", flat=True)) | set(renewals.values_list("currency", flat=True))
                      | set(refunds.values_list("currency", flat=True)))
        existing = {p.currency: p for p in Payout.objects.filter(partner=partner, period=period)}
        payouts = [p for p in existing.values() if p.status in (Payout.Status.PENDING, Payout.Status.FAILED,
                                                                 Payout.Status.SENT)]
        for currency in sorted(currencies - {c for c, p in existing.items() if p.status != Payout.Status.NOTHING_DUE}):
            payouts.append(_settle_currency(partner, period, currency, sales.filter(currency=currency),
                                            renewals.filter(currency=currency), refunds.filter(currency=currency),
                                            existing.get(currency)))
    return payouts


def _settle_currency(partner, period, currency, sales, renewals, refunds, earlier: Payout | None) -> Payout:
    # The rows as of now, once: an order paid while this runs must not be marked settled by
    # the update below without being in the sum (it waits for the next payout instead).
    sales, renewals, refunds = (qs.filter(pk__in=list(qs.values_list("pk", flat=True)))
                                for qs in (sales, renewals, refunds))
    sales_cents = (sales.aggregate(s=Sum("price_cents"))["s"] or 0) + (renewals.aggregate(s=Sum("amount_cents"))["s"] or 0)
    refunds_cents = refunds.aggregate(s=Sum("refunded_cents"))["s"] or 0
    gross = sales_cents - refunds_cents
    fee = fee_for(gross, partner.fee_bps)
    payout = earlier or Payout(partner=partner, period=period, currency=currency)
    payout.sales_cents, payout.refunds_cents, payout.gross_cents = sales_cents, refunds_cents, gross
    payout.fee_bps, payout.fee_cents, payout.net_cents = partner.fee_bps, fee, max(gross - fee, 0)
    payout.orders_count = sales.count() + renewals.count() + refunds.count()
    payout.status = Payout.Status.PENDING if gross > 0 else Payout.Status.NOTHING_DUE
    payout.save()
    if gross > 0:
        sales.update(sale_payout=payout)
        renewals.update(sale_payout=payout)
        refunds.update(refund_payout=payout)
    return payout


def _send(payout: Payout, report: RunReport) -> None:
    summary = {"partner": payout.partner.slug, "currency": payout.currency, "net_cents": payout.net_cents,
               "fee_cents": payout.fee_cents, "gross_cents": payout.gross_cents}
    if payout.status == Payout.Status.NOTHING_DUE:
        report.nothing_due.append(summary)
        return
    if payout.status == Payout.Status.SENT:
        report.skipped.append({**summary, "transfer": payout.stripe_transfer_id})
        return
    partner = payout.partner
    if not partner.stripe_account_id:
        _mark_failed(payout, "the partner has no Stripe Connect account")
        report.failed.append({**summary, "error": payout.error})
        return
    c = stripe_api.client()
    try:
        transfer = _find_transfer(c, payout) or stripe_api.call(c.v1.transfers.create, params={
            "amount": payout.net_cents, "currency": payout.currency, "destination": partner.stripe_account_id,
            "transfer_group": payout.transfer_group, "description": f"Levqor marketplace payout {payout.period}",
            "metadata": {"levqor_payout": str(payout.pk), "levqor_partner": partner.slug, "period": payout.period}},
            options={"idempotency_key": payout.idempotency_key})
    except (stripe.StripeError, APIError) as exc:
        _mark_failed(payout, str(getattr(exc, "user_message", None) or getattr(exc, "message", None) or exc))
        report.failed.append({**summary, "error": payout.error})
        return
    Payout.objects.filter(pk=payout.pk).update(status=Payout.Status.SENT, stripe_transfer_id=transfer["id"],
                                               sent_at=timezone.now(), error="")
    report.sent.append({**summary, "transfer": transfer["id"]})


def _find_transfer(c, payout: Payout) -> dict | None:
    found = stripe_api.call(c.v1.transfers.list, params={"transfer_group": payout.transfer_group, "limit": 10})
    for transfer in found.data:
        if (transfer.get("metadata") or {}).get("levqor_payout") == str(payout.pk):
            return stripe_api.plain(transfer)
    return None


def _mark_failed(payout: Payout, error: str) -> None:
    logger.warning("payout %s to %s failed: %s", payout.pk, payout.partner.slug, error)
    Payout.objects.filter(pk=payout.pk).update(status=Payout.Status.FAILED, error=error[:2000])


# --- reconciliation --------------------------------------------------------------------------


def reconcile() -> dict:
    """Every sent payout against Stripe's transfers, per partner account: a transfer we do
    not know, one missing, or one of another amount raises `marketplace.payout_drift` for
    staff. A pending payout whose transfer Stripe has is adopted (marked sent)."""
    from compliance.alerts import alert_raise
    from compliance.models import Alert

    c = stripe_api.client()
    report = {"matched": 0, "adopted": 0, "drift": []}
    for partner in Partner.objects.exclude(stripe_account_id="").order_by("pk"):
        at_stripe = {}
        for transfer in stripe_api.call(c.v1.transfers.list, params={
                "destination": partner.stripe_account_id, "limit": 100}).auto_paging_iter():
            payout_id = (transfer.get("metadata") or {}).get("levqor_payout")
            if payout_id:
                at_stripe[payout_id] = stripe_api.plain(transfer)
        ours = {str(p.pk): p for p in Payout.objects.filter(partner=partner).exclude(status=Payout.Status.NOTHING_DUE)}
        for payout_id, payout in ours.items():
            transfer = at_stripe.pop(payout_id, None)
            if transfer is None:
                if payout.status == Payout.Status.SENT:
                    report["drift"].append({"partner": partner.slug, "payout": payout.pk,
                                            "problem": "sent here, no transfer at Stripe"})
                continue
            if transfer["amount"] != payout.net_cents or transfer["currency"] != payout.currency:
                report["drift"].append({"partner": partner.slug, "payout": payout.pk, "problem":
                                        f"Stripe transferred {transfer['amount']} {transfer['currency']}, "
                                        f"we owe {payout.net_cents} {payout.currency}"})
                continue
            updates = {"reconciled_at": timezone.now()}
            if payout.status != Payout.Status.SENT:
                updates.update(status=Payout.Status.SENT, stripe_transfer_id=transfer["id"], sent_at=timezone.now(),
                               error="")
                report["adopted"] += 1
            Payout.objects.filter(pk=payout.pk).update(**updates)
            report["matched"] += 1
        for payout_id, transfer in at_stripe.items():
            report["drift"].append({"partner": partner.slug, "payout": payout_id,
                                    "problem": f"transfer {transfer['id']} at Stripe matches no payout here"})
    for drift in report["drift"]:
        alert_raise(kind="marketplace.payout_drift", severity="critical", audience=Alert.Audience.STAFF,
                    message=f"Partner payout drift for {drift['partner']}: {drift['problem']} (payout {drift['payout']}).",
                    metadata=drift, dedupe_key=f"payout:{drift['payout']}")
    return report


def expected_net(partner: Partner) -> dict:
    """What the partner should have received in total, straight from the orders settled
    by sent payouts (for tests and the dashboard): {currency: {sales, refunds, fee, net}}."""
    totals: dict[str, dict[str, int]] = {}
    for payout in Payout.objects.filter(partner=partner, status=Payout.Status.SENT):
        t = totals.setdefault(payout.currency, {"sales": 0, "refunds": 0, "fee": 0, "net": 0})
        t["sales"] += payout.sales_cents
        t["refunds"] += payout.refunds_cents
        t["fee"] += payout.fee_cents
        t["net"] += payout.net_cents
    return totals


def unsettled(partner: Partner):
    return TenantOrder.dangerously_all_tenants.filter(partner=partner).filter(
        Q(paid_at__isnull=False, sale_payout__isnull=True)
        | Q(status=TenantOrder.Status.REFUNDED, refund_payout__isnull=True))

