from datetime import datetime, time, timezone as dt_timezone

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = ("Build the weekly pulse (last 7 days, per tenant and for the fleet) and print it; "
            "--send emails it to LEVQOR_PULSE_EMAILS.")

    def add_arguments(self, parser):
        parser.add_argument("--send", action="store_true", help="email it to LEVQOR_PULSE_EMAILS (or --to)")
        parser.add_argument("--to", action="append", default=[], help="recipient instead of LEVQOR_PULSE_EMAILS")
        parser.add_argument("--week-ending", help="YYYY-MM-DD: the week is the 7 days before that day (UTC)")
        parser.add_argument("--html", action="store_true", help="print the HTML instead of the text version")

    def handle(self, *args, **options):
        from runtime import pulse

        report = pulse.build(self._week_end(options["week_ending"]))
        subject, text, html = pulse.render(report)
        self.stdout.write(html if options["html"] else f"{subject}\n\n{text}")
        if options["send"]:
            recipients = pulse.send(report, options["to"] or None)
            if not recipients:
                raise CommandError("no recipients: set LEVQOR_PULSE_EMAILS (or LEVQOR_ALERT_EMAILS), or pass --to")
            self.stderr.write(f"sent to {', '.join(recipients)}")

    @staticmethod
    def _week_end(raw: str | None):
        if raw is None:
            return None
        try:
            day = datetime.strptime(raw, "%Y-%m-%d").date()
        except ValueError:
            raise CommandError("--week-ending must be a date, YYYY-MM-DD") from None
        return datetime.combine(day, time(0), tzinfo=dt_timezone.utc)
