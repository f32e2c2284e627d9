"""The marketplace's tables, all in the public schema.

Partners sell listings (modules, packs, templates); a tenant's purchase is a row of
`tenant_orders` (tenant-scoped: `objects` sees the current tenant's orders only). A paid
order is what enables a module for its tenant: the features and packs it enables are
copied onto the order when it is placed, so a later change to the listing never changes
what an earlier buyer has. Partners are paid by `Payout` rows, one per partner, period
and currency, each settling the sales and refunds it counted (`sale_payout`,
`refund_payout` on the order), so no sale is ever paid out twice.
"""
from __future__ import annotations

import uuid

from django.core.validators import MaxValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from tenants.scoping import TenantScopedModel


class Partner(models.Model):
    """A seller. Paid through Stripe Connect: separate charges (the tenant pays the
    platform) and transfers (the platform pays the partner's connected account)."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=60, unique=True)
    email = models.EmailField(blank=True)
    stripe_account_id = models.CharField(
        max_length=64, blank=True, validators=[RegexValidator(r"^acct_[A-Za-z0-9]+$", "a Stripe account id: acct_…")],
        help_text="The partner's Stripe Connect account (acct_…); payouts wait until it is set.")
    # The platform's share of each period's net sales, in basis points (1000 = 10 %).
    fee_bps = models.PositiveIntegerField(default=2000, validators=[MaxValueValidator(10000)])
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "marketplace_partners"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Listing(models.Model):
    class Kind(models.TextChoices):
        MODULE = "module"
        PACK = "pack"
        TEMPLATE = "template"

    class Billing(models.TextChoices):
        ONE_OFF = "one_off"
        RECURRING = "recurring"  # monthly, a Stripe subscription of its own

    partner = models.ForeignKey(Partner, on_delete=models.PROTECT, related_name="listings")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.MODULE)
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=60, unique=True)
    description = models.TextField(blank=True)
    price_cents = models.PositiveIntegerField()
    currency = models.CharField(max_length=3, default="usd", validators=[RegexValidator(r"^[a-z]{3}$")])
    billing = models.CharField(max_length=16, choices=Billing.choices, default=Billing.ONE_OFF)
    # Feature flags a paid order turns on for its tenant (policy actions may require them).
    features = models.JSONField(default=list, blank=True)
    # Packs (marketplace/packs.py) a paid order installs into the tenant's own tables.
    packs = models.JSONField(default=list, blank=True)
    active = models.BooleanField(default=True)
    # The Stripe price last used for it (found again by lookup key; see marketplace/stripe_catalog.py).
    stripe_price_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "marketplace_listings"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self):
        from django.core.exceptions import ValidationError

        from marketplace import packs

        if not isinstance(self.features, list) or not all(isinstance(f, str) and f for f in self.features):
            raise ValidationError({"features": "a list of feature names"})
        if not isinstance(self.packs, list) or not all(isinstance(p, str) for p in self.packs):
            raise ValidationError({"packs": "a list of pack names"})
        unknown = [p for p in self.packs if p not in packs.PACKS]
        if unknown:
            raise ValidationError({"packs": f"unknown packs {unknown}; known: {sorted(packs.PACKS)}"})
        if self.price_cents < 50:
            raise ValidationError({"price_cents": "Stripe's smallest charge is 50 cents"})


class Payout(models.Model):
    """One transfer to one partner for one period (YYYY-MM) and currency.

    gross = sales − refunds counted; fee = floor(gross × fee_bps / 10000) (the platform's
    fee rounds down: a fraction of a cent stays with the partner); net = gross − fee,
    which is the transfer. The row is written, with the orders it settles, before Stripe
    is called; the transfer's idempotency key and transfer_group are derived from the
    row, so a re-run (or a crash between Stripe and us) never pays twice.
    """

    class Status(models.TextChoices):
        PENDING = "pending"  # written; the transfer is not confirmed yet
        SENT = "sent"
        FAILED = "failed"  # Stripe refused, or the partner has no Connect account; retried by the next run
        NOTHING_DUE = "nothing_due"  # gross ≤ 0: nothing is settled, the figures roll into the next period

    partner = models.ForeignKey(Partner, on_delete=models.PROTECT, related_name="payouts")
    period = models.CharField(max_length=7, validators=[RegexValidator(r"^\d{4}-(0[1-9]|1[0-2])$")])
    currency = models.CharField(max_length=3)
    sales_cents = models.BigIntegerField(default=0)
    refunds_cents = models.BigIntegerField(default=0)
    gross_cents = models.BigIntegerField(default=0)
    fee_bps = models.PositiveIntegerField()
    fee_cents = models.BigIntegerField(default=0)
    net_cents = models.BigIntegerField(default=0)
    orders_count = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    stripe_transfer_id = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    reconciled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "marketplace_payouts"
        ordering = ["-period", "partner_id"]
        constraints = [models.UniqueConstraint(fields=["partner", "period", "currency"], name="payout_once_per_period")]

    def __str__(self) -> str:
        return f"{self.partner} {self.period} {self.net_cents} {self.currency}"

    @property
    def transfer_group(self) -> str:
        return f"levqor_payout_{self.pk}"

    @property
    def idempotency_key(self) -> str:
        return f"levqor-payout-{self.pk}-{self.partner_id}-{self.period}-{self.currency}"


class TenantOrder(TenantScopedModel):
    """A tenant's purchase of a listing. Pending until Stripe says it is paid."""

    class Status(models.TextChoices):
        PENDING = "pending"
        PAID = "paid"
        FAILED = "failed"
        REFUNDED = "refunded"
        CANCELED = "canceled"

    OPEN = (Status.PENDING, Status.PAID)

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="orders")
    listing = models.ForeignKey(Listing, on_delete=models.PROTECT, related_name="orders")
    partner = models.ForeignKey(Partner, on_delete=models.PROTECT, related_name="orders")
    # Stripe's idempotency keys and client_reference_id: never reused, not guessable.
    reference = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    price_cents = models.PositiveIntegerField()
    currency = models.CharField(max_length=3)
    billing = models.CharField(max_length=16, choices=Listing.Billing.choices)
    features = models.JSONField(default=list, blank=True)
    packs = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    status_reason = models.CharField(max_length=200, blank=True)
    idempotency_key = models.CharField(max_length=200, blank=True)
    created_by = models.CharField(max_length=200, blank=True)
    ts = models.DateTimeField(auto_now_add=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)  # failed, refunded or canceled
    stripe_checkout_session_id = models.CharField(max_length=100, blank=True, db_index=True)
    checkout_url = models.URLField(max_length=1000, blank=True)
    stripe_payment_intent_id = models.CharField(max_length=64, blank=True, db_index=True)
    stripe_invoice_id = models.CharField(max_length=64, blank=True)
    stripe_subscription_id = models.CharField(max_length=64, blank=True, db_index=True)
    stripe_refund_id = models.CharField(max_length=64, blank=True)
    refunded_cents = models.PositiveIntegerField(default=0)
    sale_payout = models.ForeignKey(Payout, null=True, blank=True, on_delete=models.PROTECT, related_name="sales")
    refund_payout = models.ForeignKey(Payout, null=True, blank=True, on_delete=models.PROTECT, related_name="refunds")

    class Meta(TenantScopedModel.Meta):
        db_table = "tenant_orders"
        ordering = ["-ts"]
        constraints = [
            # A double-clicked Buy makes one order: one open (pending or paid) order per
            # tenant and listing.
            models.UniqueConstraint(fields=["tenant", "listing"], condition=Q(status__in=["pending", "paid"]),
                                    name="one_open_order_per_listing"),
            models.UniqueConstraint(fields=["tenant", "idempotency_key"], condition=~Q(idempotency_key=""),
                                    name="order_idempotency_key_once"),
        ]
        indexes = [models.Index(fields=["partner", "paid_at"]), models.Index(fields=["tenant", "status"])]

    def __str__(self) -> str:
        return f"order {self.pk} {self.listing_id} ({self.status})"


class OrderRenewal(models.Model):
    """A later period of a recurring order, paid (its subscription's invoice after the first,
    which the order's own price stands for). Partners are paid for each, like a sale."""

    order = models.ForeignKey(TenantOrder, on_delete=models.PROTECT, related_name="renewals")
    partner = models.ForeignKey(Partner, on_delete=models.PROTECT, related_name="renewals")
    stripe_invoice_id = models.CharField(max_length=64, unique=True)  # a redelivered invoice.paid counts once
    amount_cents = models.PositiveIntegerField()
    currency = models.CharField(max_length=3)
    paid_at = models.DateTimeField()
    sale_payout = models.ForeignKey(Payout, null=True, blank=True, on_delete=models.PROTECT, related_name="renewals")

    class Meta:
        db_table = "marketplace_order_renewals"
        ordering = ["-paid_at"]
        indexes = [models.Index(fields=["partner", "paid_at"])]

    def __str__(self) -> str:
        return f"renewal of order {self.order_id}: {self.amount_cents} {self.currency}"
