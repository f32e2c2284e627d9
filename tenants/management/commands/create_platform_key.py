from django.core.management.base import BaseCommand, CommandError

from levqor.errors import APIError
from tenants import services


class Command(BaseCommand):
    help = "Create a platform staff API key; the key is printed once, on the last line."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)

    def handle(self, *args, **options):
        try:
            key, plaintext = services.platform_key_create(name=options["name"])
        except APIError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        self.stdout.write(f"Platform key {key.name} ({key.prefix}) created. It is shown once:")
        self.stdout.write(plaintext)
