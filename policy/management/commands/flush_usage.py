from django.core.management.base import BaseCommand

from policy import quotas


class Command(BaseCommand):
    help = "Move pending usage counts from Redis into PostgreSQL (the minutely task does the same)."

    def handle(self, *args, **options):
        self.stdout.write(f"Flushed {quotas.flush()} counts.")
