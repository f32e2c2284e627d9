from django.core.management.base import BaseCommand

from billing import stripe_api
from marketplace.models import Listing, Partner

PARTNERS = [("acme-integrations", "Acme Integrations", 2000), ("ledgerly", "Ledgerly", 1500)]
LISTINGS = [
    ("acme-integrations", "crm-sync", "CRM Sync", "module", 4900, "one_off", ["crm"], ["crm-sync"],
     "Two-way contact and deal sync with your CRM, with ready-made workflows."),
    ("acme-integrations", "slack-alerts", "Slack Alerts", "pack", 900, "recurring", ["slack_alerts"], ["slack-alerts"],
     "Post failed runs to a Slack channel."),
    ("ledgerly", "finance-close", "Finance Close", "template", 2500, "one_off", [], ["finance-close"],
     "A month-end close checklist as a workflow."),
]


class Command(BaseCommand):
    help = ("Seed demo marketplace partners and listings (idempotent). With Stripe configured, each partner without "
            "one gets a Stripe Connect (express) account.")

    def handle(self, *args, **options):
        partners = {}
        for slug, name, fee_bps in PARTNERS:
            partner, _ = Partner.objects.get_or_create(slug=slug, defaults={"name": name, "fee_bps": fee_bps,
                                                                            "email": f"payouts@{slug}.example"})
            if stripe_api.enabled() and not partner.stripe_account_id:
                account = stripe_api.call(stripe_api.client().v1.accounts.create, params={
                    "type": "express", "email": partner.email, "metadata": {"levqor_partner": slug}},
                    options={"idempotency_key": f"levqor-partner-{slug}-account"})
                partner.stripe_account_id = account["id"]
                partner.save(update_fields=["stripe_account_id"])
            partners[slug] = partner
        for partner_slug, slug, name, kind, cents, billing, features, packs, description in LISTINGS:
            Listing.objects.update_or_create(slug=slug, defaults={
                "partner": partners[partner_slug], "name": name, "kind": kind, "price_cents": cents,
                "billing": billing, "features": features, "packs": packs, "description": description, "active": True})
        self.stdout.write(f"{len(PARTNERS)} partners, {len(LISTINGS)} listings: see /marketplace and /admin/marketplace/")
