"""The measuring variants a benchmark can switch on for one run, each a module constant put to a rule in
docs/experiments.md and left at its shipped value: one option per variant, shared by the benchmarks that take it."""
from __future__ import annotations

import retinaseg.measure as measuring
from retinaseg import vessel_graph

# option: (module, constant, what 0 means: None switches the variant off, else 0 is a value)
VARIANTS = {
    "--min-zone-calibres": (measuring, "MIN_ZONE_CALIBRES", False),
    "--spur-widths": (vessel_graph, "SPUR_WIDTHS", True),
    "--side-branch-share": (vessel_graph, "SIDE_BRANCH_SHARE", True),
    "--measuring-fov": (measuring, "MEASURING_FOV", True),
}


def add_variant_options(parser, *options: str) -> None:
    for option in options:
        module, name, zero_is_off = VARIANTS[option]
        parser.add_argument(option, type=float, default=None,
                            help=f"{module.__name__.rsplit('.', 1)[-1]}.{name} for this run (a variant; default: as "
                                 f"shipped{'; 0: off' if zero_is_off else ''})")


def apply_variants(args) -> None:
    """Sets the constant of each variant option given."""
    for option, (module, name, zero_is_off) in VARIANTS.items():
        value = getattr(args, option[2:].replace("-", "_"), None)
        if value is not None:
            setattr(module, name, (value or None) if zero_is_off else value)
