"""Formatting of metric figures in templates: `{% load runtime_format %}`."""
from django import template

register = template.Library()


@register.filter
def percent(fraction, digits: int = 2) -> str:
    """0.0345 -> "3.45 %"; None (no requests, nothing to divide) -> "–"."""
    if fraction is None or fraction == "":
        return "–"
    return f"{float(fraction) * 100:.{int(digits)}f} %"
