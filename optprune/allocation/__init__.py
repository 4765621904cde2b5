"""Per-layer sparsities: OWL's outlier-weighted rule and the exact MILP choice over priced menus.

owl (the rule), menus (options and their prices), pricing (the pass over the dense model), cache (that
pass kept on disk), choice (the MILP and the remainder), plot (the figure), allocate (all of it)."""
from .allocate import allocate
from .cache import cached_survey, pricing_key
from .choice import MIP_REL_GAP, achieved_sparsity, check_group_bounds, milp_allocation, milp_choice, place_remainder
from .menus import COST_METHODS, cost_method, layer_costs, pruned_count, sparsity_menu, unit_menu, unit_parameters
from .owl import outlier_ratio, owl_allocation, owl_sparsities
from .plot import allocation_by_kind, plot_allocation
from .pricing import loss_increases, output_fisher, survey, with_counters
