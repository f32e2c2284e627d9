import json

from django.core.management.base import BaseCommand, CommandError

from policy.engine import ROLES
from policy.plans import is_plan
from policy.simulate import simulate


class Command(BaseCommand):
    help = "Show the decisions and limits a plan or role change would flip."

    def add_arguments(self, parser):
        parser.add_argument("--plan", required=True, help="current plan")
        parser.add_argument("--to-plan")
        parser.add_argument("--role", choices=ROLES, help="current role (default: every role)")
        parser.add_argument("--to-role", choices=ROLES)
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **o):
        for name in ("plan", "to_plan"):
            if o[name] and not is_plan(o[name]):
                raise CommandError(f"unknown plan {o[name]!r}")
        result = simulate(plan=o["plan"], to_plan=o["to_plan"], role=o["role"], to_role=o["to_role"])
        if o["json"]:
            self.stdout.write(json.dumps(result, indent=2))
            return
        self.stdout.write(f"{result['plan']} -> {result['to_plan']}: {len(result['flips'])} decisions change")
        for flip in result["flips"]:
            self.stdout.write(f"  {flip['role']:>8} -> {flip['to_role']:<8} {flip['action']:<22} "
                              f"{flip['before']} -> {flip['after']}  ({flip['rationale']})")
        for metric, change in result["limits"].items():
            self.stdout.write(f"  limit {metric}: {change['before']} -> {change['after']}")
