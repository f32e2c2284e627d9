import json

from django.core.management.base import BaseCommand, CommandError

from runtime import dr


class Command(BaseCommand):
    help = ("Fail a region's tenant database server over to its replica: promote it, repoint the region, "
            "audit, alert and email the affected tenants (docs/deploy.md, 'DR failover').")

    def add_arguments(self, parser):
        parser.add_argument("--region", required=True)
        parser.add_argument("--dry-run", action="store_true", help="check and show what would happen; change nothing")
        parser.add_argument("--force", action="store_true",
                            help="fail over although the primary still answers (fence it yourself first)")
        parser.add_argument("--reason", default="", help="why, for the Failover record")

    def handle(self, *args, **o):
        try:
            if o["dry_run"]:
                plan = dr.dry_run(o["region"], force=o["force"])
                self.stdout.write("Dry run, nothing changed. A failover would now:")
                self.stdout.write(json.dumps(plan, indent=2, default=str))
                return
            record = dr.failover(o["region"], trigger="manual", actor="staff:cli", reason=o["reason"],
                                 force=o["force"])
        except dr.FailoverRefused as exc:
            raise CommandError(f"refused: {exc}") from None
        except dr.FailoverFailed as exc:
            raise CommandError(str(exc)) from None
        detail = record.detail_json
        self.stdout.write(f"Region {record.region} failed over from {detail['from']} to {detail['to']} "
                          f"(failover {record.id}): {len(detail['tenants'])} tenant(s), {dr.measures(record)}, "
                          f"DNS {detail['dns']}, {detail['emails_sent']} email(s) sent.")
